"""The DataMix mixing protocol: pure functions over NumPy (and torch, where noted).

A group of k head features h (k, D) is sent as mixtures m = C·h, where C is a
fresh secret k×k matrix per group, from one of two distributions:

* ``dirichlet`` (the paper's): rows ~ Dirichlet(α·1), convex combinations,
  mixup-style, resampled until cond(C) ≤ κ_max so that de-mixing z = C⁻¹·z̃
  is stable in fp32. Rows summing to one make affine layers commute with
  mixing exactly (biases included).
* ``orthogonal``: Haar-random orthogonal C (cond = 1 at any k, C⁻¹ = Cᵀ), which
  keeps de-mixing exact at k where Dirichlet rows cannot meet κ_max. Rows do
  not sum to one, so a bias does not commute: the fine-tuning learns it.
 Coefficients come from OS entropy; a seed is accepted only for
evaluation and tests. Nothing here logs, stores or returns C to anyone but the
caller.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from datamix_cli.errors import ProtocolError
from datamix_cli.protocol.codecs import Codec, get_codec
from datamix_cli.options import MixingDistribution

DISTRIBUTIONS = tuple(d.value for d in MixingDistribution)
PROTOCOL_NAME = "datamix"
PROTOCOL_VERSION = 2  # 2: the tensors on the wire carry a codec (datamix_cli.protocol.codecs); 1 was fp32 only
MIN_K, MAX_K = 2, 64
MAX_DRAWS = 1000
DECOYS_PATH = "edge/decoys.npz"  # inside a split folder


@dataclass(frozen=True)
class MixingConfig:
    """Parameters of the protocol, as the manifest records them."""

    k: int = 4
    alpha: float = 1.0
    # 20, not 50: de-mixing multiplies the cloud's nonlinearity error by up to cond(C); see docs/protocol.md.
    kappa_max: float = 20.0
    shuffle: bool = False
    noise_sigma: float = 0.0
    distribution: str = "dirichlet"
    # Noise in units of each group's own mixture RMS: fine-tuning cannot outgrow it by scaling features up, as it
    # can an absolute σ. The std added to a group is noise_sigma + noise_relative · RMS(group's mixtures).
    noise_relative: float = 0.0
    # How the mixtures (after noise) and the cloud outputs travel: a name in datamix_cli.protocol.codecs.CODECS.
    uplink: str = "fp32"
    downlink: str = "fp32"

    @classmethod
    def from_protocol(cls, protocol: dict) -> "MixingConfig":
        """The configuration a manifest's ``protocol`` section records (older manifests: Dirichlet)."""
        return cls(
            k=protocol["k"], alpha=protocol["alpha"], kappa_max=protocol["kappa_max"], shuffle=protocol["shuffle"],
            noise_sigma=protocol["noise_sigma"], distribution=protocol.get("distribution", "dirichlet"),
            noise_relative=protocol.get("noise_relative", 0.0),
            uplink=protocol.get("codecs", {}).get("uplink", "fp32"), downlink=protocol.get("codecs", {}).get("downlink", "fp32"),
        )

    def to_protocol(self, decoys: int, seeded: bool) -> dict:
        """The manifest's ``protocol`` section: this configuration, the decoys kept with the edge artifact and
        whether any C of the split was seeded (evaluation and verification only)."""
        mixing = ("rows ~ Dirichlet(alpha·1), cond(C) <= kappa_max" if self.distribution == "dirichlet" else "Haar-random orthogonal (cond 1)")
        return {
            "name": PROTOCOL_NAME,
            "version": PROTOCOL_VERSION,
            "k": self.k,
            "distribution": self.distribution,
            "alpha": self.alpha,
            "kappa_max": self.kappa_max,
            "decoys": {"path": DECOYS_PATH, "count": int(decoys)},
            "shuffle": self.shuffle,
            "noise_sigma": self.noise_sigma,
            "noise_relative": self.noise_relative,
            "mix": "m = C·h over the group of k (h flattened per sample); fresh C per group, " + mixing,
            "demix": "z = C⁻¹·z̃ over the group of k",
            "seeded": bool(seeded),
            "codecs": {"uplink": self.uplink, "downlink": self.downlink},
        }

    def __post_init__(self):
        if self.distribution not in DISTRIBUTIONS:
            raise ProtocolError(f"unknown mixing distribution {self.distribution!r}; choose {' or '.join(DISTRIBUTIONS)}")
        validate_k(self.k)
        if not self.alpha > 0:
            raise ProtocolError(f"Dirichlet concentration alpha must be > 0, got {self.alpha}")
        if not self.kappa_max >= 1:
            raise ProtocolError(f"kappa_max (largest condition number of C) must be >= 1, got {self.kappa_max}")
        if not self.noise_sigma >= 0:
            raise ProtocolError(f"noise sigma must be >= 0, got {self.noise_sigma}")
        if not self.noise_relative >= 0:
            raise ProtocolError(f"relative noise must be >= 0, got {self.noise_relative}")
        get_codec(self.uplink)
        if get_codec(self.downlink).params:
            raise ProtocolError(f"the downlink codec must be fp32 or fp16, got {self.downlink!r}: de-mixing amplifies the cloud outputs' rounding by up to cond(C)")

    @property
    def uplink_codec(self) -> Codec:
        return get_codec(self.uplink)

    @property
    def downlink_codec(self) -> Codec:
        return get_codec(self.downlink)

    @property
    def noisy(self) -> bool:
        return bool(self.noise_sigma or self.noise_relative)


