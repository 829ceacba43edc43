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


class WireCloud(nn.Module):
    """The cloud part behind the wire codecs, for engines that serve a model file as is (Triton): the fp32 or fp16
    payload in, the cloud output in the downlink codec's dtype out."""

    def __init__(self, cloud: nn.Module, half_out: bool):
        super().__init__()
        self.cloud, self.half_out = cloud, half_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cloud(x.float())
        return out.half() if self.half_out else out


class WireCloudInt8(nn.Module):
    """The same for the int8 uplink: q[n, ...] (uint8) and params[n, 2] (scale, zero point) -> cloud((q − zp)·scale)."""

    def __init__(self, cloud: nn.Module, half_out: bool):
        super().__init__()
        self.cloud, self.half_out = cloud, half_out

    def forward(self, q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        shape = [q.shape[0]] + [1] * (q.dim() - 1)
        x = (q.float() - params[:, 1].reshape(shape)) * params[:, 0].reshape(shape)
        out = self.cloud(x)
        return out.half() if self.half_out else out
