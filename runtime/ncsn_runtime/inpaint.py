"""Inpainting with annealed Langevin dynamics (Song & Ermon 2019, Algorithm 2), for any mask.

At schedule position ``i`` (noise level sigma_i) the known region is set to ``y_i = image + sigma_i * z_i``
when the level starts and again after every Langevin step; the unknown region evolves freely::

    x <- x * (1 - mask) + y_i * mask

``mask`` is 1 where the pixel is known (kept from ``image``) and 0 where it is to be filled, as in the
paper; values in between blend. ``z_i`` is drawn once per level from the counter generator on its own
stream (:data:`INPAINT_STREAM`, counter ``i``), so inpainting is as reproducible as sampling and its
noise never collides with the Langevin noise (stream 0) or the initial sample (stream 1).

:func:`inpaint` is the flow behind :meth:`ncsn_runtime.pipeline.NCSNPipeline.inpaint` (stepwise, on any stepwise
graph of the export); :func:`prepare_image_and_mask` and :class:`KnownRegionProjection` are its numpy parts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .noise import INPAINT_STREAM, counter_normal, initial_sample

if TYPE_CHECKING:
    from .pipeline import Callback, NCSNPipeline, NCSNPipelineOutput

__all__ = ["KnownRegionProjection", "inpaint", "prepare_image_and_mask"]


def prepare_image_and_mask(
    image: np.ndarray, mask: np.ndarray, sample_shape: Sequence[int], batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and broadcast ``image`` and ``mask`` to float32 [B, *sample_shape].

    Args:
        image: [*sample_shape] (repeated over the batch) or [B, *sample_shape], in the model's data range.
        mask: any shape that broadcasts to [B, *sample_shape], e.g. [H, W], [1, H, W], [B, 1, H, W];
            values in [0, 1] (1 = known).
        sample_shape: per-sample shape of the export.
        batch_size: B; ``None`` takes it from a batched image (else 1).
    """
    shape = tuple(int(size) for size in sample_shape)
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise TypeError(f"`image` must be a real numeric array, got dtype {image.dtype}")
    if image.shape == shape:
        image = image[None]
    elif image.shape[1:] != shape:
        raise ValueError(f"`image` must have shape {shape} or [B, *{shape}], got {image.shape}")
    if batch_size is None:
        batch_size = len(image)
    if len(image) not in (1, batch_size):
        raise ValueError(f"`image` holds {len(image)} images but batch_size is {batch_size}")
    image = np.broadcast_to(image.astype(np.float32), (batch_size, *shape))
    if not np.isfinite(image).all():
        raise ValueError("`image` holds NaN or inf")
    mask = np.asarray(mask)
    if mask.dtype != bool and (not np.issubdtype(mask.dtype, np.number) or np.iscomplexobj(mask)):
        raise TypeError(f"`mask` must be a bool or real numeric array, got dtype {mask.dtype}")
    try:
        mask = np.broadcast_to(mask.astype(np.float32), (batch_size, *shape))
    except ValueError:
        raise ValueError(
            f"`mask` shape {mask.shape} does not broadcast to the samples' shape {(batch_size, *shape)}; "
            f"pass e.g. {shape[-2:] if len(shape) >= 2 else shape}, {shape} or {(batch_size, *shape)}"
        ) from None
    if not np.isfinite(mask).all() or mask.min() < 0.0 or mask.max() > 1.0:
        raise ValueError(f"`mask` values must lie in [0, 1] (1 = known), got [{mask.min()}, {mask.max()}]")
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class KnownRegionProjection:
    """``x -> x * (1 - mask) + (image + sigma_i * z_i) * mask`` at schedule position ``i``.

    Args:
        image, mask: float32 [B, ...] from :func:`prepare_image_and_mask`.
        seeds: int64 [B] per-sample seeds.
        sigmas: float32 [N], the schedule's noise levels (aligned with its timesteps).
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, seeds: np.ndarray, sigmas: np.ndarray) -> None:
        self.image, self.mask, self.seeds = image, mask, np.asarray(seeds, dtype=np.int64)
        self.sigmas = np.asarray(sigmas, dtype=np.float32)
        self.keep = (1.0 - mask).astype(np.float32)
        self._position: int | None = None
        self._target: np.ndarray | None = None

    def target(self, position: int) -> np.ndarray:
        """``y_i = image + sigma_i * z_i``, float32 [B, ...] (cached for the current level)."""
        if position != self._position:
            noise = counter_normal(self.seeds, position, self.image.shape[1:], stream=INPAINT_STREAM)
            self._target = self.image + self.sigmas[position] * noise
            self._position = position
        return self._target

    def project(self, position: int, sample: np.ndarray) -> np.ndarray:
        """Replace the known region of ``sample`` with ``y_i``."""
        return sample * self.keep + self.target(position) * self.mask

    def before_level(self, position: int, sample: np.ndarray) -> np.ndarray:
        return self.project(position, sample)

    def after_step(self, position: int, annealed_step: int, sample: np.ndarray) -> np.ndarray:
        return self.project(position, sample)


def inpaint(
    pipe: NCSNPipeline,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    seed: int | Sequence[int] | None = None,
    generator: np.random.Generator | Any | None = None,
    batch_size: int | None = None,
    num_inference_steps: int | None = None,
    output_type: str = "np",
    return_dict: bool = True,
    callback_on_step_end: Callback | None = None,
    progress: bool = True,
    callback_on_step_end_tensor_inputs: list[str] | None = None,
) -> NCSNPipelineOutput | tuple[Any]:
    """Algorithm 2 on ``pipe``'s stepwise graph; arguments as :meth:`~ncsn_runtime.pipeline.NCSNPipeline.inpaint`."""
    from .pipeline import NCSNPipelineOutput, RunInfo, check_output_type
    from .sessions import graph_run_errors

    tensor_inputs = pipe._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
    if batch_size is not None:
        batch_size = pipe._check_batch(batch_size)
    image, mask = prepare_image_and_mask(image, mask, pipe.sample_shape, batch_size)
    seeds = pipe._seeds(seed, generator, len(image))
    timesteps, sigmas, step_sizes = pipe._schedule(num_inference_steps)
    check_output_type(output_type)
    graph = pipe.choose_graph("stepwise")
    projection = KnownRegionProjection(image, mask, seeds, sigmas)
    user_hook = None if callback_on_step_end is None else pipe._callback_hook(callback_on_step_end, timesteps, sigmas,
                                                                                       tensor_inputs)

    def after_step(position: int, annealed_step: int, x: np.ndarray) -> np.ndarray:
        x = projection.after_step(position, annealed_step, x)
        if user_hook is not None:
            replaced = user_hook(position, annealed_step, x)
            x = x if replaced is None else replaced
        return x

    start = time.perf_counter()
    x = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)
    with graph_run_errors(pipe.export_dir):
        samples, engine = pipe._run_stepwise(x, seeds, timesteps, step_sizes, progress,
                                             before_level=projection.before_level, after_step=after_step, graph=graph)
    samples = samples * projection.keep + image * mask
    pipe.last_run = RunInfo("stepwise (inpaint)", engine, pipe.provider, len(image), len(timesteps),
                            pipe.scheduler.num_annealed_steps, time.perf_counter() - start, graph)
    images = pipe._postprocess(samples.astype(np.float32), output_type)
    return NCSNPipelineOutput(images, seeds) if return_dict else (images,)
