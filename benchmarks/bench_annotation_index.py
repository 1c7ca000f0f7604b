"""Annotation index vs pycocotools on an Objects365-train-shaped JSON: build time, warm load time, peak RSS, and the
private (unshared) memory a DataLoader worker pays. Each measurement runs in a fresh process.

    python benchmarks/make_o365_train_json.py --images 100000 --out /tmp/o365_100k.json
    nice python benchmarks/bench_annotation_index.py /tmp/o365_100k.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, resource, sys, time
def private_mib():
    with open('/proc/self/smaps_rollup') as f:
        kb = sum(int(l.split()[1]) for l in f if l.startswith(('Private_Clean', 'Private_Dirty')))
    return kb / 1024
def rss_mib():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024
path, mode, cache = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == 'pycocotools':
    import contextlib, io
    from pycocotools.coco import COCO
else:
    from training.data.index import AnnotationIndex
rss0, private0 = rss_mib(), private_mib()  # after imports: the libraries' own footprint is not the index's
t = time.perf_counter()
if mode == 'pycocotools':
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    n = len(coco.anns)
else:
    index = AnnotationIndex.load(path, cache, rebuild=(mode == 'build'))
    n = int(index.boxes.sum(axis=1).shape[0])  # reads (touches) every box page
elapsed = time.perf_counter() - t
print(json.dumps({'seconds': elapsed, 'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  'import_rss_mib': rss0, 'rss_delta_mib': rss_mib() - rss0,
                  'private_delta_mib': private_mib() - private0, 'boxes': n}))
"""


def probe(path: Path, mode: str, cache: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path), mode, str(cache)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/o365zoo_index_bench"))
    parser.add_argument("--skip-pycocotools", action="store_true")
    args = parser.parse_args()
    rows = {"ours: build (cold)": probe(args.json, "build", args.cache),
            "ours: warm load": probe(args.json, "load", args.cache)}
    if not args.skip_pycocotools:
        rows["pycocotools COCO()"] = probe(args.json, "pycocotools", args.cache)
    print(f"{args.json} ({args.json.stat().st_size / 2**20:.0f} MiB, {rows['ours: warm load']['boxes']} boxes)")
    print("seconds exclude imports; RSS/private deltas are measured after the data is loaded and read, relative to "
          "the process after its imports; private = what each extra DataLoader worker would not share")
    print(f"{'':22s} {'seconds':>8s} {'peak RSS':>9s} {'imports RSS':>12s} {'RSS delta':>10s} {'private delta':>14s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['seconds']:8.2f} {r['peak_rss_mib']:9.0f} {r['import_rss_mib']:12.0f} "
              f"{r['rss_delta_mib']:10.0f} {r['private_delta_mib']:14.0f}")
    result = {"json": str(args.json), "json_mib": args.json.stat().st_size / 2**20, "rows": rows}
    if "pycocotools COCO()" in rows:
        result["warm_delta_fraction_of_pycocotools"] = (rows["ours: warm load"]["rss_delta_mib"]
                                                        / rows["pycocotools COCO()"]["rss_delta_mib"])
        print(f"warm-load RSS delta / pycocotools RSS delta = {result['warm_delta_fraction_of_pycocotools']:.3f}")
    out = ROOT / "benchmarks" / "results" / "bench_annotation_index.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
