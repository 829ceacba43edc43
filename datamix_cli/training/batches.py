"""Batches for fine-tuning: index batches of whole groups of k per epoch (a seeded permutation, or this rank's
DistributedSampler shard under torchrun), read through a DataLoader so image folders stream."""

from __future__ import annotations

import numpy as np
import torch


class Batches(torch.utils.data.Dataset):
    """(x, y) batches for a DataLoader; reads lazily held samples in the worker processes.

    A read error travels back as a message (not an exception, which the
    DataLoader would wrap in a multi-line traceback) and is raised as one line.
    """

    def __init__(self, x, y: np.ndarray):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, indices):
        from datamix_cli.errors import DatamixError

        indices = np.asarray(indices)
        try:
            return torch.from_numpy(np.ascontiguousarray(self.x[indices], dtype=np.float32)), torch.from_numpy(self.y[indices]), None
        except DatamixError as exc:
            return None, None, exc


def _identity(batch):
    return batch


def loader(x, y: np.ndarray, batches, config, device: torch.device):
    workers = config.workers
    if workers is None:  # in-memory arrays need no workers; images are decoded in parallel
        import os

        workers = 0 if isinstance(x, np.ndarray) else min(4, max(1, (os.cpu_count() or 2) - 1))
    return torch.utils.data.DataLoader(
        Batches(x, y), batch_sampler=batches, num_workers=workers, collate_fn=_identity,
        # Pinning pays off only in a worker's background thread; in the main process it is one more copy per batch.
        pin_memory=device.type == "cuda" and workers > 0, persistent_workers=workers > 0,
    )


class EpochBatches:
    """Index batches of one epoch at a time: a seeded permutation, or a DistributedSampler's shard."""

    def __init__(self, n: int, batch: int, k: int, seed: int, world):
        self.n, self.batch, self.k, self.seed, self.world, self.epoch = n, batch, k, seed, world, 0
        if world.distributed:
            self.sampler = torch.utils.data.DistributedSampler(
                range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed, drop_last=True
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if self.world.distributed:
            self.sampler.set_epoch(self.epoch)
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def __iter__(self):
        order = self._order()
        usable = len(order) - len(order) % self.k
        for start in range(0, usable, self.batch):
            yield order[start : min(start + self.batch, usable)].tolist()

    def __len__(self) -> int:
        per_rank = self.n // self.world.size if self.world.distributed else self.n
        return -(-(per_rank - per_rank % self.k) // self.batch)
