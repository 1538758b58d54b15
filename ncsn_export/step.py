"""The Langevin step as a traceable ``nn.Module`` (tensors in, tensors out; no Python state)."""

from __future__ import annotations

import torch
from ncsn_runtime.schedule import langevin_update
from torch import nn

from .noise import counter_normal


class LangevinStep(nn.Module):
    """``x' = x + alpha/2 * score + sqrt(alpha) * z`` with counter noise ``z = normal(seed[b], counter)``.

    Exportable with ``torch.onnx.export(dynamo=True)`` and ``torch.jit.script``.

    Inputs:
        sample: float32 [B, ...], the current x.
        score: float32 [B, ...], s(x, level) from the score network.
        step_size: float32 scalar tensor, alpha of the current level.
        seed: int64 [B], one seed per sample.
        counter: int64 scalar tensor, the global Langevin step index (see
            :func:`ncsn_runtime.noise.langevin_counter`).

    Returns:
        float32 [B, ...], the next x.
    """

    def forward(
        self,
        sample: torch.Tensor,
        score: torch.Tensor,
        step_size: torch.Tensor,
        seed: torch.Tensor,
        counter: torch.Tensor,
    ) -> torch.Tensor:
        noise = counter_normal(seed, counter, list(sample.shape[1:]))  # default stream: LANGEVIN_STREAM
        return langevin_update(sample, score, step_size, torch.sqrt(step_size), noise)
