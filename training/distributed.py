"""Process-group setup for ``torchrun`` (NCCL on GPU, gloo on CPU) and the collectives training and evaluation use;
every collective is a no-op when no process group (of more than one rank) is initialised."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> Context:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in the
    environment); without those variables, a single process. ``device``: "cpu", "cuda" or None (cuda if present)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for but no CUDA device is available")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return Context(rank, world, local_rank, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, and when not distributed."""
    return not is_distributed() or dist.get_rank() == 0


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over processes (in place when distributed)."""
    if is_distributed():
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Maximum of ``values`` over processes (in place when distributed)."""
    if is_distributed():
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over processes in place (e.g. a confusion matrix) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable) in rank order, on every process; ``[obj]`` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_list(items: list[Any]) -> list[Any]:
    """Concatenation of every process's list, in rank order (e.g. COCO result dicts)."""
    return [x for part in gather_objects(items) for x in part]


def gather_dict(items: dict[K, V]) -> dict[K, V]:
    """Union of every process's dict keyed by e.g. image id: samples that DistributedSampler repeats to pad the last
    batch collapse into one entry instead of being evaluated twice."""
    merged: dict[K, V] = {}
    for part in gather_objects(items):
        merged.update(part)
    return merged
