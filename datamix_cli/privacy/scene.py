"""The scene of an audit: the audited samples, what the cloud saw of them, and the truth to score attacks against.

Threat model (worst case for the user): the cloud knows the architecture and
the edge weights (it has ``edge/head.pt``), sees every mixture and, unless
shuffling is on, which group each came from, and holds public data from the
same distribution: the split's training part, disjoint from the held-out
samples audited here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamix_cli.artifacts.folder import SplitFolder
from datamix_cli.data.datasets import split_datasets
from datamix_cli.errors import ConfigError
from datamix_cli.protocol.codecs import decode, encode
from datamix_cli.protocol.groups import dominant_sources
from datamix_cli.protocol.mixing import MixingConfig, add_noise, coefficient_rng, draw_batch, draw_coefficients, mix

MAX_PUBLIC_SAMPLES = 20000  # the attacker's public data is read into memory; a huge folder is capped


class Scene:
    """The audited samples, what the cloud saw, and the truth to score attacks against."""

    def __init__(self, folder: Path, data: str | None = None, samples: int = 64, seed: int = 0):
        self.folder = Path(folder)
        self.split_folder = SplitFolder(self.folder, roles=("head", "cloud", "tail", "decoys"))
        self.manifest = self.split_folder.manifest
        p = self.manifest.protocol
        self.k = p["k"]
        self.mixing = MixingConfig.from_protocol(p)
        head, cloud, tail = (self.split_folder.runner(role) for role in ("head", "cloud", "tail"))
        k, eye = self.k, np.eye(self.k, dtype=np.float32)
        self.features = lambda x: np.concatenate([head(x[i : i + k], eye) for i in range(0, len(x), k)])
        # The split's own model at C = I, the classifier that judges reconstructions (in groups of the artifacts' k).
        self.scores = lambda x: np.concatenate([tail(cloud(head(x[i : i + k], eye)), eye) for i in range(0, len(x), k)])
        self.artifact_k = k
        shape = tuple(self.manifest.model["input_shape"][1:])
        # The split's own data, preprocessing and holdout (or its --eval-data set); --data replaces the data set.
        public, private = split_datasets(self.manifest, shape, data)
        n_pub = min(len(public.y), MAX_PUBLIC_SAMPLES)
        n_pub -= n_pub % self.k
        n_priv = min(samples, len(private.y))
        n_priv -= n_priv % self.k
        if n_priv < self.k:
            raise ConfigError(f"need at least k={self.k} held-out samples to audit, have {len(private.y)}")
        self.x_pub, self.y_pub = np.asarray(public.x[:n_pub]), public.y[:n_pub]
        self.x, self.y = np.asarray(private.x[:n_priv]), private.y[:n_priv]
        self.classes = len(self.manifest.model["class_labels"])
        self.h_pub, self.h = self.features(self.x_pub), self.features(self.x)
        rng = coefficient_rng(seed)
        self.cs = np.stack([draw_coefficients(rng, self.mixing) for _ in range(n_priv // self.k)])
        self.mixtures = self._mix(self.h, self.cs, rng)
        self.sent_order = rng.permutation(n_priv) if self.mixing.shuffle else np.arange(n_priv)
        self.rng = rng

    def _mix(self, h, cs, rng):
        """Mixtures of ``h`` grouped by ``cs``, in float32 as the edge's head artifact mixes, after noise and the uplink codec. (The adaptive attacker
        re-mixes all public features every epoch: 0.04 s in float32 against 1.1 s in float64 on the ResNet example.)"""
        groups = h.reshape(len(cs), self.k, *h.shape[1:]).astype(np.float32, copy=False)
        m = mix(cs.astype(np.float32), groups).reshape(h.shape)
        m = add_noise(self.mixing, m, lambda shape: rng.standard_normal(shape, dtype=np.float32))[0]
        codec = self.mixing.uplink_codec
        return decode(codec, *encode(codec, m))  # what the server decodes: the codec's rounding included

    def classify(self, images: np.ndarray) -> np.ndarray:
        """The split's model's labels for ``images`` (any number: padded to whole groups)."""
        pad = -len(images) % self.artifact_k
        padded = np.concatenate([images, np.repeat(images[:1], pad, axis=0)]) if pad else images
        return self.scores(padded.astype(np.float32, copy=False)).argmax(axis=1)[: len(images)]

    def head_module(self):
        """The head as a differentiable torch module, x -> features (the attacker holds its weights)."""
        module = self.split_folder.module("head")
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        return module.head  # HeadWithMix keeps the plain head, which takes any batch (datamix_cli/protocol/edge_modules.py)

    def dominant(self) -> np.ndarray:
        return dominant_sources(self.cs)

    def simulate_public(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Public samples in fresh random groups, mixed exactly as the protocol mixes: (mixtures, order, cs), the
        mixtures of ``h_pub[order]`` grouped by k and mixed by ``cs``."""
        order = rng.permutation(len(self.h_pub))
        cs = draw_batch(rng, self.mixing, len(order) // self.k)
        return self._mix(self.h_pub[order], cs, rng), order, cs

    def simulate_public_dominant(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Simulated public mixtures and, for each, the index of its dominant public sample."""
        mixtures, order, cs = self.simulate_public(rng)
        return mixtures, order[dominant_sources(cs)]
