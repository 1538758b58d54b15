"""Annealed denoising score matching (Song & Ermon 2019, eq. 5-6)."""

from __future__ import annotations

import itertools

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
    (``x + sigma_i * z``), so the target score is ``-(x~ - x) / sigma_i^2 = -z / sigma_i``. The levels and the
    noise are drawn on the CPU (``generator`` is a CPU generator) and the batch then moves to the model's device,
    so a run draws the same noise on every device.

    Args:
        model: ``forward(sample [B, ...], timestep i64 [B]) -> score [B, ...]``, on any device.
        x: clean (dequantised) data, float32 [B, ...] on the CPU.
        scheduler: defines the L trained sigmas; must hold every trained level (a fresh one does).
        generator: draws the levels and the noise.

    Returns:
        scalar float32 loss.
    """
    levels = torch.randint(0, scheduler.num_train_timesteps, (len(x),), generator=generator)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    noisy = scheduler.add_noise(x, noise, levels)
    sigmas = torch.from_numpy(scheduler.sigma_of(levels.numpy())).to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    device = next(itertools.chain(model.parameters(), model.buffers()), x).device
    x, noisy, levels, sigmas = (t.to(device, non_blocking=True) for t in (x, noisy, levels, sigmas))
    score = model(noisy, levels)
    target = -(noisy - x) / sigmas**2
    per_example = 0.5 * ((score - target) ** 2).flatten(1).sum(dim=1) * sigmas.flatten() ** 2
    return per_example.mean()
