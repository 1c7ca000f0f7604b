"""Objects365 v2 from its official download site: fetch, extract, check, fix names, write subsets.

    python -m training data objects365 --root DIR [--split train|val] [--version v2] [--mirror URL] [--fix-names]
        [--subset full|sample|coco80|non-coco80 ...] [--sample-size N] [--seed S] [--keep-archives]

Files (the official site's layout, https://www.objects365.org, with the URLs as YOLOv5's ``data/Objects365.yaml``
downloads them, ultralytics/yolov5 commit 050c72cbba9ca24dcff103fca54caf21d7e8b527), under :data:`BASE_URL`:
train: ``train/zhiyuan_objv2_train.tar.gz`` (the annotation JSON) and ``train/patch0..50.tar.gz``; val:
``val/zhiyuan_objv2_val.json``, ``val/images/v1/patch0..15.tar.gz`` and ``val/images/v2/patch16..43.tar.gz``.

Every file goes through :func:`zoo.hub.fetch` (resumed from its ``.part`` file after an interruption, with the hub's
deadline, minimum rate, disk-full handling, ``--mirror``/``$O365ZOO_MIRROR`` and progress bar) into
``ROOT/downloads/``. The site publishes no checksums: an archive is verified by reading it whole (gzip's and zip's
CRCs); a corrupt one is removed, so the next run downloads it again. Archives extract into ``ROOT/<split>/`` (their
own folders kept), each once (a marker in ``ROOT/<split>/.extracted/``), and are deleted afterwards unless
``--keep-archives``. The annotation JSON lands in ``ROOT/annotations/``.

The check (through the compact index, so the 1.66 GB train JSON fits in memory): every annotated image present under
``ROOT/<split>/`` (at its ``file_name``, else by its base name anywhere there: archives and JSON disagree on folders)
and of the size the JSON says. Subsets, written to ``ROOT/annotations/<split>_<subset>.json`` with ``file_name``
relative to ``ROOT/<split>/`` as found and images that are missing or of the wrong size left out:

- ``full``: the whole split;
- ``sample``: ``--sample-size`` images drawn with ``--seed`` (a quick evaluation set), all their boxes;
- ``coco80`` / ``non-coco80``: the boxes of the categories that map into COCO-80 (:func:`zoo.categories.map_indices`)
  or of the others, and the images holding at least one of them; all categories stay listed.

``--fix-names`` writes the category names with the known v2 typos corrected (:func:`zoo.categories.fix_name`).
"""
from __future__ import annotations

import gzip
import json
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm.auto import tqdm

from zoo import hub
from zoo.atomic import atomic_write
from zoo.categories import fix_name

from .index import AnnotationIndex
from .json_stream import iter_lists

BASE_URL = "https://dorc.ks3-cn-beijing.ksyun.com/data-set/2020Objects365%E6%95%B0%E6%8D%AE%E9%9B%86/"
SPLITS = ("train", "val")
VERSIONS = ("v2",)  # the only version the official site serves
SUBSETS = ("full", "sample", "coco80", "non-coco80")
DEFAULT_SUBSETS = ("sample", "coco80", "non-coco80")
_EXAMPLES = 5  # missing or mismatched images named in the report


class Objects365Error(ValueError):
    """A download, archive or annotation file is not what it should be; the message says which and what to do."""


def annotation_url(split: str) -> str:
    """URL of the split's annotation file (a tar.gz holding the JSON for train, the JSON itself for val)."""
    return BASE_URL + {"train": "train/zhiyuan_objv2_train.tar.gz", "val": "val/zhiyuan_objv2_val.json"}[split]


def patch_urls(split: str) -> list[str]:
    """URLs of the split's image archives."""
    if split == "train":
        return [f"{BASE_URL}train/patch{i}.tar.gz" for i in range(51)]
    return ([f"{BASE_URL}val/images/v1/patch{i}.tar.gz" for i in range(16)]
            + [f"{BASE_URL}val/images/v2/patch{i}.tar.gz" for i in range(16, 44)])


@dataclass
class Check:
    """Completeness of a split: annotated images missing under the image folder or of another size than listed."""

    images: int
    found: dict[int, str]  # index position -> path relative to the image folder, for every image present
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "file_name: listed WxH, file WxH" (or why unreadable)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        lines = [f"{self.images:,} annotated images: {self.images - len(self.missing):,} present, "
                 f"{len(self.missing):,} missing, {len(self.mismatched):,} of another size than listed"]
        if self.missing:
            lines.append("  missing: " + ", ".join(self.missing[:_EXAMPLES])
                         + (" ..." if len(self.missing) > _EXAMPLES else ""))
        if self.mismatched:
            lines.append("  size mismatch: " + "; ".join(self.mismatched[:_EXAMPLES])
                         + (" ..." if len(self.mismatched) > _EXAMPLES else ""))
        return "\n".join(lines)


