"""Atomic file writes: a temporary file beside the target, flushed to disk and renamed over it, so that a crash or a
SIGKILL leaves the old file or the new one, never half of one; :func:`atomic_dir` does the same for a folder.

A temporary is named ``.<target>.<pid>.<random>.tmp`` after the process writing it: one whose process has gone (killed
mid-write) is debris, removed before the next write of the same target and by :func:`remove_stale`. Temporaries of
live processes on this machine are left alone.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_TEMP = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", newline: str | None = None) -> Iterator[IO[Any]]:
    """Yield a file open in ``mode`` (``"wb"`` or ``"w"``, with ``newline`` as :func:`open` takes it) whose content
    becomes ``path`` (mode 0644) when the block ends without error; on error the temporary is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` (mode 0755); when the block ends without error it replaces
    ``path`` in one rename (a folder already there is renamed aside first, then removed), on error it is removed and
    ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the rename
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(tmp.name.replace(".partial", ".old"))
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale(folder: str | Path, target: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (those of file ``target``, or all) whose writer is no longer running;
    return their paths."""
    pattern = f".{glob.escape(target) if target else '*'}.*.tmp"
    removed = []
    for tmp in Path(folder).glob(pattern):
        match = _TEMP.fullmatch(tmp.name)
        if match and target in (None, match["target"]) and not _running(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
