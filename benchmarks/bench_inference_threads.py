"""Why the server runs every in-process model on one compute thread: the demo model's latency on the torch
backend when all its work stays on one thread, against inference on a second thread after another thread has run
torch's parallel regions (what a server that loads on one thread and infers on another does). libgomp, torch's
OpenMP runtime, cuts its workers' spin-waiting once more threads than CPUs have started parallel regions.
Each case runs in a fresh process; median over repeats.

    python benchmarks/bench_inference_threads.py [--repeats 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _common import median_time, report  # noqa: E402

CASES = {
    "one thread loads and infers": "same",
    "loaded on main thread, inference on a second thread": "split",
}


def child(case: str, repeats: int, threads: int) -> float:
    """Median seconds of one demo-model inference in this process, set up as ``case`` says."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    sys.path.insert(0, str(REPO))
    from bench_serving import test_image

    from serving.backends import create_backend
    from serving.config import ServingConfig
    from serving.limits import decode_image

    torch.set_num_threads(threads)
    pixels = decode_image(test_image("demo", "jpeg"), None, 10**8).pixels
    config = ServingConfig(streams=1)

    def load():
        backend = create_backend(config.models[0], config)
        backend.infer([pixels])  # the loading thread runs parallel regions too, as a warm-up would
        return backend

    def timed(backend) -> float:
        return median_time(lambda: backend.infer([pixels]), repeats, warmup=3)[0]

    worker = ThreadPoolExecutor(1)
    if case == "same":
        return worker.submit(lambda: timed(load())).result()
    backend = load()
    return worker.submit(timed, backend).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.threads)))
        return 0
    rows = []
    for label, case in CASES.items():
        done = subprocess.run([sys.executable, __file__, "--child", case, "--repeats", str(args.repeats),
                               "--threads", str(args.threads)], cwd=REPO, capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        rows.append([label, round(1000 * json.loads(done.stdout.strip().splitlines()[-1]), 1)])
    report("bench_inference_threads", ["case", "median ms per image"], rows,
           {"threads": args.threads, "repeats": args.repeats, "model": "retinanet_lite0_neon_trees"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
