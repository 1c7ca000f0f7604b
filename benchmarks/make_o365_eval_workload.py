"""Write a synthetic COCO-format evaluation workload at the Objects365 val shape.

Output folder holds ``gt.json`` (images, annotations with area and iscrowd, 365 categories) and
``detections.npy`` (float64 ``[N, 7]`` rows ``image_id, x, y, w, h, score, category_id``: the layout
pycocotools' ``loadRes`` accepts for arrays). Shape: long-tailed category frequencies, about 13 ground-truth
boxes per image spread over a few categories, 1% crowd boxes, some empty images, box sizes log-normal
relative to the image (many small objects, as in Objects365), and exactly ``--dets`` detections per image:
jittered copies of ground truth (sometimes with a confused category) plus background false positives.

    python benchmarks/make_o365_eval_workload.py --images 2000 --out /tmp/o365_eval_2k
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from zoo.atomic import atomic_write

NUM_CATEGORIES = 365
IMAGE_SIZES = np.array([(1024, 768), (768, 1024), (1024, 683), (1024, 576), (800, 600), (640, 480)], dtype=np.float64)


def _category_probs(rng: np.random.Generator) -> np.ndarray:
    """Zipf-like frequencies over a random permutation of the category ids."""
    weights = 1.0 / np.arange(1, NUM_CATEGORIES + 1) ** 1.1
    return rng.permutation(weights / weights.sum())


def _boxes(rng: np.random.Generator, sizes: np.ndarray, scale_mean: float) -> np.ndarray:
    """Random xywh boxes inside images of the given (width, height) rows."""
    n = len(sizes)
    side = np.exp(rng.normal(np.log(scale_mean), 0.9, n)) * np.sqrt(sizes[:, 0] * sizes[:, 1])
    aspect = np.exp(rng.normal(0.0, 0.5, n))
    w = np.clip(side * np.sqrt(aspect), 2.0, sizes[:, 0])
    h = np.clip(side / np.sqrt(aspect), 2.0, sizes[:, 1])
    x = rng.uniform(0.0, 1.0, n) * (sizes[:, 0] - w)
    y = rng.uniform(0.0, 1.0, n) * (sizes[:, 1] - h)
    return np.round(np.stack([x, y, w, h], axis=1), 2)


def make_workload(num_images: int, dets_per_image: int, seed: int) -> tuple[dict, np.ndarray]:
    """Return (ground-truth dict, detections array) for ``num_images`` images."""
    rng = np.random.default_rng(seed)
    probs = _category_probs(rng)
    image_ids = np.arange(1, num_images + 1)
    sizes = IMAGE_SIZES[rng.integers(0, len(IMAGE_SIZES), num_images)]

    # Ground truth: gamma-Poisson counts (mean 13, some empty images), a few categories per image.
    counts = rng.poisson(rng.gamma(1.5, 13.0 / 1.5, num_images))
    gt_img = np.repeat(np.arange(num_images), counts)
    cats_per_image = 1 + rng.poisson(3.0, (num_images, 1))
    palette = rng.choice(NUM_CATEGORIES, size=(num_images, 8), p=probs)
    slot = (rng.uniform(0.0, 1.0, len(gt_img)) ** 2 * cats_per_image[gt_img, 0]).astype(np.int64)
    gt_cat = palette[gt_img, np.minimum(slot, 7)] + 1
    gt_box = _boxes(rng, sizes[gt_img], 0.08)
    crowd = rng.uniform(0.0, 1.0, len(gt_img)) < 0.01
    gt = {
        "images": [
            {"id": int(i), "width": int(wh[0]), "height": int(wh[1]), "file_name": f"{i:08d}.jpg"}
            for i, wh in zip(image_ids, sizes)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(image_ids[i]),
                "category_id": int(c),
                "bbox": b.tolist(),
                "area": float(b[2] * b[3]),
                "iscrowd": int(z),
            }
            for k, (i, c, b, z) in enumerate(zip(gt_img, gt_cat, gt_box, crowd))
        ],
        "categories": [{"id": c, "name": f"category_{c:03d}"} for c in range(1, NUM_CATEGORIES + 1)],
    }

    # Detections: up to 1.5 hits per ground-truth box, the rest background false positives.
    hits = np.repeat(np.arange(len(gt_img)), rng.poisson(1.2, len(gt_img)))
    per_image = np.bincount(gt_img[hits], minlength=num_images)
    keep = np.ones(len(hits), dtype=bool)
    over = per_image > dets_per_image
    if over.any():  # drop surplus hits in crowded images
        order = np.argsort(gt_img[hits], kind="stable")
        rank = np.arange(len(hits)) - np.repeat(np.cumsum(per_image) - per_image, per_image)
        keep[order] = rank < dets_per_image
        hits = hits[keep]
    hit_img = gt_img[hits]
    noise = rng.normal(0.0, 0.08, (len(hits), 4)) * np.repeat(gt_box[hits, 2:], 2, axis=1)
    hit_box = gt_box[hits] + noise
    hit_cat = np.where(rng.uniform(0.0, 1.0, len(hits)) < 0.15, rng.choice(NUM_CATEGORIES, len(hits), p=probs) + 1,
                       gt_cat[hits])
    hit_score = rng.beta(4.0, 2.0, len(hits))

    n_bg = dets_per_image - np.bincount(hit_img, minlength=num_images)
    bg_img = np.repeat(np.arange(num_images), n_bg)
    bg_box = _boxes(rng, sizes[bg_img], 0.06)
    bg_cat = np.where(rng.uniform(0.0, 1.0, len(bg_img)) < 0.5, palette[bg_img, rng.integers(0, 8, len(bg_img))] + 1,
                      rng.choice(NUM_CATEGORIES, len(bg_img), p=probs) + 1)
    bg_score = rng.beta(1.2, 6.0, len(bg_img))

    img = np.concatenate([hit_img, bg_img])
    box = np.concatenate([hit_box, bg_box])
    box[:, 2:] = np.maximum(box[:, 2:], 1.0)
    score = np.concatenate([hit_score, bg_score]).astype(np.float32)
    dets = np.column_stack([image_ids[img], np.round(box, 2), score, np.concatenate([hit_cat, bg_cat])])
    return gt, dets[np.argsort(img, kind="stable")].astype(np.float64)


def write_workload(out: Path, gt: dict, dets: np.ndarray) -> None:
    """Write gt.json and detections.npy atomically (temp file in the folder, then rename)."""
    with atomic_write(out / "gt.json", "w") as f:
        json.dump(gt, f)
    with atomic_write(out / "detections.npy") as f:
        np.save(f, dets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, required=True, help="number of images (Objects365 v1 val: ~38K here)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args()
    if args.images < 1 or args.dets < 1:
        parser.error("--images and --dets must be positive")
    gt, dets = make_workload(args.images, args.dets, args.seed)
    write_workload(args.out, gt, dets)
    print(f"{args.out}: {len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(dets)} detections")


if __name__ == "__main__":
    main()
