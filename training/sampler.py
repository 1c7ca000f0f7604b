"""Iteration-based, aspect-ratio grouped batch sampler that is a pure function of ``(seed, iteration)``.

Global batches (``batch_size * world_size`` samples, all landscape or all portrait so padding stays small) are formed
from a per-epoch permutation; rank ``r`` takes slice ``r`` of each. Every sample carries a seed for its random
transforms drawn from ``(seed, iteration)``, so one process with the global batch sees exactly what N processes see
together, and a run resumed at iteration ``k`` continues with the batches an uninterrupted run would have used.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[tuple[int, int]]]):
    def __init__(self, aspect_ratios: np.ndarray | None, num_samples: int, batch_size: int, *, world_size: int = 1,
                 rank: int = 0, seed: int = 0, start_iter: int = 0, max_iter: int | None = None,
                 group: bool = True) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.global_batch = batch_size * world_size
        if group and aspect_ratios is not None:
            self.groups = (np.asarray(aspect_ratios) < 1.0).astype(np.int64)  # 0: landscape/square, 1: portrait
        else:
            self.groups = np.zeros(num_samples, dtype=np.int64)
        counts = np.bincount(self.groups, minlength=2)
        self.batches_per_epoch = int((counts // self.global_batch).sum())
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {self.global_batch} "
                             f"(per group: {counts.tolist()}); lower the batch size")

    def _epoch(self, epoch: int) -> np.ndarray:
        """``[batches_per_epoch, global_batch]`` sample indices of one epoch, in the order they fill up."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        batches, done_at = [], []
        for g in np.unique(self.groups):
            where = np.flatnonzero(self.groups[perm] == g)  # positions in the permutation
            n = len(where) // self.global_batch * self.global_batch
            if n == 0:
                continue
            chunks = where[:n].reshape(-1, self.global_batch)
            batches.append(perm[chunks])
            done_at.append(chunks[:, -1])
        order = np.argsort(np.concatenate(done_at), kind="stable")
        return np.concatenate(batches)[order]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        it = self.start_iter
        epoch, offset = divmod(it, self.batches_per_epoch)
        while self.max_iter is None or it < self.max_iter:
            batches = self._epoch(epoch)
            for batch in batches[offset:]:
                if self.max_iter is not None and it >= self.max_iter:
                    return
                seeds = np.random.SeedSequence([self.seed, it]).generate_state(self.global_batch, dtype=np.uint64)
                lo = self.rank * self.batch_size
                yield [(int(i), int(s >> np.uint64(1))) for i, s in
                       zip(batch[lo:lo + self.batch_size], seeds[lo:lo + self.batch_size])]
                it += 1
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:
        if self.max_iter is None:
            raise TypeError("an unbounded sampler has no length")
        return max(0, self.max_iter - self.start_iter)
