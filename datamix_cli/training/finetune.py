"""Mixing-aware fine-tuning of split parts.

Training runs head -> mix -> cloud -> de-mix -> tail end to end with a fresh
C per group per step, so tail(C⁻¹·cloud(C·head(X))) stays accurate although
the cloud part is not linear.

BatchNorm: during fine-tuning every part is in train mode, so the cloud's
BatchNorm layers normalise with the statistics of *mixtures* (what they will
see in production) and their running statistics move there; the head's see
clean inputs and the tail's de-mixed features. The running statistics are
recomputed for the current weights in one pass under mixing
(:func:`_recalibrate_batchnorm`) before each epoch is scored on the validation
data, so model selection compares weights, not statistics that lag them, and
after the last epoch when there is no validation data. After training all parts
are in eval mode, so each sample is processed independently of the others in
its batch: the cloud may batch groups from many users without changing results.
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
from datamix_cli.training.batches import EpochBatches
from datamix_cli.training.batches import loader as make_loader
from datamix_cli.training.devices import move
from datamix_cli.training.evaluation import predict_mixed
from datamix_cli.training.selection import VALIDATION_SEED, Selection, validation_score
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
    # Model selection (datamix_cli.training.selection): the share of the fine-tuning data held out to pick the
    # epoch that ships, and the epochs without improvement after which training stops (0: never stop early).
    validation: float = 0.1
    patience: int = 3
    # Train the cloud part and the tail only: the head (and its BatchNorm statistics) stay as given, e.g. because
    # the noise was calibrated to its Jacobian (datamix_cli.privacy.calibration).
    freeze_head: bool = False

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
        if not 0 <= self.validation < 0.5:
            raise ConfigError(f"--validation must be in [0, 0.5), got {self.validation}")
        if self.patience < 0:
            raise ConfigError(f"--patience must be >= 0, got {self.patience}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {self.workers}")


def _set_train(parts, mode: bool, freeze_head: bool = False) -> None:
    for part in (parts.head, parts.cloud, parts.tail):
        part.train(mode and not (freeze_head and part is parts.head))


def _trained_parts(parts, config: FinetuneConfig) -> tuple:
    return (parts.cloud, parts.tail) if config.freeze_head else (parts.head, parts.cloud, parts.tail)


@dataclass(frozen=True)
class Finetuned:
    """What fine-tuning did: per-epoch figures, which epoch's weights the parts now hold, and why."""

    history: list[dict]
    shipped_epoch: int  # 0: no epoch ran, the parts are unchanged
    stopped: str


def finetune(
    parts,
    x,
    y: np.ndarray,
    mixing: MixingConfig,
    config: FinetuneConfig,
    on_step: Callable[[int, int, float, float], None] | None = None,
    world=None,
    validation: tuple | None = None,
    teacher=None,
) -> Finetuned:
    """Train the parts in place; ``on_step(step, total, loss, acc)`` reports progress.

    ``x`` is an array or lazily read samples; batches stream through a
    DataLoader. The targets (the original parts' cloud outputs for feature
    matching, their logits for distillation) come from a frozen copy of the
    parts made before the first update, batch by batch, so memory does not
    grow with the data. Under torchrun (``world``) the parts train as one
    DistributedDataParallel module on this rank's shard. With ``validation``
    (x, y) the best epoch on it ships and training stops once it stops
    improving (:mod:`datamix_cli.training.selection`); without, the last epoch ships. ``teacher``
    (frozen parts, e.g. the split before a bottleneck was put in) gives the targets instead of a copy of ``parts``;
    with a bottleneck the decoded code is also matched to the teacher's features at the cut.
    """
    from datamix_cli.training.distributed import World

    world = world or World()
    config.validate(mixing.k)
    run = _Run.start(parts, x, y, mixing, config, world, teacher)
    selection = Selection(config.patience)
    history, epoch = [], 0
    _set_train(parts, True, config.freeze_head)
    try:
        for epoch in range(1, config.epochs + 1):
            record = {"epoch": epoch, **run.epoch(epoch - 1, on_step)}
            if validation is not None:
                # Eval mode uses the running statistics, which lag the weights (momentum 0.01 in torchvision's
                # MobileNetV3): without recomputing them the score ranks stale statistics, not the epoch's weights.
                run.recalibrate()
                accuracy, loss = _validate(parts, validation, mixing, run.device, config.freeze_head)
                record.update(validation_accuracy=accuracy, validation_loss=loss)
                selection.update(epoch, accuracy, loss, run.snapshot)
            history.append(record)
            if selection.converged:
                break
        if validation is not None and selection.state is not None:
            run.joint.load_state_dict(selection.state)  # with the statistics recomputed for its weights
        elif config.epochs:
            run.recalibrate()
    finally:
        _set_train(parts, False)
        move(run.home, run.joint)  # back where the caller had them
    if validation is None:
        return Finetuned(history, epoch, f"epoch {epoch} shipped: the last one (no validation data)" if epoch else "not fine-tuned (--epochs 0)")
    return Finetuned(history, selection.best_epoch, selection.reason(epoch, config.epochs) if epoch else "not fine-tuned (--epochs 0)")


