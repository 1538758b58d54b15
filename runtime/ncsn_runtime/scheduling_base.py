"""Array-library-neutral core of ``AnnealedLangevinDynamicsScheduler``.

The numpy scheduler (:mod:`ncsn_runtime.scheduler`) and the torch scheduler
(:mod:`ncsn_export.scheduler`) both derive from :class:`AnnealedLangevinSchedulerBase`, so the
schedule, its validation and the config format exist once. The schedule state is kept as numpy
arrays; subclasses only convert it to their tensor type and implement ``step`` / ``add_noise``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import FrozenConfig, check_scheduler_config, load_scheduler_config, save_scheduler_config
from .schedule import (
    check_count,
    check_positive_float,
    check_sigma_range,
    geometric_sigmas,
    spanning_timesteps,
    step_sizes,
)


class AnnealedLangevinSchedulerBase:
    """Schedule state and validation shared by the numpy and torch schedulers.

    Args:
        num_train_timesteps: number L of noise levels the score network was trained on (>= 1).
        num_annealed_steps: Langevin steps T per noise level (>= 1).
        sigma_min: smallest trained noise standard deviation (> 0).
        sigma_max: largest trained noise standard deviation (> sigma_min).
        sampling_eps: Langevin step-size scale epsilon (> 0); level i gets
            ``alpha_i = sampling_eps * (sigma_i / sigma_last)**2``.

    After construction ``timesteps == [0, ..., L-1]``: every trained level, largest sigma first.
    ``timesteps`` are level indices (what the network takes); ``sigmas`` and ``step_size`` are
    aligned with them, entry for entry.
    """

    order = 1
    config_name = "scheduler_config.json"

    def __init__(
        self,
        num_train_timesteps: int,
        num_annealed_steps: int,
        sigma_min: float,
        sigma_max: float,
        sampling_eps: float,
    ) -> None:
        self._config = FrozenConfig(check_scheduler_config(
            {"num_train_timesteps": num_train_timesteps, "num_annealed_steps": num_annealed_steps, "sigma_min": sigma_min,
             "sigma_max": sigma_max, "sampling_eps": sampling_eps}, "the scheduler config"))
        self.num_train_timesteps = self._config.num_train_timesteps
        self.num_annealed_steps = self._config.num_annealed_steps
        self.num_inference_steps: int | None = None
        self.train_sigmas = geometric_sigmas(self._config.sigma_max, self._config.sigma_min, self.num_train_timesteps)
        self._set_schedule(np.arange(self.num_train_timesteps, dtype=np.int64), self.train_sigmas, self._config.sampling_eps)

    # -- config -----------------------------------------------------------------------------
    @property
    def config(self) -> FrozenConfig:
        """The five constructor parameters (read-only; keys also read as attributes)."""
        return self._config

    @classmethod
    def from_config(cls, config: dict[str, Any], **overrides: Any):
        """Build a scheduler from a config mapping (extra keys such as ``_class_name`` are ignored)."""
        params = {key: value for key, value in dict(config, **overrides).items() if not key.startswith("_")}
        return cls(**params)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs):
        """Load from a directory holding ``scheduler_config.json`` (or a ``scheduler/`` subfolder)."""
        return cls(**dict(load_scheduler_config(pretrained_model_name_or_path, subfolder), **kwargs))

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> Path:
        """Write ``save_directory/scheduler_config.json`` in diffusers' format; returns its path."""
        return save_scheduler_config(save_directory, self.config)

    # -- schedule ---------------------------------------------------------------------------
    def _set_schedule(self, timesteps: np.ndarray, sigmas: np.ndarray, sampling_eps: float, device: Any = None) -> None:
        self._timesteps_np = np.ascontiguousarray(timesteps, dtype=np.int64)
        self._sigmas_np = np.ascontiguousarray(sigmas, dtype=np.float32)
        self._step_size_np = step_sizes(self._sigmas_np, sampling_eps)
        self._sampling_eps = sampling_eps
        self._position_of_level = np.full(self.num_train_timesteps, -1, dtype=np.int64)
        self._position_of_level[self._timesteps_np] = np.arange(len(self._timesteps_np))
        self._schedule_changed(device)

    def _schedule_changed(self, device: Any) -> None:
        """Hook for subclasses that cache converted tensors."""

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        sampling_eps: float | None = None,
        device: Any = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Choose the noise levels to sample with (run before inference).

        Args:
            num_inference_steps: number n of levels, 1 <= n <= num_train_timesteps, spread evenly
                from the first trained level (largest sigma) to the last (smallest sigma).
            sampling_eps: step-size scale for this schedule; ``None`` keeps the config value.
            device: torch side only: where the schedule tensors live.
            timesteps: custom, strictly increasing level indices in [0, num_train_timesteps);
                exclusive with ``num_inference_steps``.
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of `num_inference_steps` and `timesteps`")
        eps = self.config.sampling_eps if sampling_eps is None else check_positive_float("sampling_eps", sampling_eps)
        if timesteps is not None:
            levels = self._check_custom_timesteps(timesteps)
        else:
            count = check_count("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
            levels = spanning_timesteps(count, self.num_train_timesteps)
        self.num_inference_steps = len(levels)
        self._set_schedule(levels, self.train_sigmas[levels], eps, device)

    def _check_custom_timesteps(self, timesteps: Sequence[int]) -> np.ndarray:
        levels = np.asarray(_to_numpy(timesteps))
        if levels.ndim != 1 or levels.size == 0:
            raise ValueError(f"`timesteps` must be a non-empty 1-D list of ints, got shape {levels.shape}")
        if not np.issubdtype(levels.dtype, np.integer):
            raise TypeError(f"`timesteps` must hold ints, got dtype {levels.dtype}")
        top = self.num_train_timesteps - 1
        if levels.min() < 0 or levels.max() > top:
            raise ValueError(f"`timesteps` must lie in [0, {top}], got {levels.tolist()}")
        if (np.diff(levels) <= 0).any():
            raise ValueError(f"`timesteps` must be strictly increasing (largest sigma first), got {levels.tolist()}")
        return levels.astype(np.int64)

    def set_sigmas(
        self,
        num_inference_steps: int,
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        sampling_eps: float | None = None,
    ) -> None:
        """Set n geometric sigmas between custom bounds (run before inference).

        ``None`` means "use the config value"; 0.0 is a value (and rejected: sigmas must be > 0).
        ``timesteps`` become the n evenly spread trained levels, so the network is conditioned on
        the trained levels nearest in rank while the Langevin steps use the custom sigmas.
        """
        count = check_count("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
        low, high = check_sigma_range(
            self.config.sigma_min if sigma_min is None else sigma_min,
            self.config.sigma_max if sigma_max is None else sigma_max,
        )
        eps = self.config.sampling_eps if sampling_eps is None else check_positive_float("sampling_eps", sampling_eps)
        self.num_inference_steps = count
        self._set_schedule(spanning_timesteps(count, self.num_train_timesteps), geometric_sigmas(high, low, count), eps)

    # -- lookups used by step / add_noise -------------------------------------------------------
    @property
    def sampling_eps(self) -> float:
        """Step-size scale of the current schedule."""
        return self._sampling_eps

    def schedule_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(timesteps int64 [N], sigmas float32 [N], step_size float32 [N]) as numpy copies."""
        return self._timesteps_np.copy(), self._sigmas_np.copy(), self._step_size_np.copy()

    def positions_of(self, timesteps: np.ndarray) -> np.ndarray:
        """Schedule positions of level indices (a scalar, or one per sample [B]); error naming the accepted levels
        when absent. More than one dim (e.g. ``[[0, 9]]``, which would broadcast a sigma per feature) is refused."""
        levels = np.asarray(timesteps)
        if not np.issubdtype(levels.dtype, np.integer):
            raise TypeError(f"`timestep` must be an int level index, got dtype {levels.dtype}")
        if levels.ndim > 1:
            raise ValueError(f"`timestep` must be one level (a scalar) or one per sample (shape [B]), got shape {levels.shape}")
        top = self.num_train_timesteps - 1
        if levels.size and (levels.min() < 0 or levels.max() > top):
            raise ValueError(f"`timestep` must be a trained level in [0, {top}], got {levels.ravel().tolist()}")
        positions = self._position_of_level[levels]
        if (positions < 0).any():
            raise ValueError(
                f"`timestep` {levels.ravel().tolist()} is not in the current schedule "
                f"(timesteps={self._timesteps_np.tolist()}); call set_timesteps() to include it"
            )
        return positions

    def step_size_of(self, timestep: int) -> np.float32:
        """Step size alpha of level ``timestep`` in the current schedule (float32)."""
        return self._step_size_np[self.positions_of(np.asarray(timestep))]

    def step_size_for_batch(self, timestep: Any, sample_shape: tuple) -> np.ndarray:
        """Step sizes (float32) for ``step``: a scalar for one level, or [B, 1, ...] for one level per sample.

        A per-sample ``timestep`` must be 1-D with one entry per sample (B = ``sample_shape[0]``); each
        sample then uses its own level's step size.
        """
        levels = np.asarray(timestep)
        alpha = self._step_size_np[self.positions_of(levels)]
        if alpha.ndim == 0:
            return alpha
        batch = sample_shape[0] if len(sample_shape) else None
        if alpha.ndim != 1 or batch is None or len(alpha) != batch:
            raise ValueError(f"`timestep` must be an int or a 1-D array with one level per sample (batch {batch}), "
                             f"got shape {levels.shape}")
        return alpha.reshape((-1,) + (1,) * (len(sample_shape) - 1))

    def sigma_of(self, timesteps: np.ndarray) -> np.ndarray:
        """Sigmas (float32) of level indices in the current schedule."""
        return self._sigmas_np[self.positions_of(timesteps)]

    @staticmethod
    def check_step_shapes(model_output_shape: tuple, sample_shape: tuple, noise_shape: tuple | None) -> None:
        if tuple(model_output_shape) != tuple(sample_shape):
            raise ValueError(f"`model_output` shape {tuple(model_output_shape)} must equal `sample` shape {tuple(sample_shape)}")
        if noise_shape is not None and tuple(noise_shape) != tuple(sample_shape):
            raise ValueError(f"`noise` shape {tuple(noise_shape)} must equal `sample` shape {tuple(sample_shape)}")

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        return f"{type(self).__name__}({params})"


def _to_numpy(values: Any) -> np.ndarray:
    """Plain lists, numpy arrays and (without importing torch) anything with ``.cpu().numpy()``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)
