"""Quantization-aware fine-tuning: the int8 edge parts' rounding simulated in the head and the tail.

Post-training quantization rounds the head's features before they are mixed, and the cloud is not linear, so
de-mixing does not cancel that rounding: on a MobileNetV3 split the int8 edge chain agreed with PyTorch on only
95-99 % of held-out inputs. Fine-tuning with the rounding in the loop (``split --qat-epochs N``) trains the parts
to tolerate it. Measured there, it did not raise that agreement (docs/split.md): the int8 chains' accuracy was
already within a point of the fp32 parts', their disagreements near ties, so it is off by default.

:func:`fake_quantized` puts fake quantization (rounding in the forward pass, straight-through gradients) where the
int8 exporters quantize, in the head and the tail only; the cloud, mixing and de-mixing stay fp32:

* every convolution's and linear layer's weight, symmetric int8 per output channel, the scale from the weight's
  own range each step (per channel, this equals quantizing the weight with its batch norm folded in);
* every convolution's and linear layer's input, and the head's output (the features that are mixed), affine
  uint8 per tensor over a range tracked as a moving average of the batch's minimum and maximum (held in eval
  mode), including zero, as onnxruntime's and litert-torch's activation quantizers do.

The exporters then calibrate their own ranges on the fine-tuned fp32 weights; the simulation approximates the
exported rounding, it does not reproduce it bit for bit (batch norms that follow a convolution are folded at export,
adds and pooling are not simulated), so the export still checks the chain's agreement.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.utils import parametrize

RANGE_MOMENTUM = 0.01  # torch.ao's moving-average observers' default
_WEIGHTED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


class _WeightFakeQuant(torch.nn.Module):
    """Symmetric int8 per output channel, levels -127..127 (onnxruntime's and TFLite's symmetric weights)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        flat = weight.detach().reshape(len(weight), -1)
        scale = (flat.abs().amax(1) / 127).clamp_min(1e-12).float()
        zero = torch.zeros(len(weight), dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight.float(), scale, zero, 0, -127, 127).to(weight.dtype)


class ActivationFakeQuant:
    """Affine uint8 over a tracked range: updated from each batch in training mode, held in eval mode."""

    def __init__(self, momentum: float = RANGE_MOMENTUM):
        self.momentum, self.low, self.high = momentum, None, None

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not x.is_floating_point() or x.numel() == 0:
            return x
        if training or self.low is None:
            low, high = x.detach().min().float().clamp(max=0), x.detach().max().float().clamp(min=0)
            if self.low is None:
                self.low, self.high = low, high
            else:
                self.low = self.low + self.momentum * (low - self.low)
                self.high = self.high + self.momentum * (high - self.high)
        span = (self.high - self.low).clamp_min(1e-8)
        scale = span / 255
        zero = torch.round(-self.low / scale).clamp(0, 255).int()
        return torch.fake_quantize_per_tensor_affine(x.float(), scale.to(x.device), zero.to(x.device), 0, 255).to(x.dtype)


@contextlib.contextmanager
def fake_quantized(*parts: torch.nn.Module):
    """Within the block, ``parts`` compute with int8 rounding simulated (see the module docstring); on leaving,
    the hooks and parametrizations are removed and the (fine-tuned) fp32 weights stay in place."""
    handles, weighted = [], []
    try:
        for part in parts:
            for module in part.modules():
                if isinstance(module, _WEIGHTED):
                    parametrize.register_parametrization(module, "weight", _WeightFakeQuant())
                    weighted.append(module)
                    handles.append(module.register_forward_pre_hook(_input_hook(ActivationFakeQuant())))
        if parts:
            handles.append(parts[0].register_forward_hook(_output_hook(ActivationFakeQuant())))  # the head's features
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module in weighted:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


def _input_hook(quant: ActivationFakeQuant):
    return lambda module, args: (quant(args[0], module.training), *args[1:])


def _output_hook(quant: ActivationFakeQuant):
    return lambda module, args, output: quant(output, module.training) if isinstance(output, torch.Tensor) else output


def check_qat_epochs(epochs: int, formats) -> None:
    """Refuse quantization-aware epochs that are negative, or asked for without an int8 edge format."""
    from datamix_cli.errors import ConfigError

    if epochs < 0:
        raise ConfigError(f"--qat-epochs must be >= 0, got {epochs}")
    if epochs and not any(name.endswith("_int8") for name in formats):
        raise ConfigError("--qat-epochs simulates the int8 parts' rounding: add --edge-precision int8")


QAT_LR_FACTOR = 0.1  # the quantization-aware epochs start from the fine-tuned weights, at a tenth of the rate


def finetune_quantization_aware(parts, x, y, mixing, config, epochs: int, on_step=None, world=None, validation=None, teacher=None):
    """``epochs`` more mixing-aware epochs with :func:`fake_quantized` head and tail, at ``QAT_LR_FACTOR`` of the
    rate; the targets are ``teacher`` or, without one, the fp32 parts as they are now. The best epoch under the
    simulated rounding ships (with ``validation``). Returns :class:`~datamix_cli.training.finetune.Finetuned`."""
    from dataclasses import replace

    from datamix_cli.training.finetune import finetune, frozen_copy

    if teacher is None and (config.distill or config.feature_match):
        teacher = frozen_copy(parts)
    with fake_quantized(parts.head, parts.tail):
        return finetune(parts, x, y, mixing, replace(config, epochs=epochs, lr=config.lr * QAT_LR_FACTOR), on_step, world, validation, teacher)


def chained(first, second):
    """One :class:`~datamix_cli.training.finetune.Finetuned` for the mixing-aware epochs followed by the
    quantization-aware ones: the latter numbered on from the former and marked, the shipped epoch the latter's."""
    from datamix_cli.training.finetune import Finetuned

    offset = len(first.history)
    history = first.history + [{**record, "epoch": offset + record["epoch"], "quantization_aware": True} for record in second.history]
    shipped = offset + second.shipped_epoch if second.shipped_epoch else first.shipped_epoch
    return Finetuned(history, shipped, f"{first.stopped}; then quantization-aware epochs {offset + 1}-{len(history)} (numbered 1-{len(second.history)} here): {second.stopped}")
