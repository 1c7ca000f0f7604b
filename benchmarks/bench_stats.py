"""``python -m training stats`` at the Objects365 train shape: seconds and peak RSS of the statistics (on the warm,
memory-mapped index) and of the cold index build, each in a fresh process. On a shared machine the wall-clock seconds
grow with the other jobs; the CPU seconds (user + system of the process) and the 1-minute load average at the start
of each step say how much.

    python benchmarks/make_o365_train_json.py --images 600000 --out /tmp/o365_600k.json
    nice python benchmarks/bench_stats.py /tmp/o365_600k.json

The synthetic file's category names (``category_N``) map into no other label space, so the effective-annotation
pass takes the first 80 categories as a stand-in for COCO-80 (the same work as a real mapping).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, os, resource, sys, time
from training.data.index import AnnotationIndex
from training.stats import compute_stats, mapped_categories
path, cache, mode, plots = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
load = os.getloadavg()[0]
t = time.perf_counter()
index = AnnotationIndex.load(path, cache, rebuild=(mode == 'build'))
if mode == 'stats':
    kept = mapped_categories(index, 'coco') or list(range(80))
    stats = compute_stats(index, {'coco': kept})
    if plots:
        from training.plots import plot_stats
        plot_stats(stats, plots)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({'seconds': time.perf_counter() - t, 'cpu_seconds': usage.ru_utime + usage.ru_stime,
                  'load_average': load, 'peak_rss_mib': usage.ru_maxrss / 1024,
                  'images': len(index), 'boxes': index.num_boxes}))
"""


def probe(path: Path, cache: Path, mode: str, plots: str = "") -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(cache), mode, plots], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/o365zoo_stats_bench"))
    parser.add_argument("--skip-build", action="store_true", help="reuse the index in --cache (no cold build)")
    parser.add_argument("--plots", default="", help="also write the figures to this folder")
    args = parser.parse_args()
    rows = [] if args.skip_build else [("index build (cold)", probe(args.json, args.cache, "build"))]
    rows.append(("stats (warm index)", probe(args.json, args.cache, "stats", args.plots)))
    size = args.json.stat().st_size / 2**20
    report("bench_stats", ["step", "seconds", "CPU seconds", "load average", "peak RSS MiB", "images", "boxes"],
           [[name, r["seconds"], r["cpu_seconds"], r["load_average"], r["peak_rss_mib"], r["images"], r["boxes"]]
            for name, r in rows],
           {"json": str(args.json), "json_mib": size, "targets": {"seconds": 60, "peak_rss_mib": 3072}})


if __name__ == "__main__":
    main()