def coefficient_rng(seed: int | None = None) -> np.random.Generator:
    """A generator seeded from OS entropy, or from ``seed`` for evaluation and tests only."""
    return np.random.default_rng(secrets.randbits(128) if seed is None else seed)


def draw_coefficients(rng: np.random.Generator, config: MixingConfig) -> np.ndarray:
    """One k×k mixing matrix (float64): Dirichlet rows with cond(C) ≤ κ_max, or Haar-random orthogonal."""
    if config.distribution == "orthogonal":
        return haar_orthogonal(rng, config.k)
    for _ in range(MAX_DRAWS):
        c = rng.dirichlet(np.full(config.k, config.alpha), size=config.k)
        if np.linalg.cond(c) <= config.kappa_max:
            return c
    raise ProtocolError(
        f"no mixing matrix with cond <= {config.kappa_max:g} in {MAX_DRAWS} draws for k={config.k}, "
        f"alpha={config.alpha:g}; raise --kappa-max or lower --k"
    )


def haar_orthogonal(rng: np.random.Generator, k: int) -> np.ndarray:
    """A Haar-distributed k×k orthogonal matrix: QR of a Gaussian matrix, signs fixed by diag(R) (Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def draw_batch(rng: np.random.Generator, config: MixingConfig, groups: int) -> np.ndarray:
    """``groups`` independent matrices, shape (groups, k, k)."""
    return np.stack([draw_coefficients(rng, config) for _ in range(groups)])


def mix(c, h):
    """m = C·h over the group dimension; h is (k, ...) or grouped (G, k, ...). NumPy or torch."""
    grouped = c.ndim == 3
    lead = h.shape[: 2 if grouped else 1]
    flat = h.reshape(*lead, -1)
    return (c @ flat).reshape(h.shape)


def noise_std(config: MixingConfig, mixtures):
    """Std of the noise on each group of ``mixtures`` (G·k, ...): σ + r·RMS of the group, shape (G,).

    NumPy or torch (torch: no gradient flows through the scale, which the edge computes as a number).
    """
    if len(mixtures) % config.k:
        raise ProtocolError(f"{len(mixtures)} mixtures are not whole groups of k={config.k}")
    flat = mixtures.reshape(len(mixtures) // config.k, -1)
    rms = (flat * flat).mean(1) ** 0.5
    if hasattr(rms, "detach"):
        rms = rms.detach()
    return config.noise_sigma + config.noise_relative * rms


def add_noise(config: MixingConfig, mixtures, standard_normal):
    """``mixtures`` (G·k, ...) plus the protocol's Gaussian noise; ``standard_normal(shape)`` draws N(0, 1) of the
    same kind (NumPy or torch). Returns (noisy mixtures, the noise)."""
    if not config.noisy:
        return mixtures, None
    std = noise_std(config, mixtures)
    noise = (std[:, None] * standard_normal(mixtures.shape).reshape(len(std), -1)).reshape(mixtures.shape)
    return mixtures + noise, noise


def demix(c_inv, z):
    """z = C⁻¹·z̃, the inverse of :func:`mix` given C⁻¹."""
    return mix(c_inv, z)


def validate_k(k: int) -> int:
    """The group size, if within the protocol's bounds (the one place they are checked)."""
    if not MIN_K <= k <= MAX_K:
        raise ProtocolError(f"group size k must be between {MIN_K} and {MAX_K}, got {k}")
    return k
