"""The exported edge parts: mixing and de-mixing inside the artifact.

An app hands the head artifact k inputs and C, and the tail artifact the k
cloud outputs and C⁻¹, so it needs no linear algebra of its own beyond
drawing C and inverting it.
"""

from __future__ import annotations

import torch
from torch import nn

from datamix_cli.protocol.mixing import demix, mix


class HeadWithMix(nn.Module):
    """x[k, ...], C[k, k] -> mixtures C·head(x)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return mix(c, self.head(x))


class TailWithDemix(nn.Module):
    """z̃[k, ...], C⁻¹[k, k] -> class scores tail(C⁻¹·z̃)."""

    def __init__(self, tail: nn.Module):
        super().__init__()
        self.tail = tail

    def forward(self, z: torch.Tensor, c_inv: torch.Tensor) -> torch.Tensor:
        return self.tail(demix(c_inv, z))


class Normalise(nn.Module):
    """x in [0, 1], RGB → (x - mean) / std → channel order: the preprocessing folded into the head."""

    def __init__(self, mean: torch.Tensor | None, std: torch.Tensor | None, flip: bool, ndim: int):
        super().__init__()
        shape = (1, -1) + (1,) * (ndim - 2)
        self.flip = flip
        self.active = mean is not None
        self.register_buffer("mean", (mean if mean is not None else torch.zeros(1)).reshape(shape))
        self.register_buffer("inv_std", (1.0 / std if std is not None else torch.ones(1)).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.active:
            x = (x - self.mean) * self.inv_std
        if self.flip:
            x = torch.flip(x, dims=(1,))
        return x
