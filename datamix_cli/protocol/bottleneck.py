"""A learned bottleneck at the head cut: an encoder that ends the head (on the edge) and a decoder that starts the
cloud part, so that what is mixed, noised, encoded and sent is the narrow code, not the cut's full features.

* Image-like cuts (N, C, H, W): the encoder is a convolution with an s×s kernel and stride s to ``channels``
  channels (s = 1: a 1×1 convolution), the decoder its transpose. Token or vector cuts (N, ..., D): linear layers
  over the last dimension.
* Initialised as PCA: the encoder projects each s×s patch (or vector) of the cut's features, centred, onto their
  top ``channels`` principal directions, measured on training samples; the decoder maps back and adds the mean.
  That is the best linear code of that width, so fine-tuning starts from the least damaged model.
* The code is centred, so it takes both signs even where the cut is post-ReLU (the non-negative blind separation
  the audit runs has less to hold on to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from datamix_cli.errors import ConfigError

PCA_SAMPLES = 256  # training samples the initial projection is measured on


@dataclass(frozen=True)
class BottleneckConfig:
    channels: int | None = None  # None: no bottleneck
    stride: int = 1

    @property
    def active(self) -> bool:
        return self.channels is not None

    def code_shape(self, cut_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The per-sample shape of the code for a cut of ``cut_shape``, after checking the configuration fits it."""
        if not self.active:
            return tuple(cut_shape)
        width = cut_shape[0] if len(cut_shape) == 3 else cut_shape[-1]
        if not 1 <= self.channels <= width:
            raise ConfigError(f"--bottleneck must be between 1 and the cut's {width} channels, got {self.channels}")
        if self.stride < 1:
            raise ConfigError(f"--bottleneck-stride must be >= 1, got {self.stride}")
        if len(cut_shape) == 3:
            c, h, w = cut_shape
            if h % self.stride or w % self.stride:
                raise ConfigError(f"--bottleneck-stride {self.stride} does not divide the cut's {h}×{w} feature map")
            return (self.channels, h // self.stride, w // self.stride)
        if self.stride != 1:
            raise ConfigError("--bottleneck-stride applies to image-like cuts (C, H, W) only")
        return (*cut_shape[:-1], self.channels)

    def flops(self, cut_shape: tuple[int, ...]) -> tuple[int, int]:
        """(encoder, decoder) FLOPs per sample (2 × MACs; biases not counted, as for the model's own layers)."""
        self.code_shape(cut_shape)
        if not self.active:
            return 0, 0
        macs = int(np.prod(cut_shape)) * self.channels  # every input value meets every code channel once
        return 2 * macs, 2 * macs

    def to_manifest(self, cut_shape: tuple[int, ...]) -> dict | None:
        if not self.active:
            return None
        encoder, decoder = self.flops(cut_shape)
        return {
            "channels": self.channels,
            "stride": self.stride,
            "cut_shape": list(cut_shape),
            "code_shape": list(self.code_shape(cut_shape)),
            "encoder_flops": encoder,
            "decoder_flops": decoder,
            "init": "PCA of the cut's features on training samples",
        }


class Encoder(nn.Module):
    def __init__(self, cut_shape: tuple[int, ...], config: BottleneckConfig):
        super().__init__()
        s = config.stride
        self.layer = nn.Conv2d(cut_shape[0], config.channels, s, stride=s) if len(cut_shape) == 3 else nn.Linear(cut_shape[-1], config.channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.layer(h)


class Decoder(nn.Module):
    def __init__(self, cut_shape: tuple[int, ...], config: BottleneckConfig):
        super().__init__()
        s = config.stride
        self.layer = nn.ConvTranspose2d(config.channels, cut_shape[0], s, stride=s) if len(cut_shape) == 3 else nn.Linear(config.channels, cut_shape[-1])

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.layer(code)


class BottleneckHead(nn.Module):
    """The head followed by the encoder: x -> code."""

    def __init__(self, head: nn.Module, encoder: Encoder):
        super().__init__()
        self.head, self.encoder = head, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.head(x))


class BottleneckCloud(nn.Module):
    """The decoder followed by the cloud part: mixtures of codes -> cloud outputs."""

    def __init__(self, decoder: Decoder, cloud: nn.Module):
        super().__init__()
        self.decoder, self.cloud = decoder, cloud

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.cloud(self.decoder(m))


def _patches(h: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, C, H, W) -> (N·H/s·W/s, C·s·s): the non-overlapping s×s patches, ordered as a Conv2d weight's (C, s, s)."""
    n, c, height, width = h.shape
    s = stride
    p = h.reshape(n, c, height // s, s, width // s, s).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(-1, c * s * s)


@torch.no_grad()
def pca_init(encoder: Encoder, decoder: Decoder, features: torch.Tensor, config: BottleneckConfig) -> float:
    """Set encoder and decoder to the PCA code of ``features`` (samples of the cut's features); returns the share of
    the features' variance the code keeps."""
    image = features.dim() == 4
    rows = _patches(features, config.stride) if image else features.reshape(-1, features.shape[-1])
    rows = rows.double()
    if image:  # centred per channel, so that the transposed convolution's per-channel bias adds the mean back exactly
        channel_mean = features.double().mean((0, 2, 3))
        mean = channel_mean.repeat_interleave(config.stride**2)
    else:
        mean = rows.mean(0)
    centred = rows - mean
    _, singular, vt = torch.linalg.svd(centred, full_matrices=False)
    basis = vt[: config.channels]  # (channels, patch)
    kept = float((singular[: config.channels] ** 2).sum() / (singular**2).sum().clamp_min(1e-30))
    enc, dec = encoder.layer, decoder.layer
    if image:
        enc.weight.copy_(basis.reshape(enc.weight.shape).float())
        dec.weight.copy_(basis.reshape(dec.weight.shape).float())  # ConvTranspose2d weight: (in=channels, out, s, s)
        enc.bias.copy_(-(basis @ mean).float())
        dec.bias.copy_(channel_mean.float())
    else:
        enc.weight.copy_(basis.float())
        enc.bias.copy_(-(basis @ mean).float())
        dec.weight.copy_(basis.T.float())
        dec.bias.copy_(mean.float())
    return kept


def insert(parts, config: BottleneckConfig, cut_shape: tuple[int, ...], sample_x: np.ndarray) -> tuple[object, float]:
    """The parts with the bottleneck in place (head ends with the encoder, cloud starts with the decoder), PCA-
    initialised on ``sample_x``; returns (parts, share of the cut's variance the initial code keeps)."""
    from dataclasses import replace

    config.code_shape(cut_shape)  # refuses a configuration that does not fit the cut
    encoder, decoder = Encoder(cut_shape, config), Decoder(cut_shape, config)
    x = torch.from_numpy(np.ascontiguousarray(sample_x[:PCA_SAMPLES], dtype=np.float32))
    with torch.no_grad():
        features = parts.head(x)
    kept = pca_init(encoder, decoder, features, config)
    return replace(parts, head=BottleneckHead(parts.head, encoder), cloud=BottleneckCloud(decoder, parts.cloud)), kept
