"""Images and colour.

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

from pathlib import Path

import numpy as np

from datamix_cli.errors import DatasetError, require

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm"}
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


def decode(file: Path, pil) -> np.ndarray:
    try:
        return read_image(file, pil)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {file}: {exc}; --skip-bad-images skips such files") from None


def scan_folder(path: Path, skip_bad: bool):
    """Files, labels and class names of a folder of class sub-folders; reads image headers only.

    Without ``skip_bad`` a file whose header cannot be read stops here and a
    truncated one when it is decoded, naming the file. With it, every image is
    decoded once now and the unreadable ones are left out and counted.
    """
    pil = require("PIL.Image", "data")
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir())
    if not class_dirs:
        raise DatasetError(f"{path} has no class sub-folders")
    files, labels, skipped, sizes, colour = [], [], [], {}, False
    for label, folder in enumerate(class_dirs):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with pil.open(file) as image:
                    mode, size = image.mode, image.size
                    if skip_bad:
                        image.load()
            except (OSError, ValueError, SyntaxError) as exc:
                if not skip_bad:
                    raise DatasetError(f"cannot read image {file}: {exc}; --skip-bad-images skips such files") from None
                skipped.append(str(file))
                continue
            colour |= mode not in GRAYSCALE_MODES
            sizes[size[::-1]] = sizes.get(size[::-1], 0) + 1
            files.append(file)
            labels.append(label)
    if not files:
        raise DatasetError(f"no readable images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {path}")
    common = max(sizes, key=sizes.get)  # the native sample size when the model does not fix one
    return files, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs), colour, common, tuple(skipped)


JPEG_QUALITY = 90  # the cloud-only JPEG baseline's quality (key ``jpeg_q90``)


def encoded_sizes(x: np.ndarray) -> dict[str, float] | None:
    """Median bytes per sample of ``x`` (N, C, H, W) in [0, 1] sent as a cloud-only app would: raw uint8, PNG and
    JPEG (Pillow, quality JPEG_QUALITY). None for samples that are not 1- or 3-channel images."""
    import io

    if x.ndim != 4 or x.shape[1] not in (1, 3):
        return None
    pil = require("PIL.Image", "data")
    sizes = {"png": [], "jpeg": []}
    for sample in x:
        pixels = np.clip(np.round(np.asarray(sample, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
        image = pil.fromarray(pixels[0], "L") if pixels.shape[0] == 1 else pil.fromarray(pixels.transpose(1, 2, 0), "RGB")
        for fmt, options in (("png", {"optimize": True}), ("jpeg", {"quality": JPEG_QUALITY})):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt.upper(), **options)
            sizes[fmt].append(buffer.tell())
    return {"raw_uint8": float(np.prod(x.shape[1:])), "png": float(np.median(sizes["png"])),
            f"jpeg_q{JPEG_QUALITY}": float(np.median(sizes["jpeg"])), "samples": len(x)}
