"""Why fp32 exports cannot run 2x faster than eager PyTorch on this CPU, and bf16 can: each model's FLOPs at the
benchmark size (``torch.utils.flop_counter``, multiply-add = 2), the FLOP rate of eager and of the fastest fp32
and bf16 runs in benchmarks/results/bench_export_latency.json, against the rate of a large matrix product in fp32
and bf16 measured here (the best a convolution lowered to GEMM can do).

    python benchmarks/bench_cpu_roofline.py [--size 800] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, median_time, report  # noqa: E402
from bench_export_latency import MODELS, _model  # noqa: E402

import zoo  # noqa: E402
from zoo.vocabulary import SEGMENTATION  # noqa: E402


def gemm_rate(dtype: torch.dtype, n: int = 4096) -> float:
    """GFLOP/s of an n x n matrix product in ``dtype``."""
    a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
    seconds, _ = median_time(lambda: a @ b, repeats=3)
    return 2 * n**3 / seconds / 1e9


def model_gflops(key: str, size: int) -> float:
    model = _model(MODELS[key], size)
    x = torch.rand(3, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        if zoo.model_spec(model).task == SEGMENTATION:
            model(x[None])
        else:
            model([x])
    return counter.get_total_flops() / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    latency = {(r["model"], r["size"]): r for r in
               json.loads((RESULTS / "bench_export_latency.json").read_text())["results"]}
    fp32_gemm, bf16_gemm = gemm_rate(torch.float32), gemm_rate(torch.bfloat16)
    rows = []
    for key in MODELS:
        gflops = model_gflops(key, args.size)
        row = latency.get((key, args.size), {})
        best = row.get("best")
        rate = {name: gflops / row[f"{name}_s"] if row.get(f"{name}_s") else None
                for name in ("eager", best, "openvino_bf16") if name}
        rows.append([key, args.size, round(gflops, 1), _r(rate.get("eager")), best or "-", _r(rate.get(best)),
                     _r(rate.get("openvino_bf16"))])
    report("bench_cpu_roofline", ["model", "size", "GFLOP", "eager GFLOP/s", "best fp32 export",
                                  "its GFLOP/s", "openvino bf16 GFLOP/s"], rows,
           {"threads": args.threads, "gemm_4096_gflop_per_s": {"fp32": round(fp32_gemm, 1),
                                                                "bf16": round(bf16_gemm, 1)}})
    print(f"4096x4096 matrix product here: fp32 {fp32_gemm:.0f} GFLOP/s, bf16 {bf16_gemm:.0f} GFLOP/s")
    return 0


def _r(value: float | None) -> float | None:
    return round(value, 1) if value else None


if __name__ == "__main__":
    sys.exit(main())
