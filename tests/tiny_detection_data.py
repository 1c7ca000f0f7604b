"""A tiny real-photo detection dataset for finetuning tests and the README's commands: scikit-image's astronaut and
rocket photos (public domain) with boxes drawn by hand, written as COCO JSON or as a Pascal VOC folder.

Classes: ``person`` (one COCO knows) and ``space shuttle``, ``helmet``, ``rocket`` (ones it does not). Training holds
each photo and its mirror image; validation the two photos."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageOps

CLASSES = ("person", "space shuttle", "helmet", "rocket")
# (photo, [(class, x1, y1, x2, y2)]) in the photo's own pixels
BOXES = {
    "astronaut": [("person", 20, 15, 365, 512), ("space shuttle", 355, 0, 470, 285), ("helmet", 278, 343, 510, 512)],
    "rocket": [("rocket", 300, 125, 340, 410)],
}


def _photos() -> dict[str, Image.Image]:
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()) for name in BOXES}


def _items() -> tuple[list, list]:
    """(train, val) lists of (file name, image, boxes)."""
    train, val = [], []
    for name, image in _photos().items():
        boxes = BOXES[name]
        width = image.width
        mirrored = [(c, width - x2, y1, width - x1, y2) for c, x1, y1, x2, y2 in boxes]
        train += [(f"{name}.jpg", image, boxes), (f"{name}_mirror.jpg", ImageOps.mirror(image), mirrored)]
        val.append((f"{name}.jpg", image, boxes))
    return train, val


def write_coco(folder: Path) -> dict[str, Path]:
    """``folder/img/*.jpg``, ``folder/train.json``, ``folder/val.json``."""
    images = folder / "img"
    images.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    out = {}
    for split, items in zip(("train", "val"), _items()):
        doc = {"images": [], "annotations": [], "categories": categories}
        for i, (file, image, boxes) in enumerate(items, start=1):
            image.convert("RGB").save(images / file, quality=92)
            doc["images"].append({"id": i, "file_name": file, "width": image.width, "height": image.height})
            for cls, x1, y1, x2, y2 in boxes:
                doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": i,
                                           "category_id": CLASSES.index(cls) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                           "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        out[split] = folder / f"{split}.json"
        out[split].write_text(json.dumps(doc))
    out["images"] = images
    return out


def write_voc(root: Path) -> Path:
    """A Pascal VOC folder: ``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/{trainval,test}.txt``."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    train, val = _items()
    for split, items in (("trainval", train), ("test", val)):
        for file, image, boxes in items:
            stem = Path(file).stem
            image.convert("RGB").save(root / "JPEGImages" / file, quality=92)
            objects = "".join(
                f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in boxes)
            (root / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{file}</filename><size><width>{image.width}</width><height>{image.height}"
                f"</height><depth>3</depth></size>{objects}</annotation>")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{Path(f).stem}\n" for f, _, _ in items))
    return root
