"""``python -m training diagnose --pictures`` at the Objects365 val shape: seconds and peak RSS of matching every
image's detections to its ground truth (:func:`training.diagnose.comparisons`, the ranking by errors) and of drawing
the worst images with the contact sheet (:func:`training.diagnose.write_pictures`, grey canvases: the workload has no
photos), after loading the workload once.

    python benchmarks/make_o365_eval_workload.py --images 38000 --out /tmp/o365_eval_38k
    nice python benchmarks/bench_diagnose_pictures.py /tmp/o365_eval_38k
"""
from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import report, workload_parser  # noqa: E402

from training.diagnose import comparisons, write_pictures  # noqa: E402
from training.evaluation.coco import load_detections, load_ground_truth  # noqa: E402


def main() -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--worst", type=int, default=20)
    parser.add_argument("--score-threshold", type=float, default=0.3)
    args = parser.parse_args()
    truth = load_ground_truth(args.workload / "gt.json")
    dt = load_detections(args.workload / "detections.npy", truth)
    start = time.perf_counter()
    found = comparisons(truth, dt, args.score_threshold)
    t_compare = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        written = write_pictures(truth, dt, out, worst=args.worst, score_threshold=args.score_threshold)
        t_pictures = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    totals = {k: sum(getattr(c, k) for c in found.values()) for k in ("tp", "fp", "fn")}
    report("bench_diagnose_pictures", ["step", "seconds"],
           [[f"compare every image ({len(found)} images, score >= {args.score_threshold:g})", t_compare],
            [f"write_pictures (compare again, draw the worst {args.worst}, contact sheet)", t_pictures]],
           {"workload": str(args.workload), "images": len(truth.image_ids), "detections": len(dt.scores),
            "pictures": len(written), "peak_rss_mib": peak, "load_average_1min": os.getloadavg()[0], **totals})
    print(f"peak RSS {peak:.0f} MiB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"TP {totals['tp']}  FP {totals['fp']}  FN {totals['fn']}")


if __name__ == "__main__":
    main()
