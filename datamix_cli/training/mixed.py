"""The mixed forward pass, in torch: head → mix (C per group) → noise → uplink codec → cloud (shuffled across groups and back when
the protocol shuffles) → de-mix by C⁻¹ → tail. Fine-tuning, evaluation and the adversary all run it."""

from __future__ import annotations

import torch

from datamix_cli.protocol.codecs import simulate
from datamix_cli.protocol.mixing import MixingConfig, add_noise, mix


def mixed_forward(parts, x: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """Logits of ``x`` (G·k samples) through head, mix (C per group), cloud, de-mix, tail."""
    return parts.tail(mixed_features(parts, x, c, mixing, generator))


def mixed_features(parts, x: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """De-mixed cloud outputs of ``x``: what the tail receives, with noise and shuffling as configured."""
    return demixed_cloud(parts, sent_mixtures(parts, x, c, mixing, generator), c, mixing, generator)


def sent_mixtures(parts, x: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """What the cloud receives for ``x`` (G·k samples): head features mixed by C per group, plus the protocol's noise."""
    groups, k = c.shape[0], c.shape[1]
    h = parts.head(x)
    m = mix(c.to(h.dtype), h.reshape(groups, k, *h.shape[1:])).reshape(groups * k, *h.shape[1:])
    m = add_noise(mixing, m, lambda shape: torch.randn(shape, generator=generator, dtype=torch.float32).to(m.device, m.dtype))[0]
    return simulate(mixing.uplink_codec, m)  # the codec's rounding, straight-through: what the server decodes


def demixed_cloud(parts, m: torch.Tensor, c: torch.Tensor, mixing: MixingConfig, generator=None) -> torch.Tensor:
    """The cloud on mixtures ``m`` (shuffled across groups and back when the protocol shuffles), de-mixed by C⁻¹."""
    groups, k = c.shape[0], c.shape[1]
    if mixing.shuffle:
        # The cloud sees the batch's mixtures in random order; the edge restores it.
        order = torch.randperm(len(m), generator=generator).to(m.device)
        z_mixed = simulate(mixing.downlink_codec, parts.cloud(m[order]))[torch.argsort(order)]
    else:
        z_mixed = simulate(mixing.downlink_codec, parts.cloud(m))
    z = mix(torch.linalg.inv(c.double()).to(z_mixed.dtype), z_mixed.reshape(groups, k, *z_mixed.shape[1:]))
    return z.reshape(groups * k, *z_mixed.shape[1:])


class MixedModel(torch.nn.Module):
    """head → mix → cloud → de-mix → tail as one module, so DistributedDataParallel can wrap it."""

    def __init__(self, parts, mixing: MixingConfig):
        super().__init__()
        self.head, self.cloud, self.tail, self.mixing = parts.head, parts.cloud, parts.tail, mixing

    def forward(self, x: torch.Tensor, c: torch.Tensor, generator=None):
        """(de-mixed features, logits, what the cloud received)."""
        m = sent_mixtures(self, x, c, self.mixing, generator)
        z = demixed_cloud(self, m, c, self.mixing, generator)
        return z, self.tail(z), m
