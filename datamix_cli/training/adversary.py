"""Adversarial privacy fine-tuning (``--adversarial``): a decoder trained against the parts, min-max."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from datamix_cli.protocol.groups import dominant_sources


class Adversary:
    """Adversarial privacy fine-tuning: a decoder (the audit's architecture) trained alongside the parts to
    reconstruct each mixture's dominant input from what the cloud receives, while the parts are trained to raise
    its error (min-max).

    The privacy loss is the decoder's error relative to guessing the batch's mean image, negated and clipped at
    that chance level (-1), so the parts gain nothing by pushing reconstructions past uninformative. The decoder
    exists only during fine-tuning: ``datamix audit`` trains fresh attackers on the exported split and never
    sees this one.
    """

    def __init__(self, parts, x, k: int, device, seed: int | None, lr: float = 2e-3):
        from datamix_cli.privacy.decoders import decoder_network  # the audit's decoder: the same capacity

        sample = torch.from_numpy(np.ascontiguousarray(x[:k], dtype=np.float32)).to(device)
        with torch.no_grad():
            feature_shape = tuple(parts.head(sample).shape[1:])
        if seed is not None:
            torch.manual_seed(seed + 7)
        self.net = decoder_network(feature_shape, tuple(sample.shape[1:])).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def _error(self, m: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the decoder's guess of each mixture's dominant input, over that of the mean image."""
        target = x[dominant_sources(c)]  # C is (G, k, k): the k of what was sent, never a stale copy
        standardised = (m - m.mean()) / (m.std() + 1e-6)
        chance = F.mse_loss(target.mean(dim=0, keepdim=True).expand_as(target), target)
        return F.mse_loss(self.net(standardised), target) / chance.clamp_min(1e-8)

    def privacy_loss(self, m: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return -self._error(m, x, c).clamp(max=1.0)

    def step(self, m: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> None:
        loss = self._error(m, x, c)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
