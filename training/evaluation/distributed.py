"""Collect evaluation inputs across torch.distributed ranks; every function is a no-op when not initialised."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.distributed as dist

K = TypeVar("K")
V = TypeVar("V")


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, and when not distributed."""
    return not is_distributed() or dist.get_rank() == 0


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable) in rank order, on every rank; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_list(items: list[Any]) -> list[Any]:
    """Concatenation of every rank's list, in rank order (e.g. COCO result dicts)."""
    return [x for part in gather_objects(items) for x in part]


def gather_dict(items: dict[K, V]) -> dict[K, V]:
    """Union of every rank's dict keyed by e.g. image id: samples that DistributedSampler repeats to pad the last
    batch collapse into one entry instead of being evaluated twice."""
    merged: dict[K, V] = {}
    for part in gather_objects(items):
        merged.update(part)
    return merged


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (e.g. a confusion matrix) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
