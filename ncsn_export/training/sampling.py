"""Eager annealed Langevin sampling in torch (training-time grids, evaluation), plus a PNG grid writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ncsn_runtime.schedule import denoise_update
from torch import nn

from ..scheduler import AnnealedLangevinDynamicsScheduler


@torch.no_grad()
def annealed_langevin(
    model: nn.Module,
    scheduler: AnnealedLangevinDynamicsScheduler,
    sample: torch.Tensor,
    generator: torch.Generator | None = None,
    final_denoise: bool = False,
) -> torch.Tensor:
    """Run ``scheduler``'s current schedule: for each level, ``num_annealed_steps`` Langevin steps.

    Args:
        model: ``forward(sample, timestep i64 [B]) -> score``.
        scheduler: schedule already set (``set_timesteps``); T = ``config.num_annealed_steps``.
        sample: initial x, float32 [B, ...] (e.g. uniform in the init range).
        generator: draws the Langevin noise.
        final_denoise: finish with ``x + sigma_last^2 * s(x, last level)`` (NCSNv2).

    Returns:
        final x, float32 [B, ...].
    """
    x = sample
    batch = len(x)
    for level in scheduler.timesteps:
        levels = torch.full((batch,), int(level), dtype=torch.int64)
        for _ in range(scheduler.config.num_annealed_steps):
            x = scheduler.step(model(x, levels), int(level), x, generator=generator).prev_sample
    if final_denoise:
        last = int(scheduler.timesteps[-1])
        sigma = float(scheduler.sigmas[-1])
        x = denoise_update(x, model(x, torch.full((batch,), last, dtype=torch.int64)), sigma**2)
    return x


def save_image_grid(images: np.ndarray | torch.Tensor, path: str | Path, data_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write float images [B, C, H, W] (C = 1 or 3, values in ``data_range``) as one square-ish PNG grid."""
    from PIL import Image

    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise ValueError(f"`images` must be [B, 1 or 3, H, W], got shape {array.shape}")
    low, high = data_range
    pixels = np.clip((array - low) / (high - low), 0.0, 1.0)
    pixels = (pixels * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    count, height, width, channels = pixels.shape
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    pad = 2
    grid = np.zeros((rows * (height + pad) + pad, cols * (width + pad) + pad, channels), dtype=np.uint8)
    for k in range(count):
        r, c = divmod(k, cols)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = pixels[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(tmp)
    tmp.replace(path)
    return path
