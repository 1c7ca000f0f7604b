"""CPU latency of eager PyTorch vs TorchScript vs ONNX Runtime vs OpenVINO (f32 and bf16) for Faster R-CNN,
RetinaNet and PSPNet at 512 and 800 px: same random weights, same input (a letterboxed photo), batch 1, median over
repeats after a warm-up. OpenVINO runs the same ``model.onnx``; bf16 only where the CPU has native bfloat16, and
eager PyTorch under ``torch.autocast("cpu", torch.bfloat16)`` is timed beside it for a like-for-like comparison.

Random weights (no Objects365 checkpoint is available offline): detector score thresholds stay at the preprocessing
default, so post-processing sees as many candidates as trained models see at most. Eager = the zoo model as users
call it (``model([image])``); the exports come from ``export.export_model`` (parity checked on the same photo).
Parity of the OpenVINO runs is checked on the same photo, bf16 against ``export.parity.BF16_TOLERANCE``; with random
weights a detector's scores are all alike, so bf16 rounding reorders them and its detection parity here says little
(the trained demo model passes it: tests/test_export.py::test_trained_model_on_openvino_bf16).

    nice python benchmarks/bench_export_latency.py [--sizes 512 800] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_time  # noqa: E402

import zoo  # noqa: E402
from export import export_model  # noqa: E402
from export.api import runner_for, tolerance_for  # noqa: E402
from export.contract import output_names  # noqa: E402
from export.parity import check_parity, sample_photos  # noqa: E402
from export.runtime import OnnxRunner, TorchScriptRunner, bf16_supported  # noqa: E402
from export.source import load_source  # noqa: E402
from zoo.atomic import atomic_write  # noqa: E402
from zoo.categories import get_categories  # noqa: E402
from zoo.letterbox import letterbox  # noqa: E402
from zoo.models import build  # noqa: E402
from zoo.vocabulary import BF16, F32, SEGMENTATION  # noqa: E402

MODELS = {"faster_rcnn": "fpn_r50_obj365", "retinanet": "retinanet_r50_obj365", "pspnet": "pspnet_r50_obj365_voc"}
RESULTS = Path(__file__).resolve().parent / "results" / "bench_export_latency.json"
COLUMNS = ("eager", "eager_bf16", "torchscript", "onnx", "openvino_f32", "openvino_bf16")


def _speedups(row: dict) -> str:
    text = f"best fp32 {row['best']} {row['best_speedup']:.2f}x"
    if "bf16_speedup" in row:
        text += f"; openvino bf16 {row['bf16_speedup']:.2f}x"
    return text


def _cell(row: dict, column: str) -> str:
    """Seconds, with a mark where the run failed its parity check; '-' where not measured."""
    seconds = row.get(f"{column}_s")
    if seconds is None:
        return "-"
    return f"{seconds:.3f}" + ("" if row.get(f"{column}_parity", True) else " (parity failed)")


def _model(name: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = zoo.get_spec(name)
    spec = dataclasses.replace(spec, preprocessing=dataclasses.replace(spec.preprocessing, min_size=size,
                                                                       max_size=max(size, spec.preprocessing.max_size)))
    names = get_categories(spec.categories)
    model = build(spec.arch, spec.num_outputs, preprocessing=spec.preprocessing, **spec.build_kwargs).eval()
    return zoo.describe(model, spec, names)


def _median(fn, repeats: int) -> float:
    """Median seconds after one warm-up call (allocations, lazy init, ORT arena)."""
    return median_time(fn, repeats)[0]


def _save(rows: list[dict], args: argparse.Namespace) -> None:
    """Write the results so far (after every row, so an interrupted run keeps what it measured); rows of
    (model, size) pairs not measured in this run are kept from the previous file."""
    measured = {(r["model"], r["size"]) for r in rows}
    if RESULTS.is_file():
        previous = json.loads(RESULTS.read_text()).get("results", [])
        rows = [r for r in previous if (r["model"], r["size"]) not in measured] + rows
    with atomic_write(RESULTS, "w") as f:
        f.write(json.dumps({
            "benchmark": "bench_export_latency", "threads": args.threads, "repeats": args.repeats, "batch": 1,
            "weights": "random", "machine": platform.platform(), "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "openvino": _openvino_version(),
            "results": rows}, indent=2) + "\n")


def _openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


def _eager_times(model: torch.nn.Module, image: np.ndarray, repeats: int, bf16: bool) -> dict[str, Any]:
    """Seconds of the eager model, fp32 and (where the CPU has it) under bfloat16 autocast."""
    x = torch.from_numpy(image)
    segmentation = zoo.model_spec(model).task == SEGMENTATION

    def eager() -> None:
        with torch.inference_mode():
            if segmentation:
                model(x[None])
            else:
                model([x])

    row: dict[str, Any] = {"eager_s": _median(eager, repeats)}
    if bf16:
        def eager_bf16() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                eager()
        try:
            row["eager_bf16_s"] = _median(eager_bf16, repeats)
        except RuntimeError as exc:  # an op without a bfloat16 kernel
            row["eager_bf16_s"], row["eager_bf16_error"] = None, str(exc).splitlines()[0]
    return row


def _export_times(model: torch.nn.Module, image: np.ndarray, photo: dict[str, Any], size: int,
                  args: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    """Seconds and parity of the TorchScript and ONNX exports, and of the ONNX one on OpenVINO (f32, bf16)."""
    row: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = output_names(zoo.model_spec(model).task)
        for fmt in ("torchscript", "onnx"):
            path, report = export_model(model, Path(tmp) / fmt, fmt=fmt, photos=photo)
            runner = (OnnxRunner(path, threads=args.threads) if fmt == "onnx"
                      else TorchScriptRunner(path, outputs))
            row[f"{fmt}_s"] = _median(lambda: runner(image[None]), args.repeats)
            row[f"{fmt}_parity"] = report.passed
            if fmt == "onnx" and _openvino_version():
                source = load_source(model)
                for precision in (F32, BF16) if bf16 else (F32,):
                    ov = runner_for("onnx", path, outputs, "openvino", precision)
                    row[f"openvino_{precision}_s"] = _median(lambda: ov(image[None]), args.repeats)
                    check = check_parity(source, ov, (size, size), photo, tolerance_for(precision))
                    row[f"openvino_{precision}_parity"] = check.passed
                    row[f"openvino_{precision}_figures"] = check.images[0]
    return row


def _ratios(row: dict[str, Any]) -> dict[str, Any]:
    """The fastest fp32 export that passed parity and its speedup over eager; bf16's speedups."""
    times = {k[:-2]: v for k, v in row.items() if k.endswith("_s") and not k.startswith("eager") and v}
    fp32 = {k: v for k, v in times.items() if "bf16" not in k and row[f"{k}_parity"]}
    best = min(fp32, key=fp32.__getitem__)
    out: dict[str, Any] = {"best": best, "best_speedup": row["eager_s"] / fp32[best]}
    if "openvino_bf16" in times:
        out["bf16_speedup"] = row["eager_s"] / times["openvino_bf16"]
        if row.get("eager_bf16_s"):
            out["bf16_speedup_over_eager_bf16"] = row["eager_bf16_s"] / times["openvino_bf16"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = sample_photos(("astronaut",))
    bf16 = bf16_supported()
    rows = []
    for key in args.models:
        for size in args.sizes:
            model = _model(MODELS[key], size)
            image = letterbox(photo["astronaut"], (size, size))[0]
            row = {"model": key, "size": size, **_eager_times(model, image, args.repeats, bf16)}
            row.update(_export_times(model, image, photo, size, args, bf16))
            row.update(_ratios(row))
            rows.append(row)
            _save(rows, args)
            print(f"{key:12s} {size:4d}px  " + "  ".join(f"{c} {_cell(row, c)}" for c in COLUMNS)
                  + f"  {_speedups(row)}", flush=True)
    print("\n| model | size | " + " | ".join(f"{c} s" for c in COLUMNS) + " | speedup over eager fp32 |")
    print("|---|---|" + "---|" * len(COLUMNS) + "---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} | " + " | ".join(_cell(r, c) for c in COLUMNS)
              + f" | {_speedups(r)} |")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
