"""Eager annealed Langevin sampling in torch (training-time grids, evaluation), plus a PNG grid writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ncsn_runtime.images import save_grid_png, to_numpy_images
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
        final_denoise: finish with ``x + sigma_last^2 * s(x, last level)`` (NCSNv2), ``sigma_last =
            train_sigmas[timesteps[-1]]`` like :class:`~ncsn_export.sampler.AnnealedLangevinSampler`.

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
        sigma = float(scheduler.train_sigmas[last])  # the trained level's sigma, as the exported graphs use
        x = denoise_update(x, model(x, torch.full((batch,), last, dtype=torch.int64)), sigma**2)
    return x


def save_image_grid(images: np.ndarray | torch.Tensor, path: str | Path, data_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write float images [B, C, H, W] (values in ``data_range``) as one square-ish PNG grid, atomically.

    The runtime's writer (:func:`ncsn_runtime.images.save_grid_png`) does the work, so training grids and
    ``ncsn-sample`` grids look the same.
    """
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return save_grid_png(to_numpy_images(array, data_range), path)
