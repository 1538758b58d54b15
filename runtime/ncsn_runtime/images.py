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


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile [B, H, W, C] images (any dtype) into one [rows*(H+p)+p, cols*(W+p)+p, C] array; ``nrow`` = images per row."""
    count, height, width, channels = images.shape
    cols = nrow or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * (height + padding) + padding, cols * (width + padding) + padding, channels), dtype=images.dtype)
    for index, image in enumerate(images):
        top = padding + (index // cols) * (height + padding)
        left = padding + (index % cols) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


def save_grid_png(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Write [B, H, W, C] images in [0, 1] as one PNG grid (atomically)."""
    image_module, _ = _pil()
    pixels = make_grid(to_uint8(images), nrow)
    picture = image_module.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
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
