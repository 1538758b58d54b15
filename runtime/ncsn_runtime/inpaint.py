"""Inpainting with annealed Langevin dynamics (Song & Ermon 2019, Algorithm 2), for any mask.

At schedule position ``i`` (noise level sigma_i) the known region is set to ``y_i = image + sigma_i * z_i``
when the level starts and again after every Langevin step; the unknown region evolves freely::

    x <- x * (1 - mask) + y_i * mask

``mask`` is 1 where the pixel is known (kept from ``image``) and 0 where it is to be filled, as in the
paper; it must be binary, and every sample must have something known and something to fill
(:func:`check_mask`). ``z_i`` is drawn once per level from the counter generator on its own stream
(:data:`INPAINT_STREAM`, counter ``i``), so inpainting is as reproducible as sampling and its noise never
collides with the Langevin noise (stream 0) or the initial sample (stream 1).

:func:`inpaint` is the flow behind :meth:`ncsn_runtime.pipeline.NCSNPipeline.inpaint`: fused, one call of
``inpaint.onnx`` (the same algorithm inside the sampler's ``Loop``; exported by default), or stepwise on any
stepwise graph of the export (per-step callbacks). Both give the same samples for the same seeds (<= 1e-4).
:func:`prepare_image_and_mask`, :class:`KnownRegionProjection` and :func:`run_inpaint_fused` are its parts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import GRAPHS
from .noise import INPAINT_STREAM, counter_normal, initial_sample

if TYPE_CHECKING:
    from .pipeline import Callback, NCSNPipeline, NCSNPipelineOutput
    from .sessions import GraphSessions

__all__ = ["INPAINT_MODES", "KnownRegionProjection", "check_binary", "check_mask", "inpaint", "prepare_image_and_mask",
           "run_inpaint_fused"]

logger = logging.getLogger("ncsn_runtime")

INPAINT_MODES = ("auto", "fused", "stepwise")
INPAINT_GRAPH = "inpaint"


def check_binary(mask: np.ndarray) -> None:
    """``mask`` (any shape) must hold only 0 and 1; a one-line ``ValueError`` naming the other values otherwise."""
    mask = np.asarray(mask, dtype=np.float32)
    if not np.isfinite(mask).all():
        raise ValueError("`mask` holds NaN or inf; it must hold only 0 and 1 (1 = known)")
    binary = (mask == 0.0) | (mask == 1.0)
    if not binary.all():
        bad = mask[~binary]
        raise ValueError(f"`mask` must hold only 0 and 1 (1 = known, 0 = fill in), got {bad.size} other values in "
                         f"[{float(bad.min()):g}, {float(bad.max()):g}] (mask values span [{float(mask.min()):g}, "
                         f"{float(mask.max()):g}])")


def check_mask(mask: np.ndarray) -> None:
    """``mask`` float32 [B, ...] must hold only 0 and 1, and each sample some of both; a one-line ``ValueError`` otherwise."""
    check_binary(mask)
    known = mask.reshape(len(mask), -1).sum(axis=1)
    size = mask[0].size
    for index, count in enumerate(known):
        if count == size:
            raise ValueError(f"`mask` of sample {index} is all 1 (everything known): nothing to fill in")
        if count == 0:
            raise ValueError(f"`mask` of sample {index} is all 0 (nothing known): that is plain sampling, call the "
                             "pipeline itself")


def prepare_image_and_mask(
    image: np.ndarray, mask: np.ndarray, sample_shape: Sequence[int], batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and broadcast ``image`` and ``mask`` to float32 [B, *sample_shape].

    Args:
        image: [*sample_shape] (repeated over the batch) or [B, *sample_shape], in the model's data range.
        mask: any shape that broadcasts to [B, *sample_shape], e.g. [H, W], [1, H, W], [B, 1, H, W];
            values 0 or 1 (1 = known), some of each per sample (:func:`check_mask`).
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
    check_binary(mask)  # on the mask as given: its counts are the user's, not the broadcast's
    try:
        mask = np.broadcast_to(mask.astype(np.float32), (batch_size, *shape))
    except ValueError:
        raise ValueError(
            f"`mask` shape {mask.shape} does not broadcast to the samples' shape {(batch_size, *shape)}; "
            f"pass e.g. {shape[-2:] if len(shape) >= 2 else shape}, {shape} or {(batch_size, *shape)}"
        ) from None
    check_mask(mask)
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


def run_inpaint_fused(graphs: GraphSessions, x: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray, sigmas: np.ndarray,
                      step_sizes: np.ndarray, num_annealed_steps: int, image: np.ndarray, mask: np.ndarray, progress: bool,
                      bar_config: Mapping[str, Any] | None = None) -> np.ndarray:
    """One interruptible call of ``inpaint.onnx``; float32 [B, *sample_shape].

    Args: as :func:`ncsn_runtime.sampling.run_fused`, plus ``sigmas`` float32 [N] (aligned with ``timesteps``) and
    ``image`` / ``mask`` float32 [B, *sample_shape] from :func:`prepare_image_and_mask`.
    """
    from .sampling import run_fused

    return run_fused(graphs, INPAINT_GRAPH, x, seeds, timesteps, step_sizes, num_annealed_steps, progress, bar_config,
                     extra_feeds={"sigmas": sigmas, "known": image, "mask": mask}, label="ncsn inpaint fused",
                     samples_name="inpainted samples")


def choose_inpaint_mode(pipe: NCSNPipeline, mode: str, callback: Any) -> str:
    """``"fused"`` (``inpaint.onnx``) or ``"stepwise"``: ``auto`` is fused when the export has the graph, there is no
    callback and the device is the CPU (on CUDA, as for sampling, the stepwise ``gpu_step`` path: inpaint.onnx's
    counter noise uses bitwise ops, which have no CUDA kernels)."""
    if mode not in INPAINT_MODES:
        raise ValueError(f"`mode` must be one of {INPAINT_MODES}, got {mode!r}")
    has_graph = pipe.has_graph(INPAINT_GRAPH)
    if mode == "fused":
        if not has_graph:
            from .errors import ExportDirectoryError

            raise ExportDirectoryError(f"mode='fused' needs {GRAPHS[INPAINT_GRAPH].file}, which {pipe.export_dir} does not "
                                       "have (re-export it, or use mode='stepwise')")
        if callback is not None:
            raise ValueError("`callback_on_step_end` needs stepwise inpainting; inpaint.onnx runs every step in one call")
        return "fused"
    if mode == "stepwise" or callback is not None or not has_graph or pipe.device.is_cuda:
        return "stepwise"
    return "fused"


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
    mode: str = "auto",
) -> NCSNPipelineOutput | tuple[Any]:
    """Algorithm 2 through ``inpaint.onnx`` (fused) or ``pipe``'s stepwise graph; arguments as
    :meth:`~ncsn_runtime.pipeline.NCSNPipeline.inpaint`. ``pipe.last_run.mode`` says which ran."""
    from .pipeline import NCSNPipelineOutput, RunInfo, check_output_type
    from .sessions import graph_run_errors

    tensor_inputs = pipe._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
    chosen = choose_inpaint_mode(pipe, mode, callback_on_step_end)
    if batch_size is not None:
        batch_size = pipe._check_batch(batch_size)
    image, mask = prepare_image_and_mask(image, mask, pipe.sample_shape, batch_size)
    seeds = pipe._seeds(seed, generator, len(image))
    timesteps, sigmas, step_sizes = pipe._schedule(num_inference_steps)
    check_output_type(output_type)
    start = time.perf_counter()
    x = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)
    if chosen == "fused":
        with graph_run_errors(pipe.export_dir):
            samples = run_inpaint_fused(pipe.graphs, x, seeds, timesteps, sigmas, step_sizes,
                                        pipe.scheduler.num_annealed_steps, image, mask, progress, pipe._progress_bar_config)
        engine, graph = f"{pipe.info.graphs[INPAINT_GRAPH].file} (fused Loop)", INPAINT_GRAPH
    else:
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

        with graph_run_errors(pipe.export_dir):
            samples, engine = pipe._run_stepwise(x, seeds, timesteps, step_sizes, progress,
                                                 before_level=projection.before_level, after_step=after_step, graph=graph)
        samples = samples * projection.keep + image * mask
    pipe.last_run = RunInfo(f"{chosen} (inpaint)", engine, pipe.provider, len(image), len(timesteps),
                            pipe.scheduler.num_annealed_steps, time.perf_counter() - start, graph)
    logger.info("inpaint: %s through %s", chosen, engine)
    images = pipe._postprocess(samples.astype(np.float32), output_type)
    return NCSNPipelineOutput(images, seeds) if return_dict else (images,)
