"""Fine-tuning on several processes: ``torchrun ... datamix split ...``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process
loads the model and the data, the training set is sharded by a
``DistributedSampler``, gradients are averaged by ``DistributedDataParallel``,
and only rank 0 evaluates, exports and writes the split folder. Every rank
draws its own mixing coefficients from the OS's CSPRNG (``--seed`` gives
rank r the seed ``seed + r``), as separate devices would.

Backend: NCCL when training on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on
the CPU. One node::

    torchrun --standalone --nproc-per-node 4 $(which datamix) split MODEL --data DATA --device cuda --out split/

Several nodes (run on each, ``--node-rank`` 0..N-1, the first node's address)::

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank 0 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 $(which datamix) split MODEL --data DATA --device cuda --out split/

The output folder is written by rank 0, so on several nodes ``--out`` names
a path on the first node (or on shared storage).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from datamix_cli.errors import ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> World:
    """This process's place, from the variables torchrun sets (one process without them)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"bad torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK): {exc}") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local)


def rank_device(device: str, world: World) -> str:
    """Each rank's device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if world.distributed and device == "cuda":
        return f"cuda:{world.local_rank}"
    return device


@contextlib.contextmanager
def process_group(world: World, device: str):
    """Join the torchrun process group for the duration (nothing to do for one process)."""
    if not world.distributed:
        yield
        return
    import torch.distributed as dist

    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_batches(world: World, batch_size: int, k: int, n_train: int) -> int:
    """Each rank's share of a global batch, or one line saying why the world size does not fit."""
    per_rank = batch_size // world.size
    if batch_size % world.size or per_rank % k:
        raise ConfigError(
            f"--batch-size {batch_size} cannot be shared by {world.size} processes in whole groups of k={k}; "
            f"use a multiple of {world.size * k}"
        )
    if n_train // world.size < per_rank:
        raise ConfigError(
            f"{n_train} training samples are too few for {world.size} processes with --batch-size {batch_size}; "
            "use fewer processes or a smaller batch"
        )
    return per_rank


def shared_seed(world: World, seed: int | None) -> int:
    """The data-order seed every rank must agree on: --seed, or rank 0's draw from OS entropy."""
    import numpy as np

    value = seed if seed is not None else int(np.random.default_rng().integers(2**62))
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return int(box[0])


def mean_across(world: World, value: float, device) -> float:
    """The mean of a per-rank scalar over all ranks (the value itself for one process)."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world.size