def download(root: Path, split: str, *, mirror: str | None = None, keep_archives: bool = False,
             progress: bool = True) -> Path:
    """Fetch and extract the split's archives and annotation file (each once); return the annotation JSON's path."""
    images = root / split
    for url in patch_urls(split):
        _fetch_and_extract(root, url, images, keep_archives, mirror, progress)
    url = annotation_url(split)
    json_path = root / "annotations" / f"zhiyuan_objv2_{split}.json"
    if url.endswith(".json"):
        if not json_path.is_file():
            fetched = _fetch(root, url, mirror, progress)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fetched, json_path)  # a move within ROOT: never half a file
    else:
        _fetch_and_extract(root, url, json_path.parent, keep_archives, mirror, progress)
    if not json_path.is_file():
        raise Objects365Error(f"{url} held no {json_path.name}; the annotation archive is not the published one")
    return json_path


def check(index: AnnotationIndex, images: Path, progress: bool = True) -> Check:
    """Every image of ``index`` present under ``images`` with the listed size (see the module docstring)."""
    from PIL import Image

    by_name: dict[str, str] = {}
    for folder, _, names in os.walk(images):
        rel = os.path.relpath(folder, images)
        for name in names:
            by_name.setdefault(name, name if rel == "." else f"{rel}/{name}")
    result = Check(images=len(index), found={})
    for i, listed in enumerate(tqdm(index.file_names(), desc="checking images", unit="img", disable=not progress)):
        on_disk = listed if (images / listed).is_file() else by_name.get(os.path.basename(listed))
        if on_disk is None:
            result.missing.append(listed)
            continue
        want = (int(index.widths[i]), int(index.heights[i]))
        try:
            with Image.open(images / on_disk) as im:
                size = im.size
        except OSError as exc:  # not an image, truncated
            result.mismatched.append(f"{listed}: unreadable ({exc})")
            continue
        if size != want:
            result.mismatched.append(f"{listed}: listed {want[0]}x{want[1]}, file {size[0]}x{size[1]}")
            continue
        result.found[i] = on_disk
    return result


def write_subsets(json_path: Path, index: AnnotationIndex, found: dict[int, str], out_dir: Path, split: str,
                  subsets: Sequence[str], *, sample_size: int = 5000, seed: int = 0, fix_names: bool = False,
                  progress: bool = True) -> dict[str, dict[str, Any]]:
    """Write each subset (see the module docstring) of ``json_path``; ``found``: :attr:`Check.found`. Returns
    subset -> {"images", "boxes", "path"}. Two streamed passes over the JSON: the boxes, then images and categories."""
    from ..stats import mapped_categories

    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise Objects365Error(f"unknown subset {', '.join(unknown)}: choose from {', '.join(SUBSETS)}")
    ids = np.asarray(index.image_ids)
    usable = np.sort(ids[sorted(found)])
    coco = np.sort(np.asarray(index.category_ids, dtype=np.int64)[mapped_categories(index, "coco")])
    sample = np.sort(np.random.default_rng(seed).choice(usable, size=min(sample_size, len(usable)), replace=False))
    paths = {name: out_dir / f"{split}_{name}.json" for name in subsets}
    with ExitStack() as stack:
        plans = {name: _Plan(images=sample if name == "sample" else usable,
                             categories=None if name in ("full", "sample") else coco, inside=name == "coco80",
                             writer=_JsonWriter(stack.enter_context(atomic_write(paths[name], "w")),
                                                {"description": f"Objects365 {split}, subset {name}",
                                                 "source": str(json_path)}))
                 for name in subsets}
        with tqdm(total=index.stats.get("annotations"), desc="subsets: boxes", unit="box", disable=not progress) as bar:
            for section, batch in iter_lists(json_path):
                if section == "annotations":
                    for plan in plans.values():
                        plan.add_boxes(batch)
                    bar.update(len(batch))
        position = {int(ids[i]): i for i in found}
        for section, batch in iter_lists(json_path):
            if section == "categories":
                cats = [dict(c, name=fix_name(c["name"])) for c in batch] if fix_names else batch
                for plan in plans.values():
                    plan.writer.records(section, cats)
            elif section == "images":
                for plan in plans.values():
                    plan.add_images(batch, lambda image_id: found[position[image_id]])
        for plan in plans.values():
            plan.writer.close()
    return {name: {"images": plan.images_written, "boxes": plan.boxes, "path": str(paths[name])}
            for name, plan in plans.items()}


@dataclass
class _Plan:
    """One subset: the images it may hold and the categories whose boxes it keeps (None: all; ``inside`` False: the
    others). With a category filter, only the images holding a kept box are written."""

    images: np.ndarray  # sorted image ids
    categories: np.ndarray | None  # sorted category ids
    inside: bool
    writer: _JsonWriter
    boxes: int = 0
    images_written: int = 0
    holding: list[np.ndarray] = field(default_factory=list)  # image ids of the kept boxes, per batch
    held: np.ndarray | None = None  # the same, unique and sorted, once every box is read

    def add_boxes(self, batch: list[dict]) -> None:
        img = np.fromiter((a["image_id"] for a in batch), np.int64, len(batch))
        keep = _member(img, self.images)
        if self.categories is not None:
            cat = np.fromiter((a["category_id"] for a in batch), np.int64, len(batch))
            keep &= _member(cat, self.categories) == self.inside
        chosen = np.flatnonzero(keep)
        self.writer.records("annotations", [batch[j] for j in chosen.tolist()])
        self.boxes += len(chosen)
        if self.categories is not None:
            self.holding.append(img[chosen])

    def add_images(self, batch: list[dict], file_name: Callable[[int], str]) -> None:
        """The subset's images of ``batch`` (after every box), ``file_name(image id)`` as found on disk."""
        if self.categories is None:
            wanted = self.images
        else:
            if self.held is None:
                self.held = np.unique(np.concatenate([self.images[:0], *self.holding]))
            wanted = self.held
        img = np.fromiter((im["id"] for im in batch), np.int64, len(batch))
        chosen = np.flatnonzero(_member(img, wanted)).tolist()
        self.writer.records("images", [dict(batch[j], file_name=file_name(int(img[j]))) for j in chosen])
        self.images_written += len(chosen)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in the sorted array ``sorted_set``."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


