"""The exported edge parts: mixing and de-mixing inside the artifact.

An app hands the head artifact k inputs and C, and the tail artifact the k
cloud outputs and C⁻¹, so it needs no linear algebra of its own beyond
drawing C and inverting it.
"""

from __future__ import annotations

import torch
from torch import nn


def _group_matmul(c: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (c @ t.reshape(t.shape[0], -1)).reshape(t.shape)


class HeadWithMix(nn.Module):
    """x[k, ...], C[k, k] -> mixtures C·head(x)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return _group_matmul(c, self.head(x))


class TailWithDemix(nn.Module):
    """z̃[k, ...], C⁻¹[k, k] -> class scores tail(C⁻¹·z̃)."""

    def __init__(self, tail: nn.Module):
        super().__init__()
        self.tail = tail

    def forward(self, z: torch.Tensor, c_inv: torch.Tensor) -> torch.Tensor:
        return self.tail(_group_matmul(c_inv, z))
