"""Input preprocessing: one spec, recorded in the manifest, applied the same way everywhere.

A sample goes through two stages:

1. **Geometry and scale, on the edge before the head** (:meth:`Preprocessing.fit`):
   pixels are scaled to [0, 1] (pixel / max value, see :func:`datamix_cli.data.datasets.read_image`),
   then either stretched to the model's H×W (``resize`` None: the built-in
   datasets, which are already at or near the model's size) or resized so the
   shorter side is ``resize`` pixels (bilinear, antialiased, as torchvision's
   ``Resize`` on tensors) and centre-cropped to H×W (the ImageNet recipe).
2. **Mean/std and channel order, inside the head artifact**
   (:meth:`Preprocessing.normaliser`): the module is prepended to the traced
   model, so the head, the fine-tuning, the evaluation and the audit all see
   it, and an app feeds RGB pixels in [0, 1] to the exported head. ``mean`` and
   ``std`` are always given in RGB order, the order images are read in; a BGR
   model gets the normalised channels reversed after them.

Training, evaluation, ``infer``, ``serve-local`` and ``audit`` all call the
same two functions with the spec read from the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datamix_cli.data.geometry import fit_to_shape, resize_and_crop
from datamix_cli.errors import ConfigError
from datamix_cli.options import ChannelOrder, PreprocessPreset, choice, parse_floats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE_RATIO = 256 / 224  # resize the shorter side to 256 for a 224 crop

# What each preset (options.PreprocessPreset) sets; explicit options override it. ``none`` is what the built-in
# datasets need.
PRESETS = {
    "none": {"resize_ratio": None, "mean": None, "std": None},
    "imagenet": {"resize_ratio": IMAGENET_RESIZE_RATIO, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}


@dataclass(frozen=True)
class PreprocessingOptions:
    """What the user asked for (a preset and overrides), checked as far as it can be without the model's input
    shape; :meth:`Preprocessing.build` finishes the job once the shape is known."""

    preset: str = "none"
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "preset", choice(PreprocessPreset, self.preset, "preprocessing preset").value)
        if self.channel_order is not None:
            object.__setattr__(self, "channel_order", choice(ChannelOrder, self.channel_order, "channel order").value)
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, parse_floats(getattr(self, name), name))

    def as_kwargs(self) -> dict:
        return {"preset": self.preset, "resize": self.resize, "mean": self.mean, "std": self.std, "channel_order": self.channel_order}


@dataclass(frozen=True)
class Preprocessing:
    preset: str = "none"
    resize: int | None = None  # shorter side before the centre crop; None: stretch to the model's H×W
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "rgb"

    @classmethod
    def build(
        cls,
        sample_shape: tuple[int, ...],
        preset: str = "none",
        resize: int | None = None,
        mean: str | tuple[float, ...] | None = None,
        std: str | tuple[float, ...] | None = None,
        channel_order: str | None = None,
    ) -> "Preprocessing":
        """The spec for a model input of ``sample_shape`` (C, H, W) or (C, L), checked."""
        preset = choice(PreprocessPreset, preset or "none", "preprocessing preset").value
        base = PRESETS[preset]
        channels = sample_shape[0]
        mean = parse_floats(mean, "mean") if mean is not None else base["mean"]
        std = parse_floats(std, "std") if std is not None else base["std"]
        if (mean is None) != (std is None):
            mean = mean if mean is not None else (0.0,) * len(std)
            std = std if std is not None else (1.0,) * len(mean)
        for name, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) != channels:
                raise ConfigError(f"--{name} has {len(values)} values but the model input has {channels} channels")
        if std is not None and not all(s > 0 for s in std):
            raise ConfigError(f"--std values must be > 0, got {', '.join(f'{s:g}' for s in std)}")
        order = choice(ChannelOrder, channel_order or "rgb", "channel order").value
        if order == "bgr" and channels != 3:
            raise ConfigError(f"--channel-order bgr needs a 3-channel model input, this one has {channels}")
        if resize is None and base["resize_ratio"] is not None and len(sample_shape) == 3:
            resize = int(round(max(sample_shape[1:]) * base["resize_ratio"]))
        if resize is not None:
            if len(sample_shape) != 3:
                raise ConfigError(f"--resize applies to images (C, H, W); the model input is {tuple(sample_shape)}")
            if resize < max(sample_shape[1:]):
                raise ConfigError(f"--resize {resize} is smaller than the {sample_shape[1]}x{sample_shape[2]} centre crop")
        return cls(preset, resize, mean, std, order)

    @classmethod
    def from_manifest(cls, model: dict) -> "Preprocessing":
        """The spec a split folder was made with (folders from before the spec: none)."""
        spec = model.get("preprocessing") or {}
        tup = lambda v: tuple(float(x) for x in v) if v is not None else None  # noqa: E731
        return cls(spec.get("preset", "none"), spec.get("resize"), tup(spec.get("mean")), tup(spec.get("std")), spec.get("channel_order", "rgb"))

    def to_manifest(self, sample_shape: tuple[int, ...]) -> dict:
        geometry = (
            f"resize the shorter side to {self.resize} px (bilinear, antialiased), centre-crop to {sample_shape[1]}x{sample_shape[2]}"
            if self.resize else "stretch to the model input size (bilinear)"
        )
        return {
            "preset": self.preset,
            "resize": self.resize,
            "crop": list(sample_shape[1:]) if self.resize else None,
            "scale": "pixel / max value -> [0, 1]",
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "channel_order": self.channel_order,
            "edge_input": f"RGB (or grayscale) float32 in [0, 1], {geometry}",
            "normalisation_in_head": self.in_head,
        }

    @property
    def in_head(self) -> bool:
        """Whether anything (mean/std, channel order) is folded into the head artifact."""
        return self.mean is not None or self.channel_order != "rgb"

    def describe(self) -> str:
        parts = [f"preset {self.preset}"]
        if self.resize:
            parts.append(f"resize {self.resize} + centre crop")
        if self.mean is not None:
            parts.append("mean/std " + "/".join(f"{m:g}" for m in self.mean) + " ; " + "/".join(f"{s:g}" for s in self.std))
        if self.channel_order != "rgb":
            parts.append(self.channel_order.upper())
        return ", ".join(parts)

    def normaliser(self, sample_shape: tuple[int, ...]):
        """The module prepended to the model (identity when there is nothing to do)."""
        import torch

        from datamix_cli.protocol.edge_modules import Normalise

        return Normalise(
            None if self.mean is None else torch.tensor(self.mean, dtype=torch.float32),
            None if self.std is None else torch.tensor(self.std, dtype=torch.float32),
            self.channel_order == "bgr",
            len(sample_shape) + 1,
        )

    def wrap(self, model, sample_shape: tuple[int, ...]):
        """``model`` with the in-head part in front: what the split's parts compute together (model itself if none)."""
        import torch

        return torch.nn.Sequential(self.normaliser(sample_shape), model).eval() if self.in_head else model

    def fit(self, raw: np.ndarray, sample_shape: tuple[int, ...], name: str) -> np.ndarray:
        """Stage 1 on a batch of raw samples in [0, 1]: (N, H, W) grayscale or (N, C, H, W)."""
        if self.resize and len(sample_shape) == 3 and raw.ndim in (3, 4):
            raw = resize_and_crop(raw, self.resize, tuple(sample_shape[1:]))
        return fit_to_shape(raw, sample_shape, name)


def prepend(traced, module):
    """A traced model with ``module`` applied to its input first, as a ``preprocess`` node."""
    from partitioners.graph import TracedModel

    gm = traced.module
    gm.add_submodule("preprocess", module)
    placeholder = traced.placeholder
    with gm.graph.inserting_after(placeholder):
        node = gm.graph.call_module("preprocess", (placeholder,))
    placeholder.replace_all_uses_with(node, delete_user_cb=lambda user: user is not node)
    gm.recompile()
    return TracedModel(gm)
