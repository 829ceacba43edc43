"""Reading the inputs a user hands ``datamix infer``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datamix_cli.data.images import IMAGE_SUFFIXES, read_image
from datamix_cli.errors import DatasetError, InputFileError, require


def read_inputs(paths: list[Path], sample_shape: tuple[int, ...], preprocessing=None) -> tuple[np.ndarray, list[str]]:
    """Samples fitted to ``sample_shape`` and a name for each.

    ``preprocessing`` is the split's spec (manifest), so images get the same
    resize and crop as in training; mean/std are inside the head artifact.
    """
    from datamix_cli.data.preprocessing import Preprocessing

    preprocessing = preprocessing or Preprocessing()
    arrays, names = [], []
    for path in paths:
        if not path.is_file():
            raise InputFileError(f"input not found: {path}")
        batch = _read(path)
        if path.suffix.lower() in IMAGE_SUFFIXES or tuple(batch.shape) == tuple(sample_shape) or batch.ndim == 2 and len(sample_shape) == 3:
            batch = batch[None]  # one sample
        arrays.append(preprocessing.fit(batch.astype(np.float64), sample_shape, str(path)).astype(np.float32))
        names += [str(path)] if len(batch) == 1 else [f"{path}[{i}]" for i in range(len(batch))]
    return np.concatenate(arrays), names


def _read(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive:
                    raise DatasetError(f"{path} must hold an array 'x'")
                return archive["x"]
    except ValueError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if suffix in IMAGE_SUFFIXES:
        try:
            return read_image(path, require("PIL.Image", "data"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from None
    raise DatasetError(f"{path}: inputs must be .npy, .npz or an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
