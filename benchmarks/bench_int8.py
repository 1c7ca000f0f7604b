"""YOLOX-Nano at 416 px: fp32 vs int8 (export.quantize) on ONNX Runtime, and f32 / bf16 / int8 on OpenVINO, batch 1
and 8, images per second (median over repeats after a warm-up), measured side by side in one run, with the int8
export's accuracy report (agreement with fp32 on the calibration photos). OpenVINO runs the same QDQ ``model.onnx``
(its int8 kernels), bf16 only where the CPU has native bfloat16.

    nice python benchmarks/bench_int8.py [--repeats 10] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_time, report  # noqa: E402
from export.quantize import calibration_photos, quantize_export, summary  # noqa: E402
from export.runtime import OnnxRunner, OpenVinoRunner, bf16_supported  # noqa: E402
from zoo.letterbox import letterbox  # noqa: E402
from zoo.specs import packaged_export  # noqa: E402

SIZE = (416, 416)


def cpu_flags() -> list[str]:
    """The CPU's int8/bf16 instruction sets (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags.split()]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    fp32_dir = packaged_export("yolox_nano_coco", SIZE[0])
    photos = list(calibration_photos(None, "yolox_nano_coco", SIZE).values())
    batches = {n: np.stack([letterbox(photos[i % len(photos)], SIZE, 114 / 255)[0] for i in range(n)])
               for n in (1, 8)}
    with tempfile.TemporaryDirectory() as tmp:
        int8_path, accuracy = quantize_export(fp32_dir, Path(tmp) / "int8")
        runners = {("onnxruntime", "fp32"): OnnxRunner(fp32_dir / "model.onnx", args.threads),
                   ("onnxruntime", "int8"): OnnxRunner(int8_path, args.threads)}
        try:
            runners["openvino", "f32"] = OpenVinoRunner(fp32_dir / "model.onnx", "f32", args.threads)
            if bf16_supported():
                runners["openvino", "bf16"] = OpenVinoRunner(fp32_dir / "model.onnx", "bf16", args.threads)
            runners["openvino", "int8"] = OpenVinoRunner(int8_path, "f32", args.threads)
        except ImportError:
            pass
        rate = {(key, n): n / median_time(lambda: run(batch), args.repeats)[0]
                for n, batch in batches.items() for key, run in runners.items()}
    rows = [[runtime, precision, n, rate[(runtime, precision), n]] for (runtime, precision), n in rate]
    speedups = {}
    for n in batches:
        int8 = max(r for ((_, p), b), r in rate.items() if p == "int8" and b == n)
        speedups[f"batch{n}"] = {"int8_over_onnxruntime_fp32": int8 / rate[("onnxruntime", "fp32"), n]}
        if (("openvino", "bf16"), n) in rate:
            speedups[f"batch{n}"]["int8_over_openvino_bf16"] = int8 / rate[("openvino", "bf16"), n]
    report("bench_int8", ["runtime", "precision", "batch", "images_per_s"], rows, extra={
        "model": "yolox_nano_coco", "size": SIZE, "threads": args.threads, "repeats": args.repeats,
        "cpu_flags": cpu_flags(), "speedups_best_int8": speedups, "targets": {"over_fp32": 2.5, "over_bf16": 1.6},
        "accuracy": accuracy,
        "note": "one run on a shared, noisy 2-core machine"})
    print(summary(accuracy))
    print(f"best int8 speedups: {speedups}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
