"""CPU latency of eager PyTorch vs TorchScript vs ONNX Runtime for Faster R-CNN, RetinaNet and PSPNet at 512 and
800 px: same random weights, same input (a letterboxed photo), batch 1, median over repeats after a warm-up.

Random weights (no Objects365 checkpoint is available offline): detector score thresholds stay at the preprocessing
default, so post-processing sees as many candidates as trained models see at most. Eager = the zoo model as users
call it (``model([image])``); the exports come from ``export.export_model`` (parity checked on the same photo).

    nice python benchmarks/bench_export_latency.py [--sizes 512 800] [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from export import export_model  # noqa: E402
from export.letterbox import letterbox  # noqa: E402
from export.parity import sample_photos  # noqa: E402
from export.runtime import OnnxRunner, TorchScriptRunner  # noqa: E402
from export.graphs import output_names  # noqa: E402
from zoo.categories import get_categories  # noqa: E402
from zoo.models import build  # noqa: E402

MODELS = {"faster_rcnn": "fpn_r50_obj365", "retinanet": "retinanet_r50_obj365", "pspnet": "pspnet_r50_obj365_voc"}
RESULTS = Path(__file__).resolve().parent / "results" / "bench_export_latency.json"


def _model(name: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = zoo.get_spec(name)
    spec = dataclasses.replace(spec, preprocessing=dataclasses.replace(spec.preprocessing, min_size=size,
                                                                       max_size=max(size, spec.preprocessing.max_size)))
    names = get_categories(spec.categories)
    extra = 1 if spec.task == "detection" or spec.background else 0
    model = build(spec.arch, len(names) + extra, preprocessing=spec.preprocessing, **spec.build_kwargs).eval()
    model.spec, model.categories = spec, names
    return model


def _median(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, lazy init, ORT arena)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _save(rows: list[dict], args: argparse.Namespace) -> None:
    """Write the results so far (after every row, so an interrupted run keeps what it measured); rows of
    (model, size) pairs not measured in this run are kept from the previous file."""
    measured = {(r["model"], r["size"]) for r in rows}
    if RESULTS.is_file():
        previous = json.loads(RESULTS.read_text()).get("results", [])
        rows = [r for r in previous if (r["model"], r["size"]) not in measured] + rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "bench_export_latency", "threads": args.threads, "repeats": args.repeats, "batch": 1,
        "weights": "random", "machine": platform.platform(), "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__, "results": rows}, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = sample_photos(("astronaut",))
    rows = []
    for key in args.models:
        for size in args.sizes:
            model = _model(MODELS[key], size)
            image = letterbox(photo["astronaut"], (size, size))[0]
            x = torch.from_numpy(image)
            if model.spec.task == "segmentation":
                def eager():
                    with torch.inference_mode():
                        model(x[None])
            else:
                def eager():
                    with torch.inference_mode():
                        model([x])
            row = {"model": key, "size": size, "eager_s": _median(eager, args.repeats)}
            with tempfile.TemporaryDirectory() as tmp:
                outputs = output_names(model.spec.task)
                for fmt in ("torchscript", "onnx"):
                    path, report = export_model(model, Path(tmp) / fmt, fmt=fmt, photos=photo)
                    runner = (OnnxRunner(path, threads=args.threads) if fmt == "onnx"
                              else TorchScriptRunner(path, outputs))
                    row[f"{fmt}_s"] = _median(lambda: runner(image[None]), args.repeats)
                    row[f"{fmt}_parity"] = report.passed
            best = min(row["torchscript_s"], row["onnx_s"])
            row["best_speedup"] = row["eager_s"] / best
            rows.append(row)
            _save(rows, args)
            print(f"{key:12s} {size:4d}px  eager {row['eager_s']:.3f}s  torchscript {row['torchscript_s']:.3f}s  "
                  f"onnxruntime {row['onnx_s']:.3f}s  best x{row['best_speedup']:.2f}", flush=True)
    print("\n| model | size | eager s | TorchScript s | ONNX Runtime s | best speedup |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['eager_s']:.3f} | {r['torchscript_s']:.3f} | {r['onnx_s']:.3f} | "
              f"{r['best_speedup']:.2f}x |")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
