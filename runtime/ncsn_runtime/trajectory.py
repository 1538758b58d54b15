"""The annealing as a picture: the samples after every noise level, recorded through the pipeline's step callback.

:class:`LevelRecorder` is a ``callback_on_step_end`` for :class:`~ncsn_runtime.pipeline.NCSNPipeline` that keeps a
copy of the sample after the last Langevin step of each level; it changes nothing. A callback makes the pipeline
run stepwise (the fused ``sampler.onnx`` runs every level inside one ONNX ``Loop`` and cannot stop between them),
and stepwise and fused give the same samples for the same seeds (<= 1e-4).

:func:`save_trajectory_png` writes rows = samples, columns = levels; :func:`save_trajectory_gif` one frame per level,
each frame the grid ``ncsn-sample --output X.png`` writes. In both the last level is the returned sample, i.e. after
the final denoising step when the export applies one (the callback runs after Langevin steps only).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .fileio import atomic_write
from .images import grid_picture

__all__ = ["GIF_FRAME_MS", "GIF_LAST_FRAME_MS", "LevelRecorder", "save_trajectory_gif", "save_trajectory_png",
           "trajectory_images"]

GIF_FRAME_MS = 250  # each level's frame
GIF_LAST_FRAME_MS = 2000  # the final samples stay up before the loop restarts


class LevelRecorder:
    """``callback_on_step_end`` keeping the sample after each level's last Langevin step.

    Args:
        num_annealed_steps: T, Langevin steps per level (``pipe.scheduler.num_annealed_steps``): step index ``i``
            ends a level when ``(i + 1) % T == 0``, both for the pipeline's ``step_index`` (the annealed step
            within its level, the seed's numbering) and for a count across levels (``kwargs["global_step"]``).

    Attributes:
        levels: one float32 [B, *sample_shape] copy per finished level, in schedule order.
        sigmas: the noise level of each (``nan`` where the callback's kwargs carry no ``sigma``).
    """

    def __init__(self, num_annealed_steps: int) -> None:
        if num_annealed_steps < 1:
            raise ValueError(f"num_annealed_steps must be >= 1, got {num_annealed_steps}")
        self.num_annealed_steps = int(num_annealed_steps)
        self.levels: list[np.ndarray] = []
        self.sigmas: list[float] = []

    def __call__(self, pipe: Any, step_index: int, timestep: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        if (int(step_index) + 1) % self.num_annealed_steps == 0:
            self.levels.append(np.array(kwargs["sample"], dtype=np.float32, copy=True))  # the stepper reuses its buffer
            self.sigmas.append(float(kwargs.get("sigma", float("nan"))))
        return {}  # nothing replaced


def trajectory_images(levels: list[np.ndarray], final: np.ndarray) -> np.ndarray:
    """float32 [L, B, *sample_shape]: the recorded levels with the last one replaced by ``final`` (the returned
    samples, after the final denoising step if any)."""
    if not levels:
        raise ValueError("no noise level was recorded (did the sampler run stepwise with the recorder as its callback?)")
    stack = np.stack(levels).astype(np.float32)
    if stack.shape[1:] != final.shape:
        raise ValueError(f"recorded levels of shape {list(stack.shape[1:])} do not match the final samples' {list(final.shape)}")
    stack[-1] = final
    return stack


def save_trajectory_png(images: np.ndarray, path: str | os.PathLike, scale: int | None = None) -> Path:
    """images float [L, B, H, W, C] in [0, 1] -> one PNG (atomically): row b is sample b, column l its state after
    level l; each image ``scale`` times (``None``: the automatic scale of the grids) with the grids' grey gap."""
    levels, count = images.shape[:2]
    by_sample = np.swapaxes(images, 0, 1).reshape(count * levels, *images.shape[2:])  # sample-major: one row each
    picture = grid_picture(by_sample, nrow=levels, scale=scale)
    return atomic_write(Path(path), lambda handle: picture.save(handle, format="PNG"))


def save_trajectory_gif(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None,
                        scale: int | None = None) -> Path:
    """images float [L, B, H, W, C] in [0, 1] -> an animated GIF (atomically, looping): frame l is the grid of the B
    samples after level l (``nrow`` per row, as ``--output X.png``), GIF_FRAME_MS each, the last GIF_LAST_FRAME_MS."""
    frames = [grid_picture(level, nrow, scale) for level in images]
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_FRAME_MS]
    return atomic_write(Path(path), lambda handle: frames[0].save(
        handle, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False,
        disposal=1))
