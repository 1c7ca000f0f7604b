"""Shared by the benchmark scripts: a printed table and a JSON result file per benchmark."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from zoo.atomic import atomic_write

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def workload_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command line of a benchmark on an evaluation workload: its first argument is a folder written by
    ``make_o365_eval_workload.py`` (gt.json, detections.npy)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", type=Path, help="folder of make_o365_eval_workload.py (gt.json, detections.npy)")
    return parser


def report(name: str, columns: Sequence[str], rows: Sequence[Sequence[object]], extra: dict | None = None) -> Path:
    """Print ``rows`` as a table and write them, with the machine, to ``benchmarks/results/<name>.json``."""
    cells = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(columns)]
    print("  ".join(str(h).ljust(w) for h, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": {"platform": platform.platform(), "python": platform.python_version(),
                                              "processor": platform.processor()},
               "columns": list(columns), "rows": [dict(zip(columns, row)) for row in rows], **(extra or {})}
    with atomic_write(out, "w") as f:
        f.write(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return out
