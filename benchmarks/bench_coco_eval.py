"""COCO bbox evaluation at the Objects365 val shape: ours (chunked numpy) vs faster-coco-eval vs pycocotools.

Each run is a fresh subprocess that reads the workload files (``make_o365_eval_workload.py``), evaluates and
reports its own peak RSS (``getrusage(RUSAGE_SELF)``); wall time is measured around the subprocess (interpreter
start and imports included) and inside it (load + evaluate). The libraries run the usual way (``COCO(json)``,
``loadRes(array)``, ``evaluate()``, ``accumulate()``); the largest |difference| of their precision/recall arrays
from ours is reported. Prints a table and writes ``benchmarks/results/coco_eval.json``.

    nice python benchmarks/bench_coco_eval.py --images 2000 10000 38000 --references-max-images 10000
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from make_o365_eval_workload import make_workload, write_workload  # noqa: E402  (found through the sys.path above)

from zoo.atomic import atomic_write  # noqa: E402

BACKENDS = ("ours", "faster-coco-eval", "pycocotools")


def worker(backend: str, folder: Path, out: Path) -> None:
    """Evaluate one workload with one backend; save precision/recall to ``out``.npz and print a JSON line."""
    start = time.perf_counter()
    dets = np.load(folder / "detections.npy")
    if backend == "ours":
        from training.evaluation.coco import evaluate_coco

        result = evaluate_coco(folder / "gt.json", dets)
        precision, recall, ap = result.precision, result.recall, result.stats["AP"]
    else:
        if backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(folder / "gt.json"))
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.evaluate()
            ev.accumulate()
        precision, recall = np.asarray(ev.eval["precision"]), np.asarray(ev.eval["recall"])
        ap = float(np.mean(precision[:, :, :, 0, -1][precision[:, :, :, 0, -1] > -1]))
    seconds = time.perf_counter() - start
    np.savez(out, precision=precision, recall=recall)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"eval_s": seconds, "peak_rss_bytes": peak, "AP": ap}))


def run(backend: str, folder: Path, out: Path) -> dict:
    """One subprocess run; returns its measurements (or the error)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", backend, str(folder), str(out)], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"backend": backend, "error": proc.stderr.strip().splitlines()[-1:] or [f"rc {proc.returncode}"]}
    return {"backend": backend, "wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def workload(root: Path, images: int) -> Path:
    folder = root / f"o365_val_shape_{images}"
    if not (folder / "gt.json").exists() or not (folder / "detections.npy").exists():
        gt, dets = make_workload(images, 100, seed=0)
        write_workload(folder, gt, dets)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--references-max-images", type=int, default=10000,
                        help="run faster-coco-eval and pycocotools only up to this many images (memory)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "o365_eval_workloads")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "coco_eval.json")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backend, folder, out = args.worker
        worker(backend, Path(folder), Path(out))
        return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for images in args.images:
            folder = workload(args.workdir, images)
            dets = np.load(folder / "detections.npy", mmap_mode="r")
            n_gt = len(json.loads((folder / "gt.json").read_text())["annotations"])
            ours = None
            for backend in args.backends:
                if backend != "ours" and images > args.references_max_images:
                    continue
                out = Path(tmp) / f"{backend}_{images}.npz"
                row = {"images": images, "gt_boxes": n_gt, "detections": len(dets), **run(backend, folder, out)}
                if "error" not in row:
                    arrays = np.load(out)
                    if backend == "ours":
                        ours = arrays
                    elif ours is not None:
                        row["max_abs_diff_vs_ours"] = float(max(np.abs(arrays["precision"] - ours["precision"]).max(),
                                                                np.abs(arrays["recall"] - ours["recall"]).max()))
                rows.append(row)
                print(json.dumps(row), flush=True)

    header = f"{'images':>7} {'backend':<17} {'wall s':>8} {'eval s':>8} {'peak RSS GB':>12} {'AP':>8} {'|diff|':>8}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['images']:>7} {r['backend']:<17} error: {r['error']}")
            continue
        diff = f"{r['max_abs_diff_vs_ours']:.1e}" if "max_abs_diff_vs_ours" in r else "-"
        print(f"{r['images']:>7} {r['backend']:<17} {r['wall_s']:8.1f} {r['eval_s']:8.1f} "
              f"{r['peak_rss_bytes'] / 2**30:12.2f} {100 * r['AP']:8.2f} {diff:>8}")

    report = {
        "benchmark": "coco_eval",
        "workload": "make_o365_eval_workload.py seed 0: 365 categories, ~13 GT boxes/image, 100 detections/image",
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "versions": {p: importlib.metadata.version(p)
                                 for p in ("numpy", "faster-coco-eval", "pycocotools")}},
        "rows": rows,
    }
    with atomic_write(args.output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
