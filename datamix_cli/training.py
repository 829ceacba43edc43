"""Mixing-aware fine-tuning and evaluation of split parts.

Training runs head -> mix -> cloud -> de-mix -> tail end to end with a fresh
C per group per step, so tail(C⁻¹·cloud(C·head(X))) stays accurate although
the cloud part is not linear.

BatchNorm: during fine-tuning every part is in train mode, so the cloud's
BatchNorm layers normalise with the statistics of *mixtures* (what they will
see in production) and their running statistics move there; the head's see
clean inputs and the tail's de-mixed features. After training all parts are
in eval mode, so each sample is processed independently of the others in its
batch: the cloud may batch groups from many users without changing results.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from datamix_cli.errors import ConfigError, TrainingDivergedError
from datamix_cli.mixing import MixingConfig, coefficient_rng, draw_batch, mix, pad_with_decoys
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
    seed: int | None = None  # seeds batch order and C for reproducible runs; None draws C from OS entropy
    device: str = "cpu"  # a resolved torch device (datamix_cli.devices.resolve_device)
    bf16: bool = False  # bfloat16 autocast of the forward passes (meant for CUDA)

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


def mixed_forward(parts, x: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """Logits of ``x`` (G·k samples) through head, mix (C per group), cloud, de-mix, tail."""
    return parts.tail(mixed_features(parts, x, c, mixing, generator))


def mixed_features(parts, x: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """De-mixed cloud outputs of ``x``: what the tail receives, with noise and shuffling as configured."""
    groups, k = c.shape[0], c.shape[1]
    h = parts.head(x)
    m = mix(c.to(h.dtype), h.reshape(groups, k, *h.shape[1:])).reshape(groups * k, *h.shape[1:])
    if mixing.noise_sigma:
        m = m + mixing.noise_sigma * torch.randn(m.shape, generator=generator, dtype=torch.float32).to(m.device, m.dtype)
    if mixing.shuffle:
        # The cloud sees the batch's mixtures in random order; the edge restores it.
        order = torch.randperm(len(m), generator=generator).to(m.device)
        z_mixed = parts.cloud(m[order])[torch.argsort(order)]
    else:
        z_mixed = parts.cloud(m)
    z = mix(torch.linalg.inv(c.double()).to(z_mixed.dtype), z_mixed.reshape(groups, k, *z_mixed.shape[1:]))
    return z.reshape(groups * k, *z_mixed.shape[1:])


def _set_train(parts, mode: bool) -> None:
    for part in (parts.head, parts.cloud, parts.tail):
        part.train(mode)


def finetune(
    parts,
    teacher,
    x: np.ndarray,
    y: np.ndarray,
    mixing: MixingConfig,
    config: FinetuneConfig,
    on_step: Callable[[int, int, float, float], None] | None = None,
) -> list[dict]:
    """Train the parts in place; returns per-epoch loss and accuracy. ``on_step(step, total, loss, acc)``."""
    config.validate(mixing.k)
    rng = coefficient_rng(config.seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    params = [p for part in (parts.head, parts.cloud, parts.tail) for p in part.parameters()]
    unique = list({id(p): p for p in params}.values())
    if config.optimizer == OptimizerName.sgd:
        optimizer = torch.optim.SGD(unique, lr=config.lr, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.Adam(unique, lr=config.lr)
    usable = len(y) - len(y) % mixing.k
    steps_per_epoch = -(-usable // config.batch_size)
    total = max(1, config.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    device, home = torch.device(config.device), unique[0].device
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    _to(parts, teacher, device)
    with torch.no_grad():
        teacher_logits = _batched(teacher, xs, device) if config.distill else None
        # Before any update the parts are the original model: their cloud outputs are the target.
        target = _batched(lambda b: parts.cloud(parts.head(b)), xs, device) if config.feature_match else None
        scale = target.var().clamp_min(1e-12).to(device) if target is not None else None
    history, step, first_loss = [], 0, None
    _set_train(parts, True)
    try:
        for epoch in range(config.epochs):
            order = torch.from_numpy(rng.permutation(len(y))[:usable])
            seen, loss_sum, correct = 0, 0.0, 0
            for start in range(0, usable, config.batch_size):
                idx = order[start : start + config.batch_size]
                # C is drawn on the CPU (the CSPRNG) and only then moved to the device.
                c = torch.from_numpy(draw_batch(rng, mixing, len(idx) // mixing.k)).float().to(device)
                labels = ys[idx].to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    z = mixed_features(parts, xs[idx].to(device, non_blocking=True), c, mixing, generator)
                    logits = parts.tail(z)
                z, logits = z.float(), logits.float()
                loss = F.cross_entropy(logits, labels)
                if teacher_logits is not None:
                    t = config.temperature
                    soft = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits[idx].to(device) / t, 1), reduction="batchmean")
                    loss = (1 - config.distill) * loss + config.distill * soft * t * t
                if target is not None:
                    loss = loss + config.feature_match * F.mse_loss(z, target[idx].to(device)) / scale
                first_loss = _check_divergence(loss, first_loss, step, total, config.lr)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == labels).sum().item()
                if on_step:
                    on_step(step, total, loss_sum / seen, correct / seen)
            history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)})
    finally:
        _set_train(parts, False)
        _to(parts, teacher, home)  # back where the caller had them
    return history


def _to(parts, teacher, device) -> None:
    for module in (parts.head, parts.cloud, parts.tail, teacher):
        if isinstance(module, torch.nn.Module):
            module.to(device)


def _batched(fn, xs: torch.Tensor, device, batch: int = 256) -> torch.Tensor:
    """``fn`` over ``xs`` in chunks on ``device``; the result is kept on the CPU."""
    return torch.cat([fn(xs[i : i + batch].to(device)).float().cpu() for i in range(0, len(xs), batch)])


def _check_divergence(loss: torch.Tensor, first_loss: float | None, step: int, total: int, lr: float) -> float:
    """Stop on a NaN/Inf or exploding loss; returns the first step's loss, the yardstick."""
    value = loss.item()
    first_loss = value if first_loss is None else first_loss
    if not np.isfinite(value) or value > DIVERGENCE_FACTOR * max(first_loss, 1.0):
        raise TrainingDivergedError(
            f"fine-tuning diverged at step {step + 1}/{total}: loss {value:.3g} (first step {first_loss:.3g}); "
            f"lower --lr (now {lr:g}) or check the data and the model's weights"
        )
    return first_loss


