"""A compact, memory-mapped index of a COCO-format detection JSON (Objects365 scale: 600K images, 10M boxes).

The JSON is read once, in batches of records (:mod:`training.data.json_stream`), into columnar numpy arrays (a
well-formed batch is converted with vectorised checks; a malformed one is walked record by record to name the fault)
saved as ``.npy`` next to the JSON (``<file>.index/``) or, when that folder is not writable, under
``$O365ZOO_CACHE/index/``. Later loads memory-map the arrays, so DataLoader workers share the same pages. The index is
rebuilt when the JSON's size, mtime or the sha256 of its first MiB change.

Boxes are stored as xyxy float32 clipped to the image; clipped and degenerate boxes are counted (and logged), the
degenerate ones dropped. Malformed input raises :class:`AnnotationError` naming the file, the record and the field.
"""
from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from zoo.atomic import atomic_dir
from zoo.vocabulary import cache_root

from .json_stream import JsonStreamError, iter_lists

log = logging.getLogger(__name__)

INDEX_VERSION = 1
_HEAD_BYTES = 1 << 20
_ARRAYS = ("image_ids", "widths", "heights", "name_offsets", "name_bytes", "box_offsets", "boxes", "categories",
           "iscrowd")


class AnnotationError(ValueError):
    """The annotation file is malformed; the message names the file, the record and the field."""


@dataclass
class AnnotationIndex:
    """Columnar view of a detection JSON. Image ``i`` owns boxes ``box_offsets[i]:box_offsets[i + 1]``."""

    path: Path  # the JSON
    image_ids: np.ndarray  # int64 [N]
    widths: np.ndarray  # int32 [N]
    heights: np.ndarray  # int32 [N]
    name_offsets: np.ndarray  # int64 [N + 1] into name_bytes
    name_bytes: np.ndarray  # uint8: UTF-8 file names, concatenated
    box_offsets: np.ndarray  # int64 [N + 1]
    boxes: np.ndarray  # float32 [M, 4] xyxy, clipped to the image
    categories: np.ndarray  # int32 [M]: 0-based position in ``category_names``
    iscrowd: np.ndarray  # uint8 [M]: 1 for crowd/ignore regions
    category_ids: list[int]  # the JSON's category ids, ascending
    category_names: list[str]
    stats: dict[str, int]

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def file_name(self, i: int) -> str:
        return bytes(self.name_bytes[self.name_offsets[i]:self.name_offsets[i + 1]]).decode("utf-8")

    def file_names(self) -> list[str]:
        blob = self.name_bytes.tobytes()
        offs = self.name_offsets.tolist()
        return [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes [K, 4] xyxy, category positions [K], iscrowd [K])`` of image ``i``."""
        a, b = self.box_offsets[i], self.box_offsets[i + 1]
        return self.boxes[a:b], self.categories[a:b], self.iscrowd[a:b]

    @classmethod
    def load(cls, json_path: str | Path, cache_dir: str | Path | None = None, *, rebuild: bool = False
             ) -> AnnotationIndex:
        """Memory-map the index of ``json_path``, building it first if missing or stale."""
        from filelock import FileLock

        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"annotation file not found: {json_path}")
        where = index_dir(json_path, cache_dir)
        fingerprint = _fingerprint(json_path)
        with FileLock(str(where) + ".lock"):
            meta = None if rebuild else _read_meta(where)
            if meta is None or meta["fingerprint"] != fingerprint:
                build_index(json_path, where, fingerprint)
                meta = _read_meta(where)
        if meta is None:
            raise RuntimeError(f"the annotation index {where} is incomplete right after building it")
        arrays = {name: np.load(where / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        index = cls(path=json_path, category_ids=meta["category_ids"], category_names=meta["category_names"],
                    stats=meta["stats"], **arrays)
        _log_stats(json_path, index.stats)
        return index


def index_dir(json_path: Path, cache_dir: str | Path | None = None) -> Path:
    """``<json>.index`` beside the JSON if that folder is writable, else a folder under the cache."""
    if cache_dir is None and os.access(json_path.resolve().parent, os.W_OK):
        return json_path.resolve().parent / f"{json_path.name}.index"
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "index"
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(str(json_path.resolve()).encode()).hexdigest()[:16]
    return root / f"{json_path.name}.{key}"


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(_HEAD_BYTES)).hexdigest()
    return {"version": INDEX_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_sha256": head}


def _read_meta(where: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((where / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((where / f"{name}.npy").is_file() for name in _ARRAYS):
        return None
    return meta


def _log_stats(path: Path, stats: dict[str, int]) -> None:
    if stats.get("clipped"):
        log.info("%s: %d boxes extended outside their image and were clipped", path.name, stats["clipped"])
    if stats.get("degenerate"):
        log.warning("%s: dropped %d degenerate boxes (zero or negative width/height after clipping)",
                    path.name, stats["degenerate"])


def build_index(json_path: Path, where: Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Parse ``json_path`` and write the index folder ``where`` atomically (temp folder, then rename)."""
    fingerprint = fingerprint or _fingerprint(json_path)
    with atomic_dir(where) as tmp:
        _write_arrays(json_path, tmp)
        meta = json.loads((tmp / "meta.json").read_text())
        meta["fingerprint"] = fingerprint
        (tmp / "meta.json").write_text(json.dumps(meta))


