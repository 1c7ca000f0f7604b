"""Images per second of the embedded default, yolox_nano_coco at 416 x 416, on this machine's CPU: eager PyTorch vs
TorchScript vs ONNX Runtime vs OpenVINO (f32), batch 1 and batch 8, median over repeats after a warm-up.

Every runtime gets the same input, real photos letterboxed by ``zoo.letterbox`` (what the service sends); eager is
the zoo model called as users call it on those canvases (``model([canvas, ...])``); the exports come from
``export.export_model`` with their parity check on the same photos. HTTP figures for the same model come from
``python benchmarks/bench_serving.py --models yolox``.

    nice python benchmarks/bench_yolox_nano.py [--repeats 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median_time, report  # noqa: E402

import zoo  # noqa: E402
from export import export_model  # noqa: E402
from export.api import runner_for  # noqa: E402
from export.contract import output_names  # noqa: E402
from export.parity import sample_photos  # noqa: E402
from zoo.letterbox import letterbox  # noqa: E402
from zoo.vocabulary import DETECTION  # noqa: E402

NAME = "yolox_nano_coco"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per setting (batch 8: a quarter)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.load(NAME)
    pre = zoo.model_spec(model).preprocessing
    size = pre.input_size()
    photos = list(sample_photos().values())
    canvases = [letterbox(p, size, pre.pad_value)[0] for p in photos]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for fmt in ("torchscript", "onnx"):
            path, report_ = export_model(NAME, Path(tmp) / fmt, fmt=fmt)
            assert report_.passed
            runners[fmt] = runner_for(fmt, path, output_names(DETECTION), threads=args.threads)
        runners["openvino"] = runner_for("onnx", Path(tmp) / "onnx" / "model.onnx", output_names(DETECTION),
                                         runtime="openvino", threads=args.threads)
        for batch in args.batches:
            arrays = [canvases[i % len(canvases)] for i in range(batch)]
            stacked = np.stack(arrays)
            tensors = [torch.from_numpy(a) for a in arrays]

            def eager() -> None:
                with torch.inference_mode():
                    model(tensors)

            calls = {"eager": eager, **{k: (lambda r=r: r(stacked)) for k, r in runners.items()}}
            repeats = args.repeats if batch == 1 else max(3, args.repeats // 4)
            for runtime, call in calls.items():
                seconds, _ = median_time(call, repeats, warmup=2)
                rows.append((runtime, batch, round(seconds * 1000, 2), round(batch / seconds, 1)))
                print(f"  {runtime} batch {batch}: {batch / seconds:.1f} images/s", flush=True)
    best = max(rows, key=lambda r: r[3])
    report("bench_yolox_nano", ("runtime", "batch", "ms_per_call", "images_per_s"), rows,
           {"model": NAME, "input": list(size), "threads": args.threads, "repeats": args.repeats,
            "best": {"runtime": best[0], "batch": best[1], "images_per_s": best[3]}})
    print(f"best: {best[0]} at batch {best[1]}, {best[3]} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
