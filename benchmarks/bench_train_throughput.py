"""Training throughput of Faster R-CNN R50-FPN (365 classes) per step: images/s, and the projected time of the
paper's schedule (1350K iterations x 16 images, §4.1) at that rate on one device.

CPU: fp32 eager at small sizes. GPU (when present): fp32 eager vs AMP (fp16) + channels_last at 800x1333.

    nice python benchmarks/bench_train_throughput.py [--size 320] [--batch 2] [--iters 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from zoo import models
from zoo.preprocess import Preprocessing

ROOT = Path(__file__).resolve().parents[1]
PAPER_IMAGES = 1_350_000 * 16


def step_rate(device: str, size: int, batch: int, iters: int, amp: bool, channels_last: bool) -> float:
    torch.manual_seed(0)
    model = models.build("fasterrcnn_r50_fpn", 366, preprocessing=Preprocessing(min_size=size,
                                                                                max_size=int(size * 1333 / 800)))
    model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device == "cuda")
    h, w = size, int(size * 4 / 3)
    images = [torch.rand(3, h, w, device=device) for _ in range(batch)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, w / 2, h / 2], [w / 3, h / 4, w - 5, h - 5]], device=device),
                "labels": torch.tensor([1, 200], device=device)} for _ in range(batch)]

    def one() -> None:
        ctx = torch.autocast(device, dtype=torch.float16) if amp and device == "cuda" else nullcontext()
        with ctx:
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    one()  # warm-up (allocator, cudnn autotune)
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        one()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320, help="CPU short side")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    cases = [("cpu", args.size, False, False)]
    if torch.cuda.is_available():
        cases += [("cuda", 800, False, False), ("cuda", 800, True, True)]
    for device, size, amp, cl in cases:
        rate = step_rate(device, size, args.batch, args.iters if device == "cpu" else 20, amp, cl)
        rows.append({"device": torch.cuda.get_device_name() if device == "cuda" else f"cpu x{args.threads} threads",
                     "size": size, "batch": args.batch, "mode": "AMP fp16 + channels_last" if amp else "fp32 eager",
                     "images_per_s": rate, "paper_schedule_hours": PAPER_IMAGES / rate / 3600})
    print(f"{'device':28s} {'size':>5s} {'batch':>5s} {'mode':26s} {'img/s':>8s} {'1350Kx16 hours':>15s}")
    for r in rows:
        print(f"{r['device']:28s} {r['size']:5d} {r['batch']:5d} {r['mode']:26s} {r['images_per_s']:8.3f} "
              f"{r['paper_schedule_hours']:15.0f}")
    out = ROOT / "benchmarks" / "results" / "bench_train_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "paper_images": PAPER_IMAGES}, indent=2))


if __name__ == "__main__":
    main()