def _field(path: Path, section: str, i: int, record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict):
        raise AnnotationError(f"{path}: {section}[{i}] is not an object")
    if key not in record:
        raise AnnotationError(f"{path}: {section}[{i}] has no '{key}' field")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise AnnotationError(f"{path}: {section}[{i}].{key} = {value!r} has the wrong type")
    return value


_NUM = (int, float)
_IMAGE_FIELDS = tuple(map(operator.itemgetter, ("id", "file_name", "width", "height")))
_ANNOTATION_FIELDS = tuple(map(operator.itemgetter, ("image_id", "category_id", "bbox")))


def _columns_of(batch: list, getters: tuple) -> list[list] | None:
    """One list per getter (a field of every record), or None if a record is not an object or lacks a field."""
    try:
        return [list(map(get, batch)) for get in getters]
    except (KeyError, TypeError, IndexError):
        return None


def _numbers(values: list) -> np.ndarray | None:
    """``values`` as a finite int64 or float64 array if every one is a plain int or float (no bool), else None."""
    if not set(map(type, values)) <= {int, float}:
        return None
    try:
        out = np.array(values)
    except OverflowError:
        return None
    return out if out.dtype.kind == "i" or (out.dtype.kind == "f" and np.isfinite(out).all()) else None


class _Columns:
    """The index's columns, appended a batch of records at a time.

    Each batch first takes a vectorised path that only checks that every record is well-formed; a batch it refuses
    goes through :meth:`_images_checked` / :meth:`_annotations_checked`, which say what is wrong with which record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cats: list[tuple[int, str]] = []
        self.n_images = self.n_annotations = 0
        self.image_ids: list[np.ndarray] = []
        self.widths: list[np.ndarray] = []
        self.heights: list[np.ndarray] = []
        self.name_lengths: list[np.ndarray] = []
        self.names = bytearray()
        self.ann_image: list[np.ndarray] = []
        self.ann_cat: list[np.ndarray] = []
        self.ann_box: list[np.ndarray] = []
        self.ann_crowd: list[np.ndarray] = []

    def add(self, section: str, batch: list) -> None:
        if section == "categories":
            for c in batch:
                i = len(self.cats)
                self.cats.append((int(_field(self.path, "categories", i, c, "id", _NUM)),
                                  str(_field(self.path, "categories", i, c, "name", str))))
        elif section == "images":
            if not self._images_fast(batch):
                self._images_checked(batch)
            self.n_images += len(batch)
        elif section == "annotations":
            if not self._annotations_fast(batch):
                self._annotations_checked(batch)
            self.n_annotations += len(batch)

    def _images_fast(self, batch: list) -> bool:
        if (fields := _columns_of(batch, _IMAGE_FIELDS)) is None:
            return False
        id_values, names, w_values, h_values = fields
        ids, ws, hs = _numbers(id_values), _numbers(w_values), _numbers(h_values)
        if ids is None or ws is None or hs is None or set(map(type, names)) != {str} or (ws <= 0).any() \
                or (hs <= 0).any():
            return False
        encoded = [n.encode("utf-8") for n in names]
        self.image_ids.append(ids.astype(np.int64))
        self.widths.append(ws.astype(np.int32))
        self.heights.append(hs.astype(np.int32))
        self.name_lengths.append(np.fromiter(map(len, encoded), np.int64, len(encoded)))
        self.names += b"".join(encoded)
        return True

    def _images_checked(self, batch: list) -> None:
        ids, ws, hs, lengths = [], [], [], []
        for j, im in enumerate(batch):
            i = self.n_images + j
            ids.append(int(_field(self.path, "images", i, im, "id", _NUM)))
            name = _field(self.path, "images", i, im, "file_name", str).encode("utf-8")
            w, h = _field(self.path, "images", i, im, "width", _NUM), _field(self.path, "images", i, im, "height", _NUM)
            if w <= 0 or h <= 0:
                raise AnnotationError(f"{self.path}: images[{i}] (id {ids[-1]}) has size {w}x{h}")
            ws.append(int(w))
            hs.append(int(h))
            lengths.append(len(name))
            self.names += name
        self.image_ids.append(np.array(ids, dtype=np.int64))
        self.widths.append(np.array(ws, dtype=np.int32))
        self.heights.append(np.array(hs, dtype=np.int32))
        self.name_lengths.append(np.array(lengths, dtype=np.int64))

    def _annotations_fast(self, batch: list) -> bool:
        if (fields := _columns_of(batch, _ANNOTATION_FIELDS)) is None:
            return False
        img_values, cat_values, box = fields
        img, cat = _numbers(img_values), _numbers(cat_values)
        if img is None or cat is None or set(map(type, box)) != {list} or set(map(len, box)) != {4}:
            return False
        flat = list(chain.from_iterable(box))
        if not set(map(type, flat)) <= {int, float}:
            return False
        self.ann_image.append(img.astype(np.int64))
        self.ann_cat.append(cat.astype(np.int64))
        self.ann_box.append(np.array(flat, dtype=np.float32).reshape(-1, 4))
        self.ann_crowd.append(np.array([1 if a.get("iscrowd") or a.get("ignore") else 0 for a in batch], np.uint8))
        return True

    def _annotations_checked(self, batch: list) -> None:
        img, cat, boxes = [], [], []
        for j, a in enumerate(batch):
            i = self.n_annotations + j
            img.append(int(_field(self.path, "annotations", i, a, "image_id", _NUM)))
            cat.append(int(_field(self.path, "annotations", i, a, "category_id", _NUM)))
            box = _field(self.path, "annotations", i, a, "bbox", list)
            if len(box) != 4 or not all(isinstance(v, _NUM) and not isinstance(v, bool) for v in box):
                raise AnnotationError(f"{self.path}: annotations[{i}].bbox = {box!r} is not [x, y, w, h]")
            boxes.append(box)
        self.ann_image.append(np.array(img, dtype=np.int64))
        self.ann_cat.append(np.array(cat, dtype=np.int64))
        self.ann_box.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        self.ann_crowd.append(np.array([1 if a.get("iscrowd") or a.get("ignore") else 0 for a in batch], np.uint8))


def _take(parts: list[np.ndarray], dtype: type, shape: tuple[int, ...] = (0,)) -> np.ndarray:
    """The batches of one column as one array; ``parts`` is emptied (the batches are not kept twice)."""
    out = np.concatenate(parts) if parts else np.zeros(shape, dtype=dtype)
    parts.clear()
    return out


def _lookup(path: Path, keys: np.ndarray, values: np.ndarray, field: str, fault: str) -> np.ndarray:
    """Position of each annotation's ``field`` value in the sorted ``keys``; an AnnotationError names the first
    annotation whose value is not there (``fault``: what that means; ``{count}`` counts them)."""
    pos = np.searchsorted(keys, values)
    ok = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == values)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise AnnotationError(f"{path}: annotations[{bad}].{field} = {int(values[bad])} "
                              + fault.format(count=int((~ok).sum())))
    return pos


def _clip(xywh: np.ndarray, w_img: np.ndarray, h_img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes as xyxy clipped to their image, whether each is kept (finite, positive width and height after
    clipping) and whether clipping changed it."""
    x1, y1 = xywh[:, 0], xywh[:, 1]
    xyxy = np.stack([x1, y1, x1 + xywh[:, 2], y1 + xywh[:, 3]], axis=1)
    del xywh, x1, y1  # (10M boxes: the peak memory is in these steps)
    finite = np.isfinite(xyxy).all(axis=1)
    clipped = np.stack([np.clip(xyxy[:, 0], 0, w_img), np.clip(xyxy[:, 1], 0, h_img), np.clip(xyxy[:, 2], 0, w_img),
                        np.clip(xyxy[:, 3], 0, h_img)], axis=1)
    was_clipped = finite & (clipped != xyxy).any(axis=1)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return clipped, keep, was_clipped


