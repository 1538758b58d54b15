"""The export's check of ``inpaint.onnx``: the fused graph against the runtime's stepwise inpainting.

No torch reference inpaints, so the reference is :func:`ncsn_runtime.inpaint.inpaint` through the stepwise
graph (itself validated against torch eager by the sampling rows), on the dynamic check's schedule and seeds.
The known image is a deterministic sample in the model's data range; the mask keeps the first half of each
sample's elements (the left half of an image's rows), so both regions are exercised.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from ncsn_runtime.noise import counter_uniform
from ncsn_runtime.pipeline import NCSNPipeline

__all__ = ["inpaint_check", "validation_known_and_mask"]

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


def inpaint_check(pipe: NCSNPipeline, batch_size: int, num_inference_steps: int, num_annealed_steps: int,
                  seed: int) -> tuple[Callable[[], np.ndarray], Callable[[], np.ndarray], str]:
    """(run the fused graph, run the stepwise reference, the reference's label) for the validation table."""
    known, mask = validation_known_and_mask(pipe.sample_shape, pipe.data_range)

    def run(mode: str) -> np.ndarray:
        pipe.scheduler.num_annealed_steps = num_annealed_steps
        return pipe.inpaint(known, mask, seed=seed, batch_size=batch_size, num_inference_steps=num_inference_steps,
                            output_type="raw", progress=False, mode=mode).images

    label = f"runtime stepwise inpaint {num_inference_steps}x{num_annealed_steps}, B={batch_size}"
    return (lambda: run("fused")), (lambda: run("stepwise")), label
