"""`zoo.load` of a cached R50-FPN checkpoint vs building torchvision's model and loading the same state dict by hand.

The checkpoint is an MMDetection-layout Faster R-CNN R50-FPN with the 365 Objects365 v1 classes (random values:
loading cost does not depend on them), registered under `fpn_r50_obj365` with a local source. The first `zoo.load`
converts it and caches the converted safetensors; the timed loads are the warm path a user sees every time after.

    python benchmarks/bench_zoo_load.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_convert as mm  # noqa: E402  (MMDetection-layout state dicts derived from MMDetection's model code)
from _common import median_time, report  # noqa: E402

import zoo  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.categories import get_categories  # noqa: E402
from zoo.checkpoint import load_weights  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "faster_rcnn_obj365v1.pth"
        classes = get_categories("objects365_v1")
        torch.save({"meta": {"CLASSES": list(classes)},
                    "state_dict": mm.random_state(mm.mmdet_faster_rcnn_shapes(len(classes)))}, pth)
        digest = hashlib.sha256(pth.read_bytes()).hexdigest()
        spec = zoo.get_spec("fpn_r50_obj365")
        registry._SPECS[spec.name] = replace(spec, source=str(pth), sha256=digest)
        cold, _ = median_time(lambda: zoo.load(spec.name, progress=False), repeats=1, warmup=0)
        converted = next(Path(tmp).glob("*.safetensors"))

        def by_hand() -> None:
            model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
                weights=None, weights_backbone=None, num_classes=len(classes) + 1)
            model.load_state_dict(load_weights(converted)[0])
            model.eval()

        hand, _ = median_time(by_hand, args.repeats)
        warm, _ = median_time(lambda: zoo.load(spec.name, progress=False), args.repeats)
    rows = [("torchvision build + load_state_dict (by hand)", hand, 1.0),
            ("zoo.load, cached + converted (verifies sha256)", warm, warm / hand),
            ("zoo.load, first call (converts, writes cache)", cold, cold / hand)]
    report("zoo_load", ["path", "median s", "x by hand"], rows,
           {"repeats": args.repeats, "target": "warm zoo.load within 1.2x of by hand",
            "checkpoint_bytes": pth.stat().st_size if pth.exists() else None})


if __name__ == "__main__":
    main()
