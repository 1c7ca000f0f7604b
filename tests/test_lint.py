"""Lint and types as part of the test command: ruff over the repository and mypy over zoo, training, export and
serving (zoo with strict flags, see pyproject.toml), both run from the test virtualenv so that CI and a developer see
the same findings."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root; skips when the tool is not installed (the test extra
    installs it)."""
    probe = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=False,
                           cwd=REPO)
    if probe.returncode != 0:
        pytest.skip(f"{module} is not installed: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=600, check=False)


def test_ruff() -> None:
    result = _run("ruff", "check", "--no-fix", "--output-format", "concise", ".")
    assert result.returncode == 0, f"ruff check . found:\n{result.stdout}{result.stderr}"


def test_mypy() -> None:
    result = _run("mypy", "zoo", "training", "export", "serving")
    assert result.returncode == 0, f"mypy zoo training export serving found:\n{result.stdout}{result.stderr}"