def _write_arrays(path: Path, out: Path) -> None:
    columns = _Columns(path)
    try:
        for section, batch in iter_lists(path):
            columns.add(section, batch)
    except JsonStreamError as exc:
        raise AnnotationError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text ({exc})") from None
    cats = columns.cats
    if not cats:
        raise AnnotationError(f"{path}: no 'categories' listed")
    cats.sort()
    cat_ids = np.array([c[0] for c in cats], dtype=np.int64)
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise AnnotationError(f"{path}: duplicate category ids in 'categories'")

    if not columns.n_images:
        raise AnnotationError(f"{path}: no 'images' listed")
    ids = _take(columns.image_ids, np.int64)
    widths, heights = _take(columns.widths, np.int32), _take(columns.heights, np.int32)
    name_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(_take(columns.name_lengths, np.int64), out=name_offsets[1:])
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise AnnotationError(f"{path}: duplicate image ids in 'images'")

    n_annotations = columns.n_annotations
    # position of each annotation's image in the JSON's image order (10M boxes: the peak memory is in these steps)
    img_pos = order[_lookup(path, sorted_ids, _take(columns.ann_image, np.int64), "image_id",
                            "names no image ({count} such annotations)")]
    del order, sorted_ids
    categories = _lookup(path, cat_ids, _take(columns.ann_cat, np.int64), "category_id",
                         "is not in 'categories'").astype(np.int32)

    clipped, keep, was_clipped = _clip(_take(columns.ann_box, np.float32, (0, 4)),
                                       widths[img_pos].astype(np.float32), heights[img_pos].astype(np.float32))

    img_pos = img_pos[keep]
    by_image = np.argsort(img_pos, kind="stable")
    counts = np.bincount(img_pos, minlength=len(ids))
    del img_pos
    box_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=box_offsets[1:])

    arrays = {
        "image_ids": lambda: ids,
        "widths": lambda: widths,
        "heights": lambda: heights,
        "name_offsets": lambda: name_offsets,
        "name_bytes": lambda: np.frombuffer(bytes(columns.names), dtype=np.uint8),
        "box_offsets": lambda: box_offsets,
        "boxes": lambda: np.ascontiguousarray(clipped[keep][by_image], dtype=np.float32),
        "categories": lambda: categories[keep][by_image],
        "iscrowd": lambda: _take(columns.ann_crowd, np.uint8)[keep][by_image],
    }
    for name, make in arrays.items():  # one at a time
        np.save(out / f"{name}.npy", make())
    stats = {"images": len(ids), "annotations": n_annotations, "boxes": int(keep.sum()),
             "clipped": int((was_clipped & keep).sum()), "degenerate": int((~keep).sum())}
    meta = {"category_ids": cat_ids.tolist(), "category_names": [c[1] for c in cats], "stats": stats}
    (out / "meta.json").write_text(json.dumps(meta))
