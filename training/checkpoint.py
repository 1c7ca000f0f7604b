"""Training checkpoints: everything an exact resume needs, written atomically, read with ``weights_only=True``.

Contents: model, optimizer, scheduler, grad scaler, iteration, recipe, and each process's RNG states (torch CPU,
CUDA, numpy, Python ``random``), stored as tensors and plain containers so the safe unpickler accepts them, and the
sha256 of all that content, verified on load: a bit flip anywhere in what loads back is refused. Saving keeps the
checkpoint it replaces beside it (``last.pt`` -> ``last.previous.pt``), the fallback of :func:`load_latest`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.atomic import atomic_write

log = logging.getLogger(__name__)

CHECKSUM = "sha256"  # the key that holds content_sha256 of the rest


class CheckpointError(RuntimeError):
    """A training checkpoint cannot be read, or its content does not match its checksum."""


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    if not isinstance(numpy_state, tuple):  # the legacy tuple of MT19937, np.random's only global generator
        raise CheckpointError(f"numpy's global RNG state is not MT19937's tuple: {type(numpy_state).__name__}")
    kind, keys, pos, has_gauss, cached = numpy_state
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def content_sha256(state: Any) -> str:
    """sha256 of a checkpoint's content: tensors by dtype, shape and bytes, containers and plain values by type and
    value (what ``weights_only`` loading gives back, compared as loaded)."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        digest.update(f"dict {len(obj)};".encode())
        for key, value in obj.items():
            _feed(digest, key)
            _feed(digest, value)
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{type(obj).__name__} {len(obj)};".encode())
        for value in obj:
            _feed(digest, value)
    else:
        digest.update(f"{type(obj).__name__} {obj!r};".encode())


def previous_path(path: str | Path) -> Path:
    """Where :func:`save` keeps the checkpoint it replaces: ``last.pt`` -> ``last.previous.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` ``state`` and its :func:`content_sha256` atomically (``zoo.atomic``); the checkpoint it
    replaces becomes :func:`previous_path`."""
    path = Path(path)
    with atomic_write(path) as f:
        torch.save({**state, CHECKSUM: content_sha256(state)}, f)
        if path.is_file():
            os.replace(path, previous_path(path))
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint and verify its checksum; :class:`CheckpointError` names the file and what is wrong with
    it. A checkpoint written before checksums were recorded loads with a warning."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a missing, truncated or foreign file: say which and why
        reason = next(iter(str(exc).strip().splitlines()), type(exc).__name__)
        raise CheckpointError(f"{path}: not a readable training checkpoint ({reason})") from None
    if not isinstance(state, dict) or "iteration" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (expected a dict with an 'iteration')")
    expected = state.pop(CHECKSUM, None)
    if expected is None:
        log.warning("%s has no checksum (written before checksums were recorded): not verified", path)
    elif (actual := content_sha256(state)) != expected:
        raise CheckpointError(f"{path}: content sha256 {actual} does not match the {expected} recorded when it was "
                              "written (corrupted on disk)")
    return state


def load_latest(path: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The checkpoint to resume from: ``path``, or when it is missing or does not verify, :func:`previous_path`
    (with a warning). None when neither exists; :class:`CheckpointError` when none verifies."""
    path = Path(path)
    if not path.is_file() and not previous_path(path).is_file():
        return None
    problems = []
    for candidate in (path, previous_path(path)):
        try:
            state = load(candidate)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if problems:
            log.warning("%s; resuming from the previous checkpoint %s", "; ".join(problems), candidate)
        return state, candidate
    raise CheckpointError("no checkpoint to resume from verifies: " + "; ".join(problems))
