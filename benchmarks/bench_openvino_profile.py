"""Where OpenVINO spends a call of one export, by layer type and the precision it ran in: fp32, bf16 (native
bfloat16 CPUs) and NNCF's int8 of the same export, from OpenVINO's per-layer counters (``PERF_COUNT``). It shows
what int8 can speed up (its int8 layers) and what it cannot (the float decoding, top-k and NMS after the prediction
layers, and the reorders around them).

    nice python benchmarks/bench_openvino_profile.py [--model yolox_nano_coco] [--batch 8] [--calls 20]
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report  # noqa: E402
from bench_int8 import MODELS, fp32_export, letterboxed_batch  # noqa: E402

from export.quantize import quantize_export  # noqa: E402
from export.runtime import bf16_supported  # noqa: E402


def profile(path: Path, precision: str, images: np.ndarray, calls: int, threads: int) -> dict[tuple[str, str], float]:
    """Milliseconds per call by (layer type, precision it ran in), averaged over ``calls`` after two warm-ups."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({"images": images})
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    for _ in range(calls):
        request.infer({"images": images})
        for layer in request.profiling_info:
            ran_in = layer.exec_type.rsplit("_", 1)[-1].lower() if "_" in layer.exec_type else layer.exec_type
            totals[layer.node_type, ran_in] += layer.real_time.total_seconds() * 1e3 / calls
    return dict(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=tuple(MODELS), default="yolox_nano_coco")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8, help="layer groups listed per precision")
    args = parser.parse_args()
    size = MODELS[args.model]["size"]
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir, weights = fp32_export(args.model, size, Path(tmp))
        int8_dir = Path(tmp) / "int8"
        quantize_export(fp32_dir, int8_dir, method="nncf")
        images = letterboxed_batch(fp32_dir, args.model, size, args.batch)
        runs = {"fp32": (fp32_dir / "model.onnx", "f32"), "int8": (int8_dir / "model.onnx", "f32")}
        if bf16_supported():
            runs["bf16"] = (fp32_dir / "model.onnx", "bf16")
        profiles = {name: profile(path, hint, images, args.calls, args.threads) for name, (path, hint) in runs.items()}
    rows, summary = [], {}
    for name, layers in profiles.items():
        total = sum(layers.values())
        int8_ms = sum(ms for (_, ran_in), ms in layers.items() if ran_in in ("i8", "u8"))
        summary[name] = {"ms_per_call": total, "images_per_s": args.batch * 1e3 / total, "int8_layers_ms": int8_ms}
        for (layer, ran_in), ms in sorted(layers.items(), key=lambda kv: -kv[1])[:args.top]:
            rows.append([name, layer, ran_in, ms, 100 * ms / total])
        rows.append([name, "(all layers)", "", total, 100.0])
    report("bench_openvino_profile", ["export", "layer type", "ran in", "ms per call", "% of call"], rows, extra={
        "model": args.model, "size": size, "batch": args.batch, "calls": args.calls, "threads": args.threads,
        "weights": weights, "summary": summary,
        "note": "OpenVINO per-layer counters (PERF_COUNT) add a little time of their own; the sum of the layers is "
                "close to, not equal to, the call's wall time"})
    for name, s in summary.items():
        print(f"{name}: {s['ms_per_call']:.1f} ms per call of {args.batch} ({s['images_per_s']:.1f} images/s), "
              f"{s['int8_layers_ms']:.1f} ms in int8 layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
