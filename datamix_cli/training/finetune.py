"""Mixing-aware fine-tuning of split parts.

Training runs head -> mix -> cloud -> de-mix -> tail end to end with a fresh
C per group per step, so tail(C⁻¹·cloud(C·head(X))) stays accurate although
the cloud part is not linear.

BatchNorm: during fine-tuning every part is in train mode, so the cloud's
BatchNorm layers normalise with the statistics of *mixtures* (what they will
see in production) and their running statistics move there; the head's see
clean inputs and the tail's de-mixed features. After the last epoch the
running statistics are recomputed with the final weights in one pass under
mixing (:func:`_recalibrate_batchnorm`). After training all parts are in eval mode, so each sample is processed independently of the others in its
batch: the cloud may batch groups from many users without changing results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from datamix_cli.errors import ConfigError, TrainingDivergedError
from datamix_cli.protocol.mixing import MixingConfig, coefficient_rng, draw_batch
from datamix_cli.training.adversary import Adversary
from datamix_cli.training.devices import move
from datamix_cli.training.mixed import MixedModel
from datamix_cli.options import OptimizerName


DIVERGENCE_FACTOR = 100.0  # a step loss this many times the first step's (or 1) means training blew up


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.adam
    distill: float = 0.0  # weight of distillation to the original model's logits; 0 turns it off
    temperature: float = 2.0
    feature_match: float = 1.0  # weight of matching de-mixed cloud outputs to the original split's; 0 turns it off
    adversarial: float = 0.0  # weight of raising a co-trained decoder's reconstruction error (min-max); 0 turns it off
    seed: int | None = None  # seeds batch order and C for reproducible runs; None draws C from OS entropy
    device: str = "cpu"  # a resolved torch device (datamix_cli.training.devices.resolve_device)
    bf16: bool = False  # bfloat16 autocast of the forward passes (meant for CUDA)
    workers: int | None = None  # DataLoader workers; None: 0 for in-memory arrays, else up to 4

    def validate(self, k: int) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < k or self.batch_size % k:
            raise ConfigError(f"batch size {self.batch_size} must be a positive multiple of k={k}")
        if not 0 <= self.distill <= 1:
            raise ConfigError(f"distillation weight must be in [0, 1], got {self.distill}")
        if not self.feature_match >= 0:
            raise ConfigError(f"feature-match weight must be >= 0, got {self.feature_match}")
        if not self.adversarial >= 0:
            raise ConfigError(f"adversarial weight must be >= 0, got {self.adversarial}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")


def _set_train(parts, mode: bool) -> None:
    for part in (parts.head, parts.cloud, parts.tail):
        part.train(mode)


class _Batches(torch.utils.data.Dataset):
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


def _loader(x, y: np.ndarray, batches, config: "FinetuneConfig", device: torch.device):
    workers = config.workers
    if workers is None:  # in-memory arrays need no workers; images are decoded in parallel
        import os

        workers = 0 if isinstance(x, np.ndarray) else min(4, max(1, (os.cpu_count() or 2) - 1))
    return torch.utils.data.DataLoader(
        _Batches(x, y), batch_sampler=batches, num_workers=workers, collate_fn=_identity,
        # Pinning pays off only in a worker's background thread; in the main process it is one more copy per batch.
        pin_memory=device.type == "cuda" and workers > 0, persistent_workers=workers > 0,
    )


class _EpochBatches:
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


def finetune(
    parts,
    x,
    y: np.ndarray,
    mixing: MixingConfig,
    config: FinetuneConfig,
    on_step: Callable[[int, int, float, float], None] | None = None,
    world=None,
) -> list[dict]:
    """Train the parts in place; returns per-epoch loss and accuracy. ``on_step(step, total, loss, acc)``.

    ``x`` is an array or lazily read samples; batches stream through a
    DataLoader. The targets (the original parts' cloud outputs for feature
    matching, their logits for distillation) come from a frozen copy of the
    parts made before the first update, batch by batch, so memory does not
    grow with the data. Under torchrun (``world``) the parts train as one
    DistributedDataParallel module on this rank's shard.
    """
    import copy
    import warnings

    from datamix_cli.training.distributed import World, check_batches, mean_across, shared_seed

    world = world or World()
    config.validate(mixing.k)
    per_rank = check_batches(world, config.batch_size, mixing.k, len(y)) if world.distributed else config.batch_size
    seed = None if config.seed is None else config.seed + world.rank
    rng = coefficient_rng(seed)  # this rank's C: its own stream, from OS entropy unless seeded
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    params = [p for part in (parts.head, parts.cloud, parts.tail) for p in part.parameters()]
    unique = list({id(p): p for p in params}.values())
    device, home = torch.device(config.device), unique[0].device
    with warnings.catch_warnings():  # deep-copying fx graphs warns about pytree internals in torch 2.13
        warnings.simplefilter("ignore", FutureWarning)
        frozen = copy.deepcopy(parts) if (config.distill or config.feature_match) else None
    joint = MixedModel(parts, mixing)
    move(device, joint, frozen)
    if frozen is not None:
        _set_train(frozen, False)
        for p in (q for part in (frozen.head, frozen.cloud, frozen.tail) for q in part.parameters()):
            p.requires_grad_(False)
    model = joint
    if world.distributed:
        model = torch.nn.parallel.DistributedDataParallel(joint, device_ids=[device] if device.type == "cuda" else None)
    if config.optimizer == OptimizerName.sgd:
        optimizer = torch.optim.SGD(unique, lr=config.lr, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.Adam(unique, lr=config.lr)
    batches = _EpochBatches(len(y), per_rank, mixing.k, shared_seed(world, config.seed), world)
    total = max(1, config.epochs * len(batches))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    loader = _loader(x, y, batches, config, device)
    scale = _feature_scale(frozen, x, device) if config.feature_match else None
    adversary = Adversary(parts, x, mixing.k, device, config.seed) if config.adversarial else None
    history, step, first_loss = [], 0, None
    _set_train(parts, True)
    try:
        for epoch in range(config.epochs):
            batches.set_epoch(epoch)
            seen, loss_sum, correct = 0, 0.0, 0
            for xb, labels, error in loader:
                if error is not None:
                    raise error
                xb, labels = xb.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                # C is drawn on the CPU (the CSPRNG) and only then moved to the device.
                c = torch.from_numpy(draw_batch(rng, mixing, len(labels) // mixing.k)).float().to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    z, logits, sent = model(xb, c, generator)
                    if frozen is not None:
                        with torch.no_grad():
                            target = frozen.cloud(frozen.head(xb))
                            teacher_logits = frozen.tail(target) if config.distill else None
                z, logits = z.float(), logits.float()
                loss = F.cross_entropy(logits, labels)
                if config.distill:
                    t = config.temperature
                    soft = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits.float() / t, 1), reduction="batchmean")
                    loss = (1 - config.distill) * loss + config.distill * soft * t * t
                if config.feature_match:
                    loss = loss + config.feature_match * F.mse_loss(z, target.float()) / scale
                if adversary is not None:
                    loss = loss + config.adversarial * adversary.privacy_loss(sent.float(), xb, c)
                value = mean_across(world, loss.item(), device)  # every rank stops together
                first_loss = _check_divergence(value, first_loss, step, total, config.lr)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                if adversary is not None:
                    adversary.step(sent.detach().float(), xb, c)
                step += 1
                seen += len(labels)
                loss_sum += value * len(labels)
                correct += (logits.argmax(1) == labels).sum().item()
                if on_step:
                    on_step(step, total, loss_sum / seen, correct / seen)
            history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)})
        if config.epochs:
            _recalibrate_batchnorm(joint, loader, rng, mixing, device, generator, config.bf16)
    finally:
        _set_train(parts, False)
        move(home, joint)  # back where the caller had them
    return history


BN_CALIBRATION_BATCHES = 200  # at most this many batches re-estimate the BatchNorm statistics


@torch.no_grad()
def _recalibrate_batchnorm(joint, loader, rng, mixing: MixingConfig, device, generator, bf16: bool) -> None:
    """Recompute every BatchNorm's running statistics with the final weights, under mixing.

    During training the running statistics are a moving average over weights
    that kept changing; with a slow momentum (torchvision's MobileNetV3 and
    EfficientNet use 0.01) they lag far behind after a few hundred steps and
    the eval-mode model collapses. One pass over the training batches (at most
    ``BN_CALIBRATION_BATCHES``), in train mode, head → mix → cloud → de-mix →
    tail with fresh C, gives each layer the exact average of what it sees in
    production: the head clean inputs, the cloud mixtures, the tail de-mixed features.
    """
    norms = [m for m in joint.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    joint.train()
    try:
        for i, (xb, labels, error) in enumerate(loader):
            if error is not None:
                raise error
            if i >= BN_CALIBRATION_BATCHES:
                break
            c = torch.from_numpy(draw_batch(rng, mixing, len(labels) // mixing.k)).float().to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                joint(xb.to(device, non_blocking=True), c, generator)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@torch.no_grad()
def _feature_scale(frozen, x, device, n: int = 512) -> torch.Tensor:
    """Variance of the original cloud outputs on the first ``n`` training samples: feature matching's unit."""
    sample = torch.from_numpy(np.ascontiguousarray(x[: min(n, len(x))], dtype=np.float32)).to(device)
    return frozen.cloud(frozen.head(sample)).float().var().clamp_min(1e-12)


def _check_divergence(value: float, first_loss: float | None, step: int, total: int, lr: float) -> float:
    """Stop on a NaN/Inf or exploding loss; returns the first step's loss, the yardstick."""
    first_loss = value if first_loss is None else first_loss
    if not np.isfinite(value) or value > DIVERGENCE_FACTOR * max(first_loss, 1.0):
        raise TrainingDivergedError(
            f"fine-tuning diverged at step {step + 1}/{total}: loss {value:.3g} (first step {first_loss:.3g}); "
            f"lower --lr (now {lr:g}) or check the data and the model's weights"
        )
    return first_loss