class _JsonWriter:
    """A COCO JSON written list by list, a batch of records at a time (the lists may come in any order)."""

    def __init__(self, f: IO[str], info: dict[str, Any]) -> None:
        self.f, self.first = f, True
        self.current: str | None = None  # the list being written
        self.seen: set[str] = set()
        f.write('{"info": ' + json.dumps(info))

    def records(self, key: str, batch: list) -> None:
        if key != self.current:
            if key in self.seen:
                raise Objects365Error(f"the list {key!r} appears twice in the annotation file")
            if self.current is not None:
                self.f.write("]")
            self.f.write(f', "{key}": [')
            self.current, self.first = key, True
            self.seen.add(key)
        if batch:
            self.f.write(("" if self.first else ",") + ",".join(map(json.dumps, batch)))
            self.first = False

    def close(self) -> None:
        if self.current is not None:
            self.f.write("]")
        for key in ("images", "annotations", "categories"):  # a subset with nothing in a list still lists it
            if key not in self.seen:
                self.f.write(f', "{key}": []')
        self.f.write("}\n")


def _fetch(root: Path, url: str, mirror: str | None, progress: bool) -> Path:
    return hub.fetch(url, cache_dir=root / "downloads", mirror=mirror, progress=progress)


def _fetch_and_extract(root: Path, url: str, dest: Path, keep_archive: bool, mirror: str | None,
                       progress: bool) -> None:
    marker = dest / ".extracted" / (url.removeprefix(BASE_URL).replace("/", "_") + ".done")
    if marker.is_file():
        return
    archive = _fetch(root, url, mirror, progress)
    try:
        members = _extract(archive, dest, progress)
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        if isinstance(exc, OSError) and exc.filename is not None:  # our disk, not the archive
            raise
        archive.unlink(missing_ok=True)
        raise Objects365Error(f"{url}: the archive is corrupt ({type(exc).__name__}: {exc}); it was removed, run the "
                              f"command again to download it again (from another mirror if this recurs)") from None
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"url": url, "members": members}))
    if not keep_archive:
        archive.unlink(missing_ok=True)


def _extract(archive: Path, dest: Path, progress: bool) -> int:
    """Unpack a tar(.gz) or zip archive into ``dest``, reading it whole (so its CRCs are checked); return how many
    files it held."""
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    with tqdm(desc=f"extracting {archive.name}", unit="file", disable=not progress, leave=False) as bar:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in _progress(zf.infolist(), bar):
                    zf.extract(member, dest)  # zipfile drops absolute paths and '..'; a CRC mismatch raises
                    count += not member.is_dir()
        else:
            with open(archive, "rb") as f:
                gz = f.read(2) == b"\x1f\x8b"
            with (gzip.open(archive) if gz else open(archive, "rb")) as f:
                with tarfile.open(fileobj=f, mode="r|") as tf:
                    for member in _progress(tf, bar):
                        tf.extract(member, dest, filter="data")
                        count += member.isfile()
                while f.read(1 << 20):  # to the end of the stream: gzip checks its CRC and length there
                    pass
    return count


def _progress(items, bar: tqdm) -> Iterator:
    for item in items:
        yield item
        bar.update()


def prepare(root: str | os.PathLike, split: str = "val", *, version: str = "v2", mirror: str | None = None,
            fix_names: bool = False, subsets: Sequence[str] = DEFAULT_SUBSETS, sample_size: int = 5000,
            seed: int = 0, keep_archives: bool = False, progress: bool = True) -> tuple[Check, dict]:
    """Download, extract, check and write the subsets of one split; returns the check and the subsets written."""
    if split not in SPLITS:
        raise Objects365Error(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    if version not in VERSIONS:
        raise Objects365Error(f"unknown version {version!r}: the official site serves {', '.join(VERSIONS)}")
    if sample_size < 1:
        raise Objects365Error(f"--sample-size must be at least 1, got {sample_size}")
    root = Path(root)
    json_path = download(root, split, mirror=mirror, keep_archives=keep_archives, progress=progress)
    index = AnnotationIndex.load(json_path)
    result = check(index, root / split, progress)
    written = write_subsets(json_path, index, result.found, root / "annotations", split, subsets,
                            sample_size=sample_size, seed=seed, fix_names=fix_names, progress=progress)
    return result, written