def _validate(parts, validation: tuple, mixing: MixingConfig, device, freeze_head: bool = False) -> tuple[float, float]:
    """Validation accuracy and loss under the protocol, in eval mode, with the same C every epoch."""
    x, y = validation
    _set_train(parts, False)
    try:
        logits = predict_mixed(parts, x, x[:0], mixing, VALIDATION_SEED, device=str(device))
    finally:
        _set_train(parts, True, freeze_head)
    return validation_score(logits, y)


@dataclass
class _Run:
    """The state of one fine-tuning run: the joint module (DDP-wrapped under torchrun), the frozen targets, the
    optimiser and schedule, the batches and this rank's C stream."""

    config: FinetuneConfig
    mixing: MixingConfig
    world: object
    joint: torch.nn.Module
    model: torch.nn.Module
    frozen: object
    optimizer: torch.optim.Optimizer
    schedule: object
    batches: EpochBatches
    loader: object
    scale: torch.Tensor | None
    cut_scale: torch.Tensor | None  # with a bottleneck: the unit of matching the decoded code to the cut's features
    adversary: Adversary | None
    rng: np.random.Generator
    generator: torch.Generator
    device: torch.device
    home: torch.device
    total: int
    step: int = 0
    first_loss: float | None = None

    @classmethod
    def start(cls, parts, x, y, mixing: MixingConfig, config: FinetuneConfig, world, teacher=None) -> "_Run":
        from datamix_cli.training.distributed import check_batches, shared_seed

        per_rank = check_batches(world, config.batch_size, mixing.k, len(y)) if world.distributed else config.batch_size
        seed = None if config.seed is None else config.seed + world.rank
        rng = coefficient_rng(seed)  # this rank's C: its own stream, from OS entropy unless seeded
        if seed is not None:  # torch's own random layers (Dropout in torchvision's classifiers) draw from the global generator
            torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        params = [p for part in _trained_parts(parts, config) for p in part.parameters()]
        unique = list({id(p): p for p in params}.values())
        device, home = torch.device(config.device), unique[0].device
        frozen = None
        if config.distill or config.feature_match:
            frozen = teacher if teacher is not None else frozen_copy(parts)
        joint = MixedModel(parts, mixing)
        move(device, joint, frozen)
        model = joint
        if world.distributed:
            model = torch.nn.parallel.DistributedDataParallel(joint, device_ids=[device] if device.type == "cuda" else None)
        if config.optimizer == OptimizerName.sgd:
            optimizer = torch.optim.SGD(unique, lr=config.lr, momentum=0.9, weight_decay=5e-4)
        else:
            optimizer = torch.optim.Adam(unique, lr=config.lr)
        batches = EpochBatches(len(y), per_rank, mixing.k, shared_seed(world, config.seed), world)
        total = max(1, config.epochs * len(batches))
        # Cosine over the largest number of steps: when validation stops training early the rate is still mid-way,
        # and the best epoch (not the last) is what ships.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
        loader = make_loader(x, y, batches, config, device)
        scale, cut_scale = _feature_scales(frozen, x, device, hasattr(parts.cloud, "decoder")) if config.feature_match else (None, None)
        adversary = Adversary(parts, x, mixing.k, device, config.seed) if config.adversarial else None
        return cls(config, mixing, world, joint, model, frozen, optimizer, schedule, batches, loader, scale, cut_scale, adversary, rng,
                   generator, device, home, total)

    def recalibrate(self) -> None:
        """The BatchNorm statistics recomputed for the current weights; under torchrun rank 0's, so every rank
        scores (and stops) alike."""
        _recalibrate_batchnorm(self.joint, self.loader, self.rng, self.mixing, self.device, self.generator, self.config.bf16, self.config.freeze_head)
        if self.world.distributed:
            import torch.distributed as dist

            for module in self.joint.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                    for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                        dist.broadcast(buffer, src=0)

    def snapshot(self) -> dict:
        return {name: tensor.detach().clone() for name, tensor in self.joint.state_dict().items()}

    def epoch(self, index: int, on_step) -> dict:
        """One pass over this rank's batches: mean loss and train accuracy."""
        self.batches.set_epoch(index)
        seen, loss_sum, correct = 0, 0.0, 0
        for xb, labels, error in self.loader:
            if error is not None:
                raise error
            xb, labels = xb.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            value, logits = self.train_step(xb, labels)
            seen += len(labels)
            loss_sum += value * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            if on_step:
                on_step(self.step, self.total, loss_sum / seen, correct / seen)
        return {"loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}

    def train_step(self, xb: torch.Tensor, labels: torch.Tensor) -> tuple[float, torch.Tensor]:
        from datamix_cli.training.distributed import mean_across

        config = self.config
        # C is drawn on the CPU (the CSPRNG) and only then moved to the device.
        c = torch.from_numpy(draw_batch(self.rng, self.mixing, len(labels) // self.mixing.k)).float().to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.bf16):
            z, logits, sent = self.model(xb, c, self.generator)
            target = teacher_logits = None
            if self.frozen is not None:
                with torch.no_grad():
                    target = self.frozen.cloud(self.frozen.head(xb))
                    teacher_logits = self.frozen.tail(target) if config.distill else None
        loss = self.loss(z.float(), logits.float(), labels, target, teacher_logits, sent, xb, c)
        value = mean_across(self.world, loss.item(), self.device)  # every rank stops together
        self.first_loss = _check_divergence(value, self.first_loss, self.step, self.total, config.lr)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        if self.adversary is not None:
            self.adversary.step(sent.detach().float(), xb, c)
        self.step += 1
        return value, logits

    def loss(self, z, logits, labels, target, teacher_logits, sent, xb, c) -> torch.Tensor:
        """Cross-entropy, plus distillation, feature matching and the adversarial term as configured."""
        config = self.config
        loss = F.cross_entropy(logits, labels)
        if config.distill:
            t = config.temperature
            soft = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(teacher_logits.float() / t, 1), reduction="batchmean")
            loss = (1 - config.distill) * loss + config.distill * soft * t * t
        if config.feature_match:
            loss = loss + config.feature_match * F.mse_loss(z, target.float()) / self.scale
            if self.cut_scale is not None:  # the bottleneck's code, decoded, against the cut's original features
                with torch.no_grad():
                    cut = self.frozen.head(xb).float()
                decoded = self.joint.cloud.decoder(self.joint.head(xb))
                loss = loss + config.feature_match * F.mse_loss(decoded.float(), cut) / self.cut_scale
        if self.adversary is not None:
            loss = loss + config.adversarial * self.adversary.privacy_loss(sent.float(), xb, c)
        return loss


BN_CALIBRATION_BATCHES = 200  # at most this many batches re-estimate the BatchNorm statistics


@torch.no_grad()
def _recalibrate_batchnorm(joint, loader, rng, mixing: MixingConfig, device, generator, bf16: bool, freeze_head: bool = False) -> None:
    """Recompute every BatchNorm's running statistics for the current weights, under mixing.

    During training the running statistics are a moving average over weights
    that kept changing; with a slow momentum (torchvision's MobileNetV3 and
    EfficientNet use 0.01) they lag far behind after a few hundred steps and
    the eval-mode model collapses. One pass over the training batches (at most
    ``BN_CALIBRATION_BATCHES``), in train mode, head → mix → cloud → de-mix →
    tail with fresh C, gives each layer the exact average of what it sees in
    production: the head clean inputs, the cloud mixtures, the tail de-mixed features.
    """
    frozen = {id(m) for m in joint.head.modules()} if freeze_head else set()
    norms = [m for m in joint.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in frozen]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    joint.train()
    joint.head.train(not freeze_head)
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


def frozen_copy(parts):
    """A deep copy of the parts in eval mode with no gradients: fine-tuning's fixed targets."""
    import copy
    import warnings

    with warnings.catch_warnings():  # deep-copying fx graphs warns about pytree internals in torch 2.13
        warnings.simplefilter("ignore", FutureWarning)
        frozen = copy.deepcopy(parts)
    _set_train(frozen, False)
    for p in (q for part in (frozen.head, frozen.cloud, frozen.tail) for q in part.parameters()):
        p.requires_grad_(False)
    return frozen


@torch.no_grad()
def _feature_scales(frozen, x, device, at_cut: bool, n: int = 512) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Feature matching's units, on the first ``n`` training samples: the variance of the original cloud outputs,
    and (``at_cut``: with a bottleneck) of the original cut's features."""
    sample = torch.from_numpy(np.ascontiguousarray(x[: min(n, len(x))], dtype=np.float32)).to(device)
    cut = frozen.head(sample).float()
    scale = frozen.cloud(cut).float().var().clamp_min(1e-12)
    return scale, cut.var().clamp_min(1e-12) if at_cut else None


def _check_divergence(value: float, first_loss: float | None, step: int, total: int, lr: float) -> float:
    """Stop on a NaN/Inf or exploding loss; returns the first step's loss, the yardstick."""
    first_loss = value if first_loss is None else first_loss
    if not np.isfinite(value) or value > DIVERGENCE_FACTOR * max(first_loss, 1.0):
        raise TrainingDivergedError(
            f"fine-tuning diverged at step {step + 1}/{total}: loss {value:.3g} (first step {first_loss:.3g}); "
            f"lower --lr (now {lr:g}) or check the data and the model's weights"
        )
    return first_loss


