"""Cold import time of `zoo` and wall time of `zoo list`, each in a fresh interpreter (median of repeats).

    python benchmarks/bench_zoo_import.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from _common import median_time, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cases = {
        "python -c pass (interpreter baseline)": [sys.executable, "-c", "pass"],
        "import zoo": [sys.executable, "-c", "import zoo"],
        "import zoo; zoo.list_models()": [sys.executable, "-c", "import zoo; zoo.list_models()"],
        "zoo list": [sys.executable, "-m", "zoo", "list"],
        "import torch (for comparison)": [sys.executable, "-c", "import torch"],
    }
    rows = []
    for label, cmd in cases.items():
        med, times = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), args.repeats)
        rows.append((label, med * 1000, min(times) * 1000))
    report("zoo_import", ["command", "median ms", "min ms"], rows, {"repeats": args.repeats})


if __name__ == "__main__":
    main()
