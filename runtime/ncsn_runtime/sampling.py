"""The sampling modes of :class:`~ncsn_runtime.pipeline.NCSNPipeline`: fused, stepwise, and the final denoise.

* :func:`run_fused`: one call of ``sampler.onnx`` / ``gpu_sampler.onnx`` runs the whole annealed loop (an ONNX
  ``Loop``); only the result is checked for NaN/inf.
* :func:`run_stepwise`: Python drives a stepper (:mod:`ncsn_runtime.steppers`) one Langevin step at a time, with
  hooks before each level and after each step (callbacks, inpainting), a progress bar, and NaN/inf located
  by level and step.
* :func:`denoise` / :func:`denoise_on_stepper`: NCSNv2's final ``x + sigma_last**2 * s(x, level_last)``.

Sessions and steppers come from :class:`~ncsn_runtime.sessions.GraphSessions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .contract import GRAPHS
from .conventions import NoBar
from .conventions import progress_bar as conventions_progress_bar
from .interrupt import run_interruptibly
from .schedule import denoise_update
from .sessions import GraphSessions, check_graph_output
from .steppers import GpuStepStepper, NonFiniteSampleError, bad_samples, check_graph_io, langevin_loop

__all__ = ["StepHook", "denoise", "denoise_on_stepper", "progress_bar", "run_fused", "run_stepwise"]

StepHook = Callable[[int, int, np.ndarray], "np.ndarray | None"]  # (position, annealed_step, x) -> new x or None


def progress_bar(total: int, enabled: bool, description: str, config: Mapping[str, Any] | None = None) -> Any:
    """A tqdm bar of ``total`` steps (on stderr), or a no-op bar when disabled or tqdm is missing.

    ``config``: tqdm keyword arguments (the pipeline's ``set_progress_bar_config``) over the defaults here;
    ``{"disable": True}`` hides the bar.
    """
    if not enabled:
        return NoBar()
    options: dict[str, Any] = {"desc": description, "unit": "step", "leave": False, **(config or {})}
    return conventions_progress_bar(total=total, config=options)


def run_fused(graphs: GraphSessions, graph: str, x: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray,
              step_sizes: np.ndarray, num_annealed_steps: int, progress: bool,
              bar_config: Mapping[str, Any] | None = None, *, extra_feeds: Mapping[str, np.ndarray] | None = None,
              label: str = "ncsn fused", samples_name: str = "final samples") -> np.ndarray:
    """The whole loop in one interruptible call of the fused ``graph``; float32 [B, *sample_shape].

    Args:
        x: float32 [B, *sample_shape] initial sample; seeds: int64 [B]; timesteps: int64 [N] levels;
        step_sizes: float32 [N]; num_annealed_steps: T steps per level; bar_config: tqdm options (see
        :func:`progress_bar`); extra_feeds: the graph's inputs beyond the sampler's five (``inpaint.onnx``'s
        ``sigmas`` / ``known`` / ``mask``); label / samples_name: the progress bar's and the NaN error's words.
    """
    session = graphs.session(graph)
    spec = GRAPHS[graph]
    output = check_graph_io(session, spec.file, spec.input_names)
    bar = progress_bar(1, progress, f"{label} ({len(timesteps)} levels x {num_annealed_steps} steps in one graph)", bar_config)
    feeds = {"sample": x, "seed": seeds, "timesteps": timesteps, "step_sizes": step_sizes,
             "num_annealed_steps": np.array(num_annealed_steps, dtype=np.int64), **(extra_feeds or {})}
    try:
        samples = run_interruptibly(session, [output], feeds)[0]
    finally:
        bar.update(1)
        bar.close()
    check_graph_output(samples, x.shape, spec.file)
    bad = bad_samples(samples)
    if bad:
        raise NonFiniteSampleError(
            f"NaN/inf in the {samples_name} {bad[:10]} (fused mode checks only the result; rerun with "
            "mode='stepwise' to find the level and step where it first appears)", samples=bad)
    return samples


def run_stepwise(graphs: GraphSessions, stepper: Any, x: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray,
                 step_sizes: np.ndarray, num_annealed_steps: int, progress: bool, *, final_denoise_sigma: float | None,
                 before_level: StepHook | None = None, after_step: StepHook | None = None,
                 bar_config: Mapping[str, Any] | None = None) -> np.ndarray:
    """Drive ``stepper`` through the schedule; float32 [B, *sample_shape].

    ``final_denoise_sigma``: sigma of the last trained level when the export applies NCSNv2's final denoising
    step (through ``gpu_step`` itself, else ``score.onnx``), ``None`` when it does not.
    """
    stepper.reset(x, seeds)
    bar = progress_bar(len(timesteps) * num_annealed_steps, progress, "ncsn stepwise", bar_config)
    try:
        langevin_loop(stepper, timesteps, step_sizes, num_annealed_steps, before_level=before_level, after_step=after_step,
                      on_step=lambda _: bar.update(1))
    finally:
        bar.close()
    last_level = int(timesteps[-1])
    if final_denoise_sigma is not None and isinstance(stepper, GpuStepStepper):
        return check_graph_output(denoise_on_stepper(stepper, last_level, final_denoise_sigma), x.shape, stepper.kind)
    samples = check_graph_output(stepper.read(), x.shape, stepper.kind)
    if final_denoise_sigma is not None:
        samples = denoise(graphs, samples, last_level, final_denoise_sigma)
    return samples


def denoise_on_stepper(stepper: GpuStepStepper, last_level: int, sigma: float) -> np.ndarray:
    """The final denoising step through gpu_step: step_size = 2 * sigma_last**2, z = 0 (the contract's definition)."""
    stepper.denoise(last_level, float(np.float32(2.0 * sigma * sigma)))
    return check_denoised(stepper.read(), last_level)


def denoise(graphs: GraphSessions, samples: np.ndarray, last_level: int, sigma: float) -> np.ndarray:
    """NCSNv2's ``x + sigma_last**2 * s(x, level_last)`` through ``score.onnx`` (as the fused graph computes it)."""
    session = graphs.session("score")
    spec = GRAPHS["score"]
    output = check_graph_io(session, spec.file, spec.input_names)
    feeds = {"sample": samples, "timestep": np.full(len(samples), last_level, dtype=np.int64)}
    score = run_interruptibly(session, [output], feeds)[0]
    check_graph_output(score, samples.shape, spec.file)
    return check_denoised(denoise_update(samples, score, sigma * sigma).astype(np.float32), last_level)


def check_denoised(samples: np.ndarray, last_level: int) -> np.ndarray:
    """``samples`` after the final denoising step, or :class:`NonFiniteSampleError` naming the samples gone NaN/inf."""
    bad = bad_samples(samples)
    if bad:
        raise NonFiniteSampleError(f"NaN/inf appeared in the final denoising step (level {last_level}) in samples {bad[:10]}",
                                   level=last_level, samples=bad)
    return samples
