"""The paper's transfer experiment (Fig. 1) at small scale: yolox_nano_coco finetuned on the NEON tree crowns as
backbone+head, backbone only and from scratch with one schedule; held-out AP / AP50 at each iteration count
(:mod:`training.transfer_experiment`). Prints the table, writes benchmarks/results/bench_transfer.json and the plot
benchmarks/results/bench_transfer.png; ``--weights`` also saves the backbone+head model.

    nice python benchmarks/bench_transfer.py --jobs 3   # [--checkpoints 0 100 200 400 800] [--batch 4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, report  # noqa: E402

from training.demo import MODEL_NAME, load_tile  # noqa: E402
from training.demo_data import HELDOUT_TILE, TRAIN_TILES, ensure_demo_data  # noqa: E402
from training.transfer_experiment import WAYS, Schedule, plot_curves, run, save_weights  # noqa: E402
from zoo.registry import get_spec  # noqa: E402


def shipped_ap50() -> float:
    """The held-out AP50 in the shipped tree model's registry entry (the same protocol)."""
    return next(m.value for m in get_spec(MODEL_NAME).metrics if m.name == "AP50" and m.of_these_weights)


def main(argv: list[str] | None = None) -> int:
    default = Schedule()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", type=int, nargs="+", default=list(default.checkpoints))
    p.add_argument("--batch", type=int, default=default.batch)
    p.add_argument("--window", type=int, default=default.window)
    p.add_argument("--lr", type=float, default=default.lr)
    p.add_argument("--seed", type=int, default=default.seed)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jobs", type=int, default=1, help="train the three ways in parallel worker processes at one "
                                                       "thread each (same seed and windows per way)")
    p.add_argument("--weights", type=Path, default=None, help="save the trained backbone+head model here")
    p.add_argument("--name", default="yolox_nano_neon_trees", help="model name written into --weights")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    schedule = Schedule(checkpoints=tuple(sorted(set(args.checkpoints))), batch=args.batch, window=args.window,
                        lr=args.lr, warmup=default.warmup, seed=args.seed)
    data = ensure_demo_data()
    train_tiles = [load_tile(data, s) for s in TRAIN_TILES]
    heldout = load_tile(data, HELDOUT_TILE)
    t0 = time.perf_counter()
    result, models = run(train_tiles, heldout, schedule, jobs=args.jobs)
    minutes = round((time.perf_counter() - t0) / 60, 1)
    reference = (MODEL_NAME, shipped_ap50())
    command = "python benchmarks/bench_transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = result["rows"]
    table = [[it] + [v for way in WAYS for r in rows if r["way"] == way and r["iteration"] == it
                     for v in (round(r["AP"], 4), round(r["AP50"], 4))]
             for it in schedule.checkpoints]
    columns = ["iterations"] + [f"{way} {m}" for way in WAYS for m in ("AP", "AP50")]
    plot = plot_curves(rows, RESULTS / "bench_transfer.png", reference)
    extra = {"command": command.strip(), "minutes": minutes, "threads": 1 if args.jobs > 1 else args.threads,
             "jobs": args.jobs, "torch": torch.__version__,
             "reference": {"model": reference[0], "AP50": reference[1]}, "plot": plot.name, **result}
    if args.weights is not None:
        final = next(r for r in reversed(rows) if r["way"] == "backbone+head")
        save_weights(models["backbone+head"], args.weights, args.name,
                     {"command": command.strip(), "heldout": {k: final[k] for k in ("AP", "AP50")},
                      "iterations": final["iteration"], "source_class": result["source_class"]})
        extra["weights"] = str(args.weights)
    print(f"tree row from COCO '{result['source_class']}' (mean class probability at the training crowns: "
          f"{result['class_probability_at_train_crowns']}); {minutes} min; reference {reference[0]} AP50 "
          f"{reference[1]}")
    report("bench_transfer", columns, table, extra)
    print(f"wrote {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
