"""Reading and writing weights safely.

Our weights are safetensors with the spec's metadata; foreign checkpoints (e.g. MMDetection ``.pth``) load with
``torch.load(..., weights_only=True)`` so that a pickle carrying arbitrary objects is refused. Every write goes through
:func:`zoo.atomic.atomic_write`, so an interrupted write never leaves a half file.
"""
from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from .atomic import atomic_write

FORMAT = "objects365-zoo/1"


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs arbitrary Python objects to load; we refuse to unpickle it."""


def save_weights(state_dict: Mapping[str, Any], path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``state_dict`` as safetensors at ``path`` atomically. Metadata values that are not strings are
    stored as JSON."""
    from safetensors.torch import save

    path = Path(path)
    meta = {"format": FORMAT}
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = _canonical_header(save(tensors, metadata=meta))
    with atomic_write(path) as f:
        f.write(data)
    return path


def _canonical_header(data: bytes) -> bytes:
    """The same safetensors bytes with the JSON header's keys sorted: safetensors writes metadata in hash order, so
    equal tensors and metadata would otherwise give files that differ from run to run (and in sha256)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def load_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a safetensors file: ``(state_dict, metadata)``."""
    with _safe_open(path) as f:
        metadata = dict(f.metadata() or {})
        state_dict = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is no dict: keys() lists)
    return state_dict, metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, without reading its tensors."""
    with _safe_open(path) as f:
        return dict(f.metadata() or {})


@contextlib.contextmanager
def _safe_open(path: str | Path) -> Iterator[Any]:
    """``safetensors.safe_open`` whose errors (truncated file, bad header) name the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except SafetensorError as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def load_foreign(path: str | Path) -> Any:
    """Load a foreign PyTorch checkpoint with ``weights_only=True``; refuse pickles that need arbitrary objects."""
    import torch

    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError) as exc:  # torch's zip reader on a truncated file, or an empty one
        reason = next(iter(str(exc).splitlines()), type(exc).__name__)
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or another format: {reason})") from None
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the checkpoint contains Python objects beyond tensors and plain containers "
            f"(loading it would run arbitrary code). Re-save it as a plain state dict or safetensors. ({exc})"
        ) from None


def _numpy_scalar_globals() -> list[Any]:
    """NumPy scalars and dtypes: plain values that training frameworks leave in checkpoint metadata (e.g. a seed
    stored as ``np.int64``). They rebuild a number from bytes and run no code, so they join the allow-list."""
    import numpy as np

    # The callable pickle records for a NumPy scalar (numpy._core.multiarray.scalar in NumPy 2, numpy.core's in 1),
    # read through the public pickle protocol instead of NumPy's private module.
    scalar = cast(tuple[Any, ...], np.int64(0).__reduce__())[0]
    dtype_classes = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "float16",
                                                   "float32", "float64")]
    return [scalar, np.dtype, *dtype_classes]
