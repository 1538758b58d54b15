"""Annealed denoising score matching (Song & Ermon 2019, eq. 5-6)."""

from __future__ import annotations

import torch
from torch import nn

from ..scheduler import AnnealedLangevinDynamicsScheduler


def annealed_dsm_loss(
    model: nn.Module,
    x: torch.Tensor,
    scheduler: AnnealedLangevinDynamicsScheduler,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean over the batch of ``sigma_i^2 * 1/2 * ||s(x~, i) + (x~ - x) / sigma_i^2||^2``.

    Each example gets its own level ``i`` uniform in [0, L); ``x~ = scheduler.add_noise(x, z, i)``
    (``x + sigma_i * z``), so the target score is ``-(x~ - x) / sigma_i^2 = -z / sigma_i``.

    Args:
        model: ``forward(sample [B, ...], timestep i64 [B]) -> score [B, ...]``.
        x: clean (dequantised) data, float32 [B, ...].
        scheduler: defines the L trained sigmas; must hold every trained level (a fresh one does).
        generator: draws the levels and the noise.

    Returns:
        scalar float32 loss.
    """
    levels = torch.randint(0, scheduler.num_train_timesteps, (len(x),), generator=generator)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    noisy = scheduler.add_noise(x, noise, levels)
    sigmas = torch.from_numpy(scheduler.sigma_of(levels.numpy())).to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    score = model(noisy, levels)
    target = -(noisy - x) / sigmas**2
    per_example = 0.5 * ((score - target) ** 2).flatten(1).sum(dim=1) * sigmas.flatten() ** 2
    return per_example.mean()
