"""A compact, memory-mapped index of a COCO-format detection JSON (Objects365 scale: 600K images, 10M boxes).

The JSON is parsed once (streamed with ``ijson`` when installed, else ``json`` in a child process so that the parent
never holds the parsed document) into columnar numpy arrays saved as ``.npy`` next to the JSON (``<file>.index/``) or,
when that folder is not writable, under ``$O365ZOO_CACHE/index/``. Later loads memory-map the arrays, so DataLoader
workers share the same pages. The index is rebuilt when the JSON's size, mtime or the sha256 of its first MiB change.

Boxes are stored as xyxy float32 clipped to the image; clipped and degenerate boxes are counted (and logged), the
degenerate ones dropped. Malformed input raises :class:`AnnotationError` naming the file, the record and the field.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from zoo.vocabulary import cache_root

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
             ) -> "AnnotationIndex":
        """Memory-map the index of ``json_path``, building it first if missing or stale."""
        from filelock import FileLock

        json_path = Path(json_path)
        if not json_path.is_file():
            raise FileNotFoundError(f"annotation file not found: {json_path}")
        where = index_dir(json_path, cache_dir)
        fingerprint = _fingerprint(json_path)
        with FileLock(str(where) + ".lock"):
            if rebuild or _read_meta(where) is None or _read_meta(where)["fingerprint"] != fingerprint:
                build_index(json_path, where, fingerprint)
            meta = _read_meta(where)
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


def _read_meta(where: Path) -> dict | None:
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
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=where.parent))
    try:
        try:
            import ijson  # noqa: F401
        except ImportError:
            # Without a streaming parser, parse in a child so the parent's peak memory stays that of the arrays.
            run = subprocess.run([sys.executable, "-m", "training.data.index", str(json_path), str(tmp)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise AnnotationError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else
                                      f"{json_path}: index build failed")
        else:
            _write_arrays(json_path, tmp, _StreamSections(json_path))
        meta = json.loads((tmp / "meta.json").read_text())
        meta["fingerprint"] = fingerprint
        (tmp / "meta.json").write_text(json.dumps(meta))
        old = where.with_name(where.name + ".old")
        if where.exists():
            os.replace(where, old)
        os.replace(tmp, where)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _StreamSections:
    """Iterate the top-level lists of a COCO JSON with ijson, one pass per list (memory bounded by one record)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, section: str) -> Iterator[dict]:
        import ijson

        with open(self.path, "rb") as f:
            try:
                yield from ijson.items(f, f"{section}.item", use_float=True)
            except ijson.JSONError as exc:
                raise AnnotationError(f"{self.path}: not valid JSON ({exc})") from None


