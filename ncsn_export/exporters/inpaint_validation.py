"""The export's check of ``inpaint.onnx``: the fused graph through the runtime against a torch eager inpainting.

:func:`eager_inpaint` is Algorithm 2 (Song & Ermon 2019) around the fp32 torch network, with the torch twins of the
counter noise (:mod:`ncsn_export.noise`, streams 0 and ``INPAINT_STREAM``) and of the Langevin update
(:class:`ncsn_export.step.LangevinStep`), on the dynamic check's schedule and seeds: so a wrong network fails the row,
as for the sampling graphs. The known image is a deterministic sample in the model's data range; the mask keeps the
first half of each sample's elements (the left half of an image's rows), so both regions are exercised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from ncsn_runtime.noise import INPAINT_STREAM, counter_uniform, initial_sample
from ncsn_runtime.pipeline import NCSNPipeline
from ncsn_runtime.schedule import denoise_update
from torch import nn

from ..noise import counter_normal
from ..step import LangevinStep

__all__ = ["eager_inpaint", "inpaint_check", "validation_known_and_mask"]

KNOWN_SEED = 12345  # seed of the known image (counter_uniform, stream 1, counter 1: not the samples' draws)


def validation_known_and_mask(sample_shape: Sequence[int], data_range: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(known float32 [*sample_shape] in ``data_range``, mask float32 [*sample_shape]: first half of the elements 1)."""
    shape = tuple(int(size) for size in sample_shape)
    low, high = (float(value) for value in data_range)
    known = (low + (high - low) * counter_uniform([KNOWN_SEED], 1, shape)[0]).astype(np.float32)
    if len(shape) >= 2:  # an image: the left half of every row
        mask = np.zeros(shape, np.float32)
        mask[..., : max(1, shape[-1] // 2)] = 1.0
    else:
        flat = np.zeros(math.prod(shape), np.float32)
        flat[: max(1, flat.size // 2)] = 1.0
        mask = flat.reshape(shape)
    return known, mask


@torch.no_grad()
def eager_inpaint(model: nn.Module, sample: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray, step_sizes: np.ndarray,
                  sigmas: np.ndarray, num_annealed_steps: int, known: np.ndarray, mask: np.ndarray,
                  sigma_last: float | None) -> np.ndarray:
    """Algorithm 2 in torch eager (float32 [B, ...]); ``sigma_last``: the trained sigma of the last level when the export
    applies the final denoising step (else None). Arrays as the runtime's (``known`` / ``mask`` [B, ...])."""
    x, seed = torch.from_numpy(sample), torch.from_numpy(seeds)
    image, binary = torch.from_numpy(known), torch.from_numpy(mask)
    keep = 1.0 - binary
    step = LangevinStep()
    shape = list(sample.shape[1:])
    for i, (level, alpha, sigma) in enumerate(zip(timesteps, step_sizes, sigmas, strict=True)):
        target = (image + torch.tensor(sigma) * counter_normal(seed, torch.tensor(i), shape, stream=INPAINT_STREAM)) * binary
        x = x * keep + target
        levels = torch.full((len(x),), int(level), dtype=torch.int64)
        for t in range(num_annealed_steps):
            score = model(x, levels)
            x = step(x, score, torch.tensor(alpha), seed, torch.tensor(i * num_annealed_steps + t)) * keep + target
    if sigma_last is not None:
        last = torch.full((len(x),), int(timesteps[-1]), dtype=torch.int64)
        x = denoise_update(x, model(x, last), torch.tensor(np.float32(sigma_last) ** 2))
    return (x * keep + image * binary).numpy()


def inpaint_check(pipe: NCSNPipeline, model: nn.Module, batch_size: int, num_inference_steps: int, num_annealed_steps: int,
                  seed: int) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray], str]:
    """(run the fused graph through the runtime, run the torch eager reference, the reference's label)."""
    known, mask = validation_known_and_mask(pipe.sample_shape, pipe.data_range)

    def fused() -> np.ndarray:
        pipe.scheduler.num_annealed_steps = num_annealed_steps
        return pipe.inpaint(known, mask, seed=seed, batch_size=batch_size, num_inference_steps=num_inference_steps,
                            output_type="raw", progress=False, mode="fused").images

    def reference() -> np.ndarray:
        pipe.scheduler.set_timesteps(num_inference_steps)
        timesteps, sigmas, step_sizes = pipe.scheduler.schedule_arrays()
        seeds = np.arange(batch_size, dtype=np.int64) + np.int64(seed)
        sample = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)
        batch = (batch_size, *pipe.sample_shape)
        sigma_last = float(pipe.scheduler.train_sigmas[int(timesteps[-1])]) if pipe.final_denoise else None
        known_batch = np.ascontiguousarray(np.broadcast_to(known, batch))
        mask_batch = np.ascontiguousarray(np.broadcast_to(mask, batch))
        return eager_inpaint(model, sample, seeds, timesteps, step_sizes, sigmas, num_annealed_steps, known_batch, mask_batch,
                             sigma_last)

    label = f"torch eager inpaint {num_inference_steps}x{num_annealed_steps}, B={batch_size}"
    return fused, reference, label
