"""``python -m training diagnose`` at the Objects365 val shape: seconds and peak RSS of the seven-curve breakdown,
against one plain :func:`evaluate_coco` on the same workload. The synthetic ground truth has no supercategories, so
category ``c`` is given supercategory ``c % --supercategories`` (Objects365 has 11).

    python benchmarks/make_o365_eval_workload.py --images 38000 --out /tmp/o365_eval_38k
    nice python benchmarks/bench_diagnose.py /tmp/o365_eval_38k
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import report, workload_parser  # noqa: E402

from training.diagnose import diagnose  # noqa: E402
from training.evaluation.coco import evaluate_coco, load_ground_truth  # noqa: E402


def main() -> None:
    parser = workload_parser(__doc__)
    parser.add_argument("--supercategories", type=int, default=11)
    args = parser.parse_args()
    gt = json.loads((args.workload / "gt.json").read_text())
    for c in gt["categories"]:
        c["supercategory"] = f"super_{c['id'] % args.supercategories}"
    dets = str(args.workload / "detections.npy")
    start = time.perf_counter()
    plain = evaluate_coco(load_ground_truth(gt), dets).stats["AP"]
    t_eval = time.perf_counter() - start
    start = time.perf_counter()
    result = diagnose(gt, dets)
    t_diag = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report("bench_diagnose", ["step", "seconds"], [["evaluate_coco (AP, 10 IoUs)", t_eval],
                                                  ["diagnose (7 curves)", t_diag]],
           {"workload": str(args.workload), "images": len(gt["images"]), "annotations": len(gt["annotations"]),
            "peak_rss_mib": peak, "AP": plain, "diagnosis": result.ap()})
    print(f"peak RSS {peak:.0f} MiB; {json.dumps({k: round(v, 4) for k, v in result.ap().items()})}")


if __name__ == "__main__":
    main()
