"""int8 against fp32 and bf16, side by side in one run, for YOLOX-Nano at 416 px (packaged fp32 export) and R50-FPN
(``fpn_r50_obj365``'s Faster R-CNN architecture, random weights: the checkpoint cannot be downloaded here, and
weights do not change the work) at 800 px: images per second of fp32 on ONNX Runtime and OpenVINO, bf16 on OpenVINO
(native bfloat16 CPUs), and the two int8 exports of :mod:`export.quantize` (NNCF, ONNX Runtime QDQ) on both runtimes,
timed round-robin by :func:`export.fastest.time_runners`; with each int8 export's accuracy report (agreement with
fp32 on the calibration photos) and the machine's load average.

    nice python benchmarks/bench_int8.py [--rounds 3] [--repeats 5] [--threads 2] [--models NAME ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402

from export.api import export_model  # noqa: E402
from export.artifact import pad_value, read_metadata  # noqa: E402
from export.fastest import time_runners  # noqa: E402
from export.quantize import METHODS, calibration_photos, quantize_export, summary  # noqa: E402
from export.runtime import OnnxRunner, OpenVinoRunner, Runner, bf16_supported  # noqa: E402
from zoo.letterbox import letterbox  # noqa: E402
from zoo.specs import packaged_export  # noqa: E402

MODELS = {"yolox_nano_coco": {"size": 416, "batches": (1, 8)}, "fpn_r50_obj365": {"size": 800, "batches": (1,)}}
TARGETS = {"over_fp32": 2.5, "over_bf16": 1.6}


def cpu_flags() -> list[str]:
    """The CPU's int8/bf16 instruction sets (from /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags.split()]


def fp32_export(model: str, size: int, tmp: Path) -> tuple[Path, str]:
    """The packaged fp32 export folder, else a random-weights export at ``size``; and which weights it has."""
    folder = packaged_export(model, size)
    if folder is not None:
        return folder, "pretrained (packaged export)"
    path, _ = export_model(model, tmp / f"{model}_fp32", image_size=(size, size), pretrained=False, parity=False)
    return path.parent, "random"


def letterboxed_batch(export_dir: Path, model: str, size: int, n: int) -> np.ndarray:
    """``n`` calibration photos (repeated as needed) letterboxed as the export at ``export_dir`` expects."""
    photos = list(calibration_photos(None, model, (size, size)).values())
    pad = pad_value(read_metadata(export_dir))
    return np.stack([letterbox(photos[i % len(photos)], (size, size), pad)[0] for i in range(n)])


def measure(model: str, size: int, batches: tuple[int, ...], args: argparse.Namespace, tmp: Path) -> dict:
    """Rates by (runtime, precision, tool, batch), the int8 accuracy reports and speedups of one model."""
    fp32_dir, weights = fp32_export(model, size, tmp)
    fp32 = fp32_dir / "model.onnx"
    int8, accuracy = {}, {}
    for method in METHODS:
        print(f"{model}: int8 by {method}", flush=True)
        int8[method], accuracy[method] = quantize_export(fp32_dir, tmp / f"{model}_{method}", method=method)
    runners: dict[tuple[str, str, str], Runner] = {
        ("onnxruntime", "fp32", "-"): OnnxRunner(fp32, args.threads),
        ("openvino", "fp32", "-"): OpenVinoRunner(fp32, "f32", args.threads)}
    if bf16_supported():
        runners["openvino", "bf16", "-"] = OpenVinoRunner(fp32, "bf16", args.threads)
    for method, path in int8.items():
        runners["onnxruntime", "int8", method] = OnnxRunner(path, args.threads)
        runners["openvino", "int8", method] = OpenVinoRunner(path, "f32", args.threads)
    rates = {}
    for n in batches:
        images = letterboxed_batch(fp32_dir, model, size, n)
        print(f"{model}: timing batch {n}", flush=True)
        rates |= {(*key, n): rate for key, rate in time_runners(runners, images, args.rounds, args.repeats).items()}
    speedups = {}
    for n in batches:
        best_int8 = max(r for (_, p, _, b), r in rates.items() if p == "int8" and b == n)
        best_fp32 = max(r for (_, p, _, b), r in rates.items() if p == "fp32" and b == n)
        speedups[f"batch{n}"] = {"best_int8_over_best_fp32": best_int8 / best_fp32,
                                 "best_int8_over_onnxruntime_fp32": best_int8 / rates["onnxruntime", "fp32", "-", n]}
        if ("openvino", "bf16", "-", n) in rates:
            speedups[f"batch{n}"]["best_int8_over_openvino_bf16"] = best_int8 / rates["openvino", "bf16", "-", n]
    return {"weights": weights, "rates": rates, "accuracy": accuracy, "speedups": speedups}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            results[model] = measure(model, MODELS[model]["size"], MODELS[model]["batches"], args, Path(tmp))
    rows = [[model, MODELS[model]["size"], runtime, precision, tool, n, rate]
            for model, result in results.items() for (runtime, precision, tool, n), rate in result["rates"].items()]
    met = {model: {batch: {"over_fp32": s["best_int8_over_best_fp32"] >= TARGETS["over_fp32"],
                           "over_bf16": s.get("best_int8_over_openvino_bf16", 0.0) >= TARGETS["over_bf16"]}
                   for batch, s in result["speedups"].items()} for model, result in results.items()}
    report("bench_int8", ["model", "size", "runtime", "precision", "int8_tool", "batch", "images_per_s"], rows, extra={
        "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "cpu_flags": cpu_flags(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "weights": {model: r["weights"] for model, r in results.items()},
        "speedups": {model: r["speedups"] for model, r in results.items()}, "targets": TARGETS, "targets_met": met,
        "accuracy": {model: r["accuracy"] for model, r in results.items()},
        "note": "one run on a shared 2-core machine, other jobs running (load_average); ratios are side by side"})
    for model, result in results.items():
        for method, accuracy in result["accuracy"].items():
            print(f"{model} int8 by {method}: {summary(accuracy)}")
        print(f"{model} speedups: {result['speedups']}; targets met: {met[model]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
