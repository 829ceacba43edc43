"""Datasets: built-in ones that ship inside installed packages, and the user's own.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits, 10 classes;
* ``faces``: scikit-image's LFW subset, 200 25x25 images, face / non-face;
* ``path.npz`` with arrays ``x`` (N, ...) and ``y`` (N,), optional ``classes``;
* a folder with one sub-folder of images per class.

Samples are float32 in [0, 1], resized to the model's per-sample shape:
images are resampled bilinearly; for 1-D models (C, L) each image is read
row by row as a signal and resampled to length L.

Colour (images in folders and images given to ``infer``, one rule, in
:func:`read_image`): grayscale images (PIL modes 1, L, LA, I, I;16, F) stay
one channel, everything else becomes RGB, three channels. An alpha channel is
dropped (RGBA → RGB, LA → L), as PIL's ``convert`` and torchvision's
ImageFolder do. A folder holding any colour image is read as RGB, its
grayscale images replicated over the three channels. Grayscale data for a
model with C channels is replicated C times; colour data for a model with a
different channel count is refused with one line, never silently averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamix_cli.errors import DatasetError, InputFileError, require

BUILTIN = ("digits", "faces")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}


@dataclass(frozen=True)
class Dataset:
    """Samples shaped for one model, their integer labels and the class names."""

    name: str
    x: np.ndarray  # float32 (N, *sample_shape)
    y: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def split(self, holdout: float, seed: int) -> tuple["Dataset", "Dataset"]:
        """A stratification-free random train / held-out split, reproducible by seed."""
        order = np.random.default_rng(seed).permutation(len(self.y))
        n_hold = max(1, int(round(holdout * len(order))))
        hold, train = order[:n_hold], order[n_hold:]
        return (
            Dataset(self.name, self.x[train], self.y[train], self.classes),
            Dataset(self.name, self.x[hold], self.y[hold], self.classes),
        )


def load_dataset(spec: str, sample_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load ``spec`` and fit it to ``sample_shape`` (channels first, no batch dimension)."""
    if spec in BUILTIN:
        raw, y, classes = _builtin(spec)
    else:
        path = Path(spec)
        if path.suffix == ".npz":
            raw, y, classes = _npz(path)
        elif path.is_dir():
            raw, y, classes = _image_folder(path)
        elif not path.exists():
            raise InputFileError(f"dataset {spec!r} is neither built in ({', '.join(BUILTIN)}) nor an existing path")
        else:
            raise DatasetError(f"dataset {spec!r}: expected an .npz file or a folder of class sub-folders")
    x = raw if sample_shape is None else fit_to_shape(raw, sample_shape, spec)
    return Dataset(spec, x.astype(np.float32), y.astype(np.int64), classes)


def default_sample_shape(raw_x: np.ndarray) -> tuple[int, ...]:
    """Per-sample shape of raw images (N, H, W) -> (1, H, W); anything else unchanged."""
    return (1, *raw_x.shape[1:]) if raw_x.ndim == 3 else tuple(raw_x.shape[1:])


def _builtin(name: str):
    if name == "digits":
        datasets = require("sklearn.datasets", "data")
        digits = datasets.load_digits()
        return digits.images / 16.0, digits.target, tuple(str(i) for i in range(10))
    skimage_data = require("skimage.data", "data")
    images = np.asarray(skimage_data.lfw_subset(), dtype=np.float64)
    # The first 100 images are faces, the other 100 are not (scikit-image docs).
    labels = np.r_[np.ones(100), np.zeros(100)]
    return images, labels, ("non-face", "face")


