"""What every command line of the project shares: ``--debug``, the download flags, and the one mapping of expected
failures to one line on stderr (what failed, the file or URL, and the fix) with exit status 2.

An expected failure is the user's to fix (network, cache, disk, names, files, optional packages, argument values);
anything else is a bug and shows its traceback. ``--debug`` shows the traceback of every failure.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from . import hub

# module -> (what pip installs, the extras of pyproject.toml that hold it)
OPTIONAL_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch", ("torch", "serving", "training", "export")),
    "torchvision": ("torchvision", ("torch", "serving", "training", "export")),
    "onnxruntime": ("onnxruntime", ("serving-onnx", "export", "serving")),
    "onnx": ("onnx", ("export",)),
    "openvino": ("openvino", ("export", "serving")),
    "tritonclient": ("tritonclient[all]", ("export", "serving")),
    "fastapi": ("fastapi", ("serving", "serving-onnx")),
    "uvicorn": ("uvicorn[standard]", ("serving", "serving-onnx")),
    "multipart": ("python-multipart", ("serving", "serving-onnx")),
    "prometheus_client": ("prometheus-client", ("serving", "serving-onnx")),
    "pydantic_settings": ("pydantic-settings", ("serving", "serving-onnx")),
    "faster_coco_eval": ("faster-coco-eval", ("training",)),
    "pycocotools": ("pycocotools", ("training",)),
    "tensorboard": ("tensorboard", ("training",)),
    "transformers": ("transformers", ("detr",)),
}
_MIRROR_FIX = f"--mirror URL or ${hub.MIRROR_ENV}"


class Parser(argparse.ArgumentParser):
    """argparse with ``--debug`` on every (sub)command and a one-line error for bad arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of a failure instead of its one-line message")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_download_flags(parser: argparse.ArgumentParser) -> None:
    """``--mirror`` and ``--offline`` (None when not given: the environment decides)."""
    parser.add_argument("--mirror", help=f"base URL replacing the source's origin (or set {hub.MIRROR_ENV})")
    parser.add_argument("--offline", action="store_const", const=True,
                        help=f"never download: use the cache or fail at once (or set {hub.OFFLINE_ENV}=1)")


def use_download_flags(mirror: str | None, offline: bool | None) -> None:
    """Make ``--mirror`` and ``--offline`` the process's settings: every download under the command honours them."""
    if mirror:
        os.environ[hub.MIRROR_ENV] = mirror
    if offline:
        os.environ[hub.OFFLINE_ENV] = "1"


def describe(exc: BaseException, expected: tuple[type[BaseException], ...] = (), extra: str | None = None
             ) -> str | None:
    """The one line of an expected failure (``expected``: the command's own kinds besides the common ones), None
    for anything else; ``extra`` is the command's own extra, named when a missing module is in several."""
    if isinstance(exc, hub.OfflineError):
        return f"{exc}; copy the file there from a machine that has it, or allow downloads (no --offline)"
    if isinstance(exc, hub.DownloadError):
        there = f", or copy the file to {exc.path} and add --offline" if exc.path else ""
        return f"{_one_line(exc)}; check the network, or download from a mirror ({_MIRROR_FIX}){there}"
    if isinstance(exc, hub.ChecksumError):
        return (f"{exc}; the file is not the published one: download it again, from another mirror if this one "
                f"serves other bytes ({_MIRROR_FIX})")
    if isinstance(exc, ImportError):
        return _missing_module(exc, extra)
    if isinstance(exc, OSError):
        if exc.filename is not None:
            space = "; free some space or choose another folder" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            return f"{exc.strerror}: {exc.filename}{space}"
        return _one_line(exc.strerror if exc.strerror else exc)
    if isinstance(exc, KeyError):
        return f"KeyError: {exc}"
    if isinstance(exc, (hub.HubError, LookupError, ValueError, *expected)):
        return _one_line(exc)
    return None


def run_cli(prog: str, action: Callable[[], int | None], *, debug: bool = False,
            expected: tuple[type[BaseException], ...] = (), extra: str | None = None) -> int:
    """``action()``'s exit status; an expected failure (:func:`describe`) prints ``prog: <one line>`` on stderr
    and returns 2, unless ``debug``, which lets it (as every other exception) raise with its traceback."""
    try:
        return int(action() or 0)
    except Exception as exc:
        line = None if debug else describe(exc, expected, extra)
        if line is None:
            raise
        print(f"{prog}: {line}", file=sys.stderr)
        return 2


def _missing_module(exc: ImportError, extra: str | None) -> str | None:
    module = (exc.name or "").split(".")[0]
    if module not in OPTIONAL_MODULES:
        return None
    package, extras = OPTIONAL_MODULES[module]
    chosen = extra if extra in extras else extras[0]
    return f'{package} is not installed (module {module}): pip install -e ".[{chosen}]" (or pip install {package})'


def _one_line(text: object) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
