"""Images per second of each in-process serving backend as the batch grows: where does batching stop paying?
One backend call per batch (``Backend.infer``), the same photo repeated, median over repeats after a warm-up.

    python benchmarks/bench_batch_scaling.py [--models demo r50fpn_512] [--batches 1 2 4 8] [--repeats 3]

``torch`` is measured with streams off (one stacked forward per batch) and on (the serving default on CPU: one
single-threaded forward per image, side by side); ``onnxruntime`` and ``openvino-bf16`` run the whole batch in one
session call.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import median_time, report  # noqa: E402
from bench_serving import MODELS, split_backend, test_image  # noqa: E402

from serving.backends import create_backend  # noqa: E402
from serving.config import ServingConfig  # noqa: E402
from serving.limits import decode_image  # noqa: E402

SETTINGS = {"torch (stacked)": ("torch", {"streams": 1}), "torch (streams)": ("torch", {}),
            "onnxruntime": ("onnxruntime", {}), "openvino-bf16": ("openvino-bf16", {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "r50fpn_512"], choices=list(MODELS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".cache" / "bench_serving")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for key in args.models:
        name, size, pretrained = MODELS[key]
        pixels = decode_image(test_image(key, "jpeg"), None, 10**8).pixels
        for setting in args.settings:
            label, extra = SETTINGS[setting]
            backend_name, precision = split_backend(label)
            config = ServingConfig(models=[name], backend=backend_name, precision=precision, image_size=size,
                                   pretrained=pretrained, threads=args.threads, onnx_cache=args.cache,
                                   max_batch_size=max(args.batches), **extra)
            backend = create_backend(name, config)
            base = None
            for batch in args.batches:
                seconds, _ = median_time(lambda: backend.infer([pixels] * batch), args.repeats)
                rate = batch / seconds
                base = base or rate
                rows.append([key, setting, batch, round(rate, 2), round(rate / base, 2)])
                print(f"{key} {setting} batch {batch}: {rate:.2f} img/s", flush=True)
            backend.close()
    report("bench_batch_scaling", ["model", "backend", "batch", "images/s", "vs batch 1"], rows,
           {"threads": args.threads, "repeats": args.repeats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
