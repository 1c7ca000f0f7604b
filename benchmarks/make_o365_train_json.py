"""Write an Objects365-train-shaped COCO JSON (no images): ``patchN/`` file names, 365 categories, ~17 boxes per
image (Objects365 v1 train: ~600K images, ~10M boxes), written streaming so memory stays small.

    python benchmarks/make_o365_train_json.py --images 100000 --out /tmp/o365_train.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zoo.atomic import atomic_write


def write(path: Path, images: int, boxes_per_image: float = 17.0, seed: int = 0) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    ann_id, n_boxes = 1, 0
    with atomic_write(path, "w") as f:
        f.write('{"info": {"description": "synthetic Objects365-train-shaped file"}, "images": [')
        sizes = rng.integers(0, 3, images)
        for i in range(images):
            w, h = [(1024, 768), (768, 1024), (1333, 800)][sizes[i]]
            f.write(("," if i else "") + json.dumps({"id": i + 1, "width": w, "height": h,
                                                      "file_name": f"patch{i // 12000}/objects365_v1_{i:08d}.jpg"}))
        f.write('], "annotations": [')
        counts = rng.poisson(boxes_per_image, images)
        first = True
        for i in range(images):
            k = int(counts[i])
            xy = rng.uniform(0, 700, (k, 2)).round(2)
            wh = rng.uniform(4, 300, (k, 2)).round(2)
            cats = rng.integers(1, 366, k)
            crowd = rng.random(k) < 0.01
            for j in range(k):
                rec = {"id": ann_id, "image_id": i + 1, "category_id": int(cats[j]),
                       "bbox": [float(xy[j, 0]), float(xy[j, 1]), float(wh[j, 0]), float(wh[j, 1])],
                       "area": float(wh[j, 0] * wh[j, 1]), "iscrowd": int(crowd[j])}
                f.write(("" if first else ",") + json.dumps(rec))
                first = False
                ann_id += 1
            n_boxes += k
        f.write('], "categories": [' + ",".join(json.dumps({"id": c, "name": f"category_{c}"})
                                                  for c in range(1, 366)) + "]}")
    return images, n_boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/o365_train.json"))
    args = parser.parse_args()
    n_img, n_box = write(args.out, args.images)
    print(f"{args.out}: {n_img} images, {n_box} boxes, {args.out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