@torch.no_grad()
def predict_plain(model, x: np.ndarray, batch: int = 256, device: str = "cpu") -> np.ndarray:
    """Logits of a module (or a callable) on ``x`` in batches, as NumPy."""
    return np.concatenate([model(torch.from_numpy(x[i : i + batch]).to(device)).cpu().numpy() for i in range(0, len(x), batch)])


@contextlib.contextmanager
def on_device(parts, model, device: str):
    """Move the parts and the model to ``device`` for training and evaluation, and back to the CPU after."""
    _to(parts, model, torch.device(device))
    try:
        yield
    finally:
        _to(parts, model, torch.device("cpu"))


@torch.no_grad()
def predict_mixed(
    parts, x: np.ndarray, decoys: np.ndarray, mixing: MixingConfig, seed: int | None, groups_per_batch: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Logits of ``x`` under the protocol: groups of k (last one padded with decoys), fresh C each."""
    rng = coefficient_rng(seed)
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    padded, n = pad_with_decoys(x, decoys, mixing.k, rng)
    out, step = [], groups_per_batch * mixing.k
    for start in range(0, len(padded), step):
        chunk = torch.from_numpy(padded[start : start + step]).to(device)
        c = torch.from_numpy(draw_batch(rng, mixing, len(chunk) // mixing.k)).float().to(device)
        out.append(mixed_forward(parts, chunk, c, mixing, generator).cpu().numpy())
    return np.concatenate(out)[:n]


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())
