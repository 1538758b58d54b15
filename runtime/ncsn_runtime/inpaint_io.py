"""Reading the known image and the mask of ``ncsn-sample --inpaint IMAGE --mask MASK`` (.png with Pillow, or .npy).

* Image ``.png``: grayscale (one channel) or RGB (three), exactly the export's H x W (no resizing: a wrong
  size is an error naming the expected H x W); 8-bit pixels ``p`` map to the model's data range
  ``lo + (hi - lo) * p / 255``. ``.npy``: float [*sample_shape] (or [H, W] for one channel) in the data range.
* Mask ``.png``: grayscale, white (255) = known, black (0) = fill in; any other gray level is an error naming
  the range found (no thresholding). ``.npy``: bool or numbers, only 0 and 1 (1 = known), [H, W] or
  [*sample_shape]. All known / all unknown are errors (:func:`ncsn_runtime.inpaint.check_mask`).

Numbers are checked before anything runs; an ``.npy`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .inpaint import check_mask

__all__ = ["read_known_image", "read_mask"]

SUFFIXES = (".png", ".npy")


def _suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{what} must be a .png or .npy file, got {path.name!r}")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    return suffix


def _expected(sample_shape: Sequence[int]) -> str:
    return f"{sample_shape[-2]}x{sample_shape[-1]} (HxW)"


def _read_png(path: Path, sample_shape: Sequence[int], what: str, channels: int) -> np.ndarray:
    """uint8 [C, H, W] from a PNG whose size is checked before its pixels are decoded."""
    from .images import _pil

    image_module, _ = _pil()
    height, width = int(sample_shape[-2]), int(sample_shape[-1])
    try:
        with image_module.open(path) as image:
            if image.format != "PNG":
                raise ValueError(f"{what} {path.name} is not a PNG (Pillow reads it as {image.format})")
            if image.size != (width, height):
                raise ValueError(f"{what} {path.name} is {image.size[1]}x{image.size[0]} (HxW); this export's samples are "
                                 f"{_expected(sample_shape)}: give an image of that size (it is not resized)")
            mode = "L" if channels == 1 else "RGB"
            if channels not in (1, 3):
                raise ValueError(f"{what}: PNG images need 1 or 3 channels, this export's samples have {channels}; use .npy")
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except image_module.UnidentifiedImageError:
        raise ValueError(f"{what} {path.name} is not a readable PNG") from None
    return pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{what} {path.name} is not a plain .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{what} {path.name} holds no single array")
    return array


def _fit(array: np.ndarray, sample_shape: tuple[int, ...], what: str) -> np.ndarray:
    """[*sample_shape] from [*sample_shape], or from [H, W] for one channel."""
    if array.shape == sample_shape:
        return array
    if len(sample_shape) == 3 and sample_shape[0] == 1 and array.shape == sample_shape[1:]:
        return array[None]
    raise ValueError(f"{what} has shape {list(array.shape)}; this export's samples are {list(sample_shape)}"
                     + (f" (HxW {_expected(sample_shape)})" if len(sample_shape) >= 2 else ""))


def read_known_image(path: str | os.PathLike, sample_shape: Sequence[int], data_range: Sequence[float]) -> np.ndarray:
    """The known image, float32 [*sample_shape] in ``data_range``."""
    path, shape = Path(path), tuple(int(size) for size in sample_shape)
    if _suffix(path, "--inpaint") == ".npy":
        array = _read_npy(path, "--inpaint")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"--inpaint {path.name} must hold real numbers, got dtype {array.dtype}")
        array = _fit(array, shape, f"--inpaint {path.name}").astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"--inpaint {path.name} holds NaN or inf")
        return array
    if len(shape) != 3:
        raise ValueError(f"--inpaint: a PNG needs an image model, this export's samples have shape {list(shape)}; use .npy")
    pixels = _read_png(path, shape, "--inpaint", shape[0])
    low, high = (float(value) for value in data_range)
    return (low + (high - low) * (pixels.astype(np.float64) / 255.0)).astype(np.float32)


def read_mask(path: str | os.PathLike, sample_shape: Sequence[int]) -> np.ndarray:
    """The mask, float32 [*sample_shape] of 0 (fill in) and 1 (known); errors name the values found."""
    path, shape = Path(path), tuple(int(size) for size in sample_shape)
    if _suffix(path, "--mask") == ".npy":
        array = _read_npy(path, "--mask")
        if array.dtype != bool and array.dtype.kind not in "fiu":
            raise ValueError(f"--mask {path.name} must hold 0 and 1 (bool or numbers), got dtype {array.dtype}")
        mask = _fit(array, shape, f"--mask {path.name}").astype(np.float32)
    else:
        if len(shape) != 3:
            raise ValueError(f"--mask: a PNG needs an image model, this export's samples have shape {list(shape)}; use .npy")
        pixels = _read_png(path, shape, "--mask", 1)
        binary = (pixels == 0) | (pixels == 255)
        if not binary.all():
            bad = pixels[~binary]
            raise ValueError(f"--mask {path.name} must be black (0, fill in) and white (255, known) only, got {bad.size} "
                             f"gray pixels in [{int(bad.min())}, {int(bad.max())}] (it is not thresholded)")
        mask = np.broadcast_to((pixels == 255).astype(np.float32), shape).copy()
    try:
        check_mask(mask[None])
    except ValueError as error:
        raise ValueError(f"--mask {path.name}: {str(error).replace('`mask` of sample 0', 'the mask')}") from None
    return mask
