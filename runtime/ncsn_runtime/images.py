"""Samples -> pictures: numpy images in [0, 1], PIL images, PNG grids, and a scatter plot for 2-D samples.

Pillow is imported only when a PIL image or a PNG is asked for, so numpy output works without it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write


def _pil() -> Any:
    try:
        from PIL import Image, ImageDraw
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Pillow is needed for PIL images and .png output: pip install Pillow (or the `cpu` / `gpu` extra), "
            "or ask for output_type='np' / a .npy file"
        ) from error
    return Image, ImageDraw


def check_image_samples(samples: np.ndarray) -> None:
    """Samples must be [B, C, H, W] with C in {1, 3, 4}."""
    if samples.ndim != 4 or samples.shape[1] not in (1, 3, 4):
        raise ValueError(f"image samples must be [B, C, H, W] with C in (1, 3, 4), got shape {samples.shape}")


def to_unit_range(samples: np.ndarray, data_range: Sequence[float]) -> np.ndarray:
    """Map ``data_range`` (lo, hi) to [0, 1] and clip; float32, same shape."""
    low, high = (float(value) for value in data_range)
    if not high > low:
        raise ValueError(f"`data_range` must be (low, high) with high > low, got {tuple(data_range)}")
    return np.clip((np.asarray(samples, dtype=np.float32) - low) / (high - low), 0.0, 1.0).astype(np.float32)


def to_numpy_images(samples: np.ndarray, data_range: Sequence[float]) -> np.ndarray:
    """float32 [B, C, H, W] in ``data_range`` -> float32 [B, H, W, C] in [0, 1] (diffusers' ``np`` output)."""
    check_image_samples(samples)
    return np.ascontiguousarray(to_unit_range(samples, data_range).transpose(0, 2, 3, 1))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[..., C] in [0, 1] -> uint8 (round half up)."""
    return np.clip(np.floor(np.asarray(images, dtype=np.float32) * 255.0 + 0.5), 0, 255).astype(np.uint8)


def to_pil_images(images: np.ndarray) -> list[Any]:
    """float [B, H, W, C] in [0, 1] -> list of PIL images (mode L, RGB or RGBA)."""
    image_module, _ = _pil()
    pixels = to_uint8(images)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[-1]]
    return [image_module.fromarray(pixel[..., 0] if mode == "L" else pixel, mode=mode) for pixel in pixels]


MIN_IMAGE_PIXELS = 64  # the automatic --scale makes every image at least this many pixels on its shorter side
MAX_SCALE = 16  # largest --scale (nearest-neighbour factor)
GRID_GAP = 2  # pixels (after scaling) between images and around the grid
GAP_SHADE = 0.5  # the gap's grey level in [0, 1]: visible against black (MNIST) and white backgrounds alike
MAX_PICTURE_PIXELS = 1 << 28  # a grid / trajectory picture has at most 268 M pixels (a few hundred MB in memory)


def check_scale(scale: Any, what: str = "`scale`") -> int:
    """``scale`` must be an int in [1, MAX_SCALE] (``ValueError`` naming ``what`` otherwise); returns it."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"{what} must be an integer in [1, {MAX_SCALE}] (each image is enlarged that many times, "
                         f"nearest-neighbour), got {scale!r}")
    return int(scale)


def default_scale(height: int, width: int) -> int:
    """The smallest integer factor that makes an ``height`` x ``width`` image at least MIN_IMAGE_PIXELS on its shorter
    side, in [1, MAX_SCALE] (28 x 28 MNIST digits: 3, so 84 x 84)."""
    return max(1, min(MAX_SCALE, math.ceil(MIN_IMAGE_PIXELS / max(1, min(height, width)))))


def grid_size(count: int, height: int, width: int, nrow: int | None = None, scale: int = 1,
              gap: int = GRID_GAP) -> tuple[int, int, int, int]:
    """(rows, cols, picture height, picture width) of the grid :func:`make_grid` tiles ``count`` images into."""
    cols = min(count, nrow) if nrow else math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    return rows, cols, rows * (height * scale + gap) + gap, cols * (width * scale + gap) + gap


def check_picture_size(count: int, height: int, width: int, nrow: int | None, scale: int, what: str) -> None:
    """A ``ValueError`` naming ``what`` when the grid of ``count`` images would exceed MAX_PICTURE_PIXELS."""
    _, _, picture_height, picture_width = grid_size(count, height, width, nrow, scale)
    if picture_height * picture_width > MAX_PICTURE_PIXELS:
        raise ValueError(f"{what}: {count} images of {height}x{width} at scale {scale} make a {picture_width}x{picture_height} "
                         f"picture, over the {MAX_PICTURE_PIXELS:,}-pixel limit; use a smaller --scale or fewer samples "
                         "(or write .npy)")


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = GRID_GAP, scale: int = 1,
              fill: float | int | None = None) -> np.ndarray:
    """Tile [B, H, W, C] images (any dtype) into one picture, ``nrow`` images per row (default about sqrt(B)).

    Every image is enlarged ``scale`` times (nearest-neighbour: each pixel becomes a ``scale`` x ``scale`` block);
    ``padding`` pixels of ``fill`` (default mid grey: 128 for uint8, 0.5 for floats) separate the images and frame
    the grid. Returns [rows*(H*scale+p)+p, cols*(W*scale+p)+p, C] of the input's dtype.
    """
    count, height, width, channels = images.shape
    scale = check_scale(scale)
    _, cols, picture_height, picture_width = grid_size(count, height, width, nrow, scale, padding)
    if fill is None:
        fill = 128 if np.issubdtype(images.dtype, np.integer) else GAP_SHADE
    grid = np.full((picture_height, picture_width, channels), fill, dtype=images.dtype)
    size_y, size_x = height * scale, width * scale
    for index, image in enumerate(images):
        top = padding + (index // cols) * (size_y + padding)
        left = padding + (index % cols) * (size_x + padding)
        grid[top : top + size_y, left : left + size_x] = image.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


def grid_picture(images: np.ndarray, nrow: int | None = None, scale: int | None = None) -> Any:
    """[B, H, W, C] images in [0, 1] -> one PIL image (mode L / RGB / RGBA): the grid of :func:`make_grid` at ``scale``
    (``None``: :func:`default_scale`)."""
    image_module, _ = _pil()
    scale = default_scale(images.shape[1], images.shape[2]) if scale is None else check_scale(scale)
    pixels = make_grid(to_uint8(images), nrow, scale=scale)
    return image_module.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def save_grid_png(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write [B, H, W, C] images in [0, 1] as one PNG grid (atomically), each image enlarged ``scale`` times
    (nearest-neighbour; ``None``: :func:`default_scale`, at least 64 px) with a thin grey gap between images."""
    picture = grid_picture(images, nrow, scale)
    return atomic_write(Path(path), lambda handle: picture.save(handle, format="PNG"))


def save_scatter_png(points: np.ndarray, path: str | os.PathLike, bounds: Sequence[float], size: int = 512) -> Path:
    """Scatter plot of 2-D samples [B, 2] (x right, y up) on a square canvas covering ``bounds`` = (lo, hi) and
    every sample, with axes through the origin and the covered range written below. Drawn with Pillow alone.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"a scatter plot needs 2-D samples [B, 2], got shape {points.shape}")
    image_module, draw_module = _pil()
    low, high = (float(value) for value in bounds)
    finite = points[np.isfinite(points).all(axis=1)]
    if len(finite):  # widen the square to every sample, so none sits clipped on the border
        low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    margin = 24
    picture = image_module.new("RGB", (size, size), "white")
    draw = draw_module.Draw(picture)
    span = size - 2 * margin

    def pixel(value: np.ndarray | float, flip: bool) -> np.ndarray:
        unit = np.clip((np.asarray(value) - low) / (high - low), 0.0, 1.0)
        return margin + (1.0 - unit if flip else unit) * span

    draw.rectangle([margin, margin, size - margin, size - margin], outline=(160, 160, 160))
    if low < 0 < high:  # axes through the origin
        zero_x, zero_y = float(pixel(0.0, False)), float(pixel(0.0, True))
        draw.line([margin, zero_y, size - margin, zero_y], fill=(200, 200, 200))
        draw.line([zero_x, margin, zero_x, size - margin], fill=(200, 200, 200))
    draw.text((margin, size - margin + 6), f"[{low:.3g}, {high:.3g}]^2, {len(points)} samples", fill=(80, 80, 80))
    for x, y in zip(pixel(points[:, 0], False), pixel(points[:, 1], True), strict=True):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(31, 119, 180))
    return atomic_write(Path(path), lambda handle: picture.save(handle, format="PNG"))


def save_npy(samples: np.ndarray, path: str | os.PathLike) -> Path:
    """Write raw samples as .npy (atomically)."""
    return atomic_write(Path(path), lambda handle: np.save(handle, samples))
