"""Pascal VOC XML annotations: one image's boxes and class names."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC XML file: ``boxes`` [N, 4] float xyxy in pixels (VOC's 1-based corners kept as written)."""

    filename: str
    width: int
    height: int
    boxes: Tensor
    names: tuple[str, ...]
    difficult: tuple[bool, ...]

    def labels(self, classes: dict[str, int]) -> Tensor:
        """int64 labels through ``classes`` (name -> label); an unmapped name is an error."""
        missing = sorted({n for n in self.names if n not in classes})
        if missing:
            raise KeyError(f"{self.filename}: class names {missing} not in the label map {sorted(classes)}")
        return torch.tensor([classes[n] for n in self.names], dtype=torch.int64)


def _number(node: ET.Element, tag: str, source: Path) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise ValueError(f"{source}: <{node.tag}> lacks <{tag}>")
    try:
        return float(child.text)
    except ValueError:
        raise ValueError(f"{source}: <{tag}> is not a number: {child.text!r}") from None


def read_voc_xml(path: str | Path) -> VocAnnotation:
    """Parse a VOC annotation file; boxes with xmax <= xmin or ymax <= ymin are refused with the file named."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not valid XML ({exc})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: no <size> element")
    width, height = int(_number(size, "width", path)), int(_number(size, "height", path))
    boxes: list[list[float]] = []
    names: list[str] = []
    difficult: list[bool] = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        name = obj.findtext("name")
        if box is None or not name:
            raise ValueError(f"{path}: an <object> lacks <name> or <bndbox>")
        xyxy = [_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax")]
        if xyxy[2] <= xyxy[0] or xyxy[3] <= xyxy[1]:
            raise ValueError(f"{path}: empty box {xyxy} for {name!r}")
        boxes.append(xyxy)
        names.append(name.strip())
        difficult.append(obj.findtext("difficult", "0").strip() == "1")
    return VocAnnotation(
        filename=root.findtext("filename", path.with_suffix(".png").name),
        width=width,
        height=height,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        names=tuple(names),
        difficult=tuple(difficult),
    )