def _npz(path: Path):
    if not path.is_file():
        raise InputFileError(f"dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise DatasetError(f"{path} must hold arrays 'x' and 'y'; it holds {', '.join(archive.files)}")
            x, y = archive["x"], archive["y"]
            classes = tuple(str(c) for c in archive["classes"]) if "classes" in archive else None
    except (ValueError, OSError) as exc:
        raise DatasetError(f"cannot read {path} as a NumPy archive: {exc}") from exc
    if x.dtype.kind not in "fiub" or y.dtype.kind not in "iu" or y.ndim != 1 or len(x) != len(y) or not len(y):
        raise DatasetError(f"{path}: need numeric x (N, ...) and integer y (N,), got x {x.shape} {x.dtype}, y {y.shape} {y.dtype}")
    if classes is None:
        classes = tuple(str(i) for i in range(int(y.max()) + 1))
    if y.min() < 0 or y.max() >= len(classes):
        raise DatasetError(f"{path}: labels must lie in 0..{len(classes) - 1}, found {y.min()}..{y.max()}")
    return x.astype(np.float64), y, classes


GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def read_image(path: Path, pil) -> np.ndarray:
    """One image in [0, 1]: (H, W) if grayscale, else (3, H, W) RGB; alpha dropped (see the module doc)."""
    with pil.open(path) as image:
        image.load()
        mode = image.mode
        if mode in GRAYSCALE_MODES:
            if mode.startswith("I"):
                return np.clip(np.asarray(image, dtype=np.float64) / 65535.0, 0, 1)
            if mode == "F":
                return np.clip(np.asarray(image, dtype=np.float64), 0, 1)
            return np.asarray(image.convert("L"), dtype=np.float64) / 255.0
        return np.asarray(image.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255.0


def _image_folder(path: Path):
    pil = require("PIL.Image", "data")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not class_dirs:
        raise DatasetError(f"{path} has no class sub-folders")
    images, labels = [], []
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                images.append(read_image(file, pil))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"cannot read image {file}: {exc}") from exc
            labels.append(label)
    if not images:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
    if any(im.ndim == 3 for im in images):  # any colour image: the folder is RGB
        images = [im if im.ndim == 3 else np.repeat(im[None], 3, axis=0) for im in images]
    sizes = {im.shape[-2:] for im in images}
    if len(sizes) > 1:
        # Bring every image to the most common size first; fit_to_shape resizes after.
        target = max(sizes, key=lambda s: sum(im.shape[-2:] == s for im in images))
        images = [_resize(im.reshape(-1, *im.shape[-2:]), target).reshape(*im.shape[:-2], *target) for im in images]
    return np.stack(images), np.asarray(labels), tuple(d.name for d in class_dirs)


def _resize(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(x, dtype=torch.float32)
    mode = "linear" if len(size) == 1 else "bilinear"
    return F.interpolate(t[:, None], size=size, mode=mode, align_corners=False)[:, 0].numpy()


def fit_to_shape(raw: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Resize raw samples to ``shape`` = (C, H, W) or (C, L), or fail saying why they do not fit."""
    if tuple(raw.shape[1:]) == tuple(shape):
        return raw
    n = len(raw)
    if len(shape) == 3 and raw.ndim == 3:  # grayscale images -> (C, H, W)
        return np.repeat(_resize(raw, shape[1:])[:, None], shape[0], axis=1)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] == shape[0]:  # (N, C, H, W), other size
        flat = _resize(raw.reshape(n * shape[0], *raw.shape[2:]), shape[1:])
        return flat.reshape(n, *shape)
    if len(shape) == 3 and raw.ndim == 4 and raw.shape[1] != shape[0]:
        raise DatasetError(
            f"samples of {name} have {raw.shape[1]} channels but the model takes {shape[0]}; "
            "convert the data (colour is never averaged away or invented)"
        )
    if len(shape) == 2 and shape[0] == 1 and raw.ndim >= 2:  # anything -> a 1-channel signal
        return _resize(raw.reshape(n, -1), (shape[1],))[:, None]
    raise DatasetError(f"samples of {name} have shape {tuple(raw.shape[1:])}, which cannot be fitted to the model input {tuple(shape)}")