class _LoadedSections:
    """The same interface over a document parsed with the standard library."""

    def __init__(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                self.doc = json.load(f)
        except ValueError as exc:
            raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(self.doc, dict):
            raise AnnotationError(f"{path}: the top level must be an object with 'images', 'annotations', "
                                  f"'categories'")

    def __call__(self, section: str) -> Iterator[dict]:
        yield from self.doc.get(section) or ()


def _field(path: Path, section: str, i: int, record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict):
        raise AnnotationError(f"{path}: {section}[{i}] is not an object")
    if key not in record:
        raise AnnotationError(f"{path}: {section}[{i}] has no '{key}' field")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise AnnotationError(f"{path}: {section}[{i}].{key} = {value!r} has the wrong type")
    return value


def _write_arrays(path: Path, out: Path, sections) -> None:
    num = (int, float)
    cats = []
    for i, c in enumerate(sections("categories")):
        cats.append((int(_field(path, "categories", i, c, "id", num)), str(_field(path, "categories", i, c, "name",
                                                                                     str))))
    if not cats:
        raise AnnotationError(f"{path}: no 'categories' listed")
    cats.sort()
    cat_ids = np.array([c[0] for c in cats], dtype=np.int64)
    if len(np.unique(cat_ids)) != len(cat_ids):
        raise AnnotationError(f"{path}: duplicate category ids in 'categories'")

    image_ids, widths, heights = array("q"), array("i"), array("i")
    name_offsets, names = array("q", [0]), bytearray()
    for i, im in enumerate(sections("images")):
        image_ids.append(int(_field(path, "images", i, im, "id", num)))
        name = _field(path, "images", i, im, "file_name", str).encode("utf-8")
        w, h = _field(path, "images", i, im, "width", num), _field(path, "images", i, im, "height", num)
        if w <= 0 or h <= 0:
            raise AnnotationError(f"{path}: images[{i}] (id {image_ids[-1]}) has size {w}x{h}")
        widths.append(int(w))
        heights.append(int(h))
        names += name
        name_offsets.append(len(names))
    if not image_ids:
        raise AnnotationError(f"{path}: no 'images' listed")
    ids = np.frombuffer(image_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if np.any(sorted_ids[1:] == sorted_ids[:-1]):
        raise AnnotationError(f"{path}: duplicate image ids in 'images'")

    ann_image, ann_cat, ann_box, ann_crowd = array("q"), array("q"), array("f"), array("B")
    for i, a in enumerate(sections("annotations")):
        ann_image.append(int(_field(path, "annotations", i, a, "image_id", num)))
        ann_cat.append(int(_field(path, "annotations", i, a, "category_id", num)))
        box = _field(path, "annotations", i, a, "bbox", list)
        if len(box) != 4 or not all(isinstance(v, num) and not isinstance(v, bool) for v in box):
            raise AnnotationError(f"{path}: annotations[{i}].bbox = {box!r} is not [x, y, w, h]")
        ann_box.extend(box)
        ann_crowd.append(1 if a.get("iscrowd") or a.get("ignore") else 0)

    a_img = np.frombuffer(ann_image, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, a_img)
    pos_ok = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == a_img)
    if not pos_ok.all():
        bad = int(np.flatnonzero(~pos_ok)[0])
        raise AnnotationError(f"{path}: annotations[{bad}].image_id = {int(a_img[bad])} names no image "
                              f"({int((~pos_ok).sum())} such annotations)")
    img_pos = order[pos]  # position of each annotation's image in the JSON's image order
    a_cat = np.frombuffer(ann_cat, dtype=np.int64)
    cpos = np.searchsorted(cat_ids, a_cat)
    cat_ok = (cpos < len(cat_ids)) & (cat_ids[np.minimum(cpos, len(cat_ids) - 1)] == a_cat)
    if not cat_ok.all():
        bad = int(np.flatnonzero(~cat_ok)[0])
        raise AnnotationError(f"{path}: annotations[{bad}].category_id = {int(a_cat[bad])} is not in 'categories'")

    xywh = np.frombuffer(ann_box, dtype=np.float32).reshape(-1, 4)
    w_img = np.frombuffer(widths, dtype=np.int32)[img_pos].astype(np.float32)
    h_img = np.frombuffer(heights, dtype=np.int32)[img_pos].astype(np.float32)
    x1, y1 = xywh[:, 0], xywh[:, 1]
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    xyxy = np.stack([x1, y1, x2, y2], axis=1)
    finite = np.isfinite(xyxy).all(axis=1)
    clipped = np.stack([np.clip(x1, 0, w_img), np.clip(y1, 0, h_img), np.clip(x2, 0, w_img), np.clip(y2, 0, h_img)],
                       axis=1)
    was_clipped = finite & (clipped != xyxy).any(axis=1)
    keep = finite & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])

    img_pos, clipped = img_pos[keep], clipped[keep]
    by_image = np.argsort(img_pos, kind="stable")
    counts = np.bincount(img_pos, minlength=len(ids))
    box_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=box_offsets[1:])

    arrays = {
        "image_ids": ids,
        "widths": np.frombuffer(widths, dtype=np.int32),
        "heights": np.frombuffer(heights, dtype=np.int32),
        "name_offsets": np.frombuffer(name_offsets, dtype=np.int64),
        "name_bytes": np.frombuffer(bytes(names), dtype=np.uint8),
        "box_offsets": box_offsets,
        "boxes": np.ascontiguousarray(clipped[by_image], dtype=np.float32),
        "categories": cpos[keep][by_image].astype(np.int32),
        "iscrowd": np.frombuffer(ann_crowd, dtype=np.uint8)[keep][by_image],
    }
    for name, value in arrays.items():
        np.save(out / f"{name}.npy", value)
    stats = {"images": len(ids), "annotations": len(a_img), "boxes": int(keep.sum()),
             "clipped": int((was_clipped & keep).sum()), "degenerate": int((~keep).sum())}
    meta = {"category_ids": cat_ids.tolist(), "category_names": [c[1] for c in cats], "stats": stats}
    (out / "meta.json").write_text(json.dumps(meta))


def _main(argv: list[str]) -> int:
    """Child-process entry: ``python -m training.data.index JSON OUT_DIR`` (stdlib parser)."""
    path, out = Path(argv[0]), Path(argv[1])
    try:
        _write_arrays(path, out, _LoadedSections(path))
    except AnnotationError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
