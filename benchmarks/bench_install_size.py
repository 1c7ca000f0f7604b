"""Installed size of a fresh virtualenv per extra: ``pip install -e ".[EXTRA]"`` into a new venv, then the folder's
size on disk and whether torch is in it. Needs PyPI (pip's cache makes repeated runs fast).

    python benchmarks/bench_install_size.py [--extras serving-onnx serving]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def measure(extra: str) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        started = time.perf_counter()
        subprocess.run([python, "-m", "pip", "install", "-q", "-e", f"{REPO}[{extra}]"], check=True)
        seconds = time.perf_counter() - started
        has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, check=False).returncode == 0
        return extra, round(folder_size(venv) / 2**20), has_torch, round(seconds, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", nargs="+", default=["serving-onnx", "serving"])
    args = parser.parse_args()
    rows = []
    for extra in args.extras:
        print(f"installing [{extra}] into a fresh virtualenv ...", flush=True)
        rows.append(measure(extra))
    report("bench_install_size", ("extra", "installed_MiB", "torch", "install_s"), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
