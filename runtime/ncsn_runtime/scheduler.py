"""``AnnealedLangevinDynamicsScheduler`` on numpy arrays (no torch).

Same constructor, methods and numbers as :class:`ncsn_export.scheduler.AnnealedLangevinDynamicsScheduler`;
arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schedule import langevin_update
from .scheduling_base import AnnealedLangevinSchedulerBase, _to_numpy


@dataclass
class AnnealedLangevinDynamicsOutput:
    """Output of :meth:`AnnealedLangevinDynamicsScheduler.step`.

    Attributes:
        prev_sample: float array [B, ...], the sample after one Langevin step.
    """

    prev_sample: np.ndarray

    def __getitem__(self, index: int) -> np.ndarray:
        return (self.prev_sample,)[index]


def _check_float_array(name: str, value: object) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array, got {type(value).__name__}")
    if not np.issubdtype(value.dtype, np.floating):
        raise TypeError(f"`{name}` must have a floating dtype (float32 or float64), got {value.dtype}")
    return value


class AnnealedLangevinDynamicsScheduler(AnnealedLangevinSchedulerBase):
    """Annealed Langevin dynamics (Song & Ermon 2019) for numpy samples.

    See :class:`~ncsn_runtime.scheduling_base.AnnealedLangevinSchedulerBase` for the arguments.
    ``sigmas`` / ``step_size`` are float32 arrays [N], ``timesteps`` an int64 array [N].
    """

    @property
    def timesteps(self) -> np.ndarray:
        """Level indices int64 [N], largest sigma first."""
        return self._timesteps_np.copy()

    @property
    def sigmas(self) -> np.ndarray:
        """Noise levels float32 [N], aligned with ``timesteps``."""
        return self._sigmas_np.copy()

    @property
    def step_size(self) -> np.ndarray:
        """Langevin step sizes float32 [N], aligned with ``timesteps``."""
        return self._step_size_np.copy()

    def scale_model_input(self, sample: np.ndarray, timestep: int | None = None) -> np.ndarray:
        """Identity (NCSN feeds the sample unscaled); kept for diffusers compatibility."""
        return sample

    def step(
        self,
        model_output: np.ndarray,
        timestep: int,
        sample: np.ndarray,
        return_dict: bool = True,
        generator: np.random.Generator | None = None,
        noise: np.ndarray | None = None,
    ) -> AnnealedLangevinDynamicsOutput | tuple[np.ndarray]:
        """One Langevin step ``x + alpha/2 * score + sqrt(alpha) * z`` at level ``timestep``.

        Args:
            model_output: score s(x, timestep), float array shaped like ``sample``.
            timestep: level index present in ``timesteps``, or an int array [B] (one level per sample).
            sample: current x, float array [B, ...].
            return_dict: return an :class:`AnnealedLangevinDynamicsOutput` (else a 1-tuple).
            generator: ``numpy.random.Generator`` drawing z when ``noise`` is None.
            noise: z itself, shaped like ``sample`` (e.g. from :func:`ncsn_runtime.noise.counter_normal`).
        """
        sample = _check_float_array("sample", sample)
        model_output = _check_float_array("model_output", model_output)
        if noise is not None:
            noise = _check_float_array("noise", noise)
        self.check_step_shapes(model_output.shape, sample.shape, None if noise is None else noise.shape)
        if noise is None:
            rng = generator if generator is not None else np.random.default_rng()
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"`generator` must be a numpy.random.Generator, got {type(rng).__name__}")
            noise = rng.standard_normal(sample.shape, dtype=sample.dtype)
        alpha = self.step_size_for_batch(_to_numpy(timestep), sample.shape).astype(sample.dtype)
        prev_sample = langevin_update(sample, model_output, alpha, np.sqrt(alpha), noise.astype(sample.dtype, copy=False))
        return AnnealedLangevinDynamicsOutput(prev_sample) if return_dict else (prev_sample,)

    def add_noise(self, original_samples: np.ndarray, noise: np.ndarray, timesteps: np.ndarray | int) -> np.ndarray:
        """``x + sigma_t * noise`` with one level per sample (timesteps [B]) or one for all (scalar)."""
        original_samples = _check_float_array("original_samples", original_samples)
        noise = _check_float_array("noise", noise)
        if noise.shape != original_samples.shape:
            raise ValueError(f"`noise` shape {noise.shape} must equal `original_samples` shape {original_samples.shape}")
        levels = _to_numpy(timesteps)
        sigmas = self.sigma_of(levels).astype(original_samples.dtype)
        if sigmas.ndim == 1:
            if len(sigmas) != len(original_samples):
                raise ValueError(f"`timesteps` has {len(sigmas)} entries for a batch of {len(original_samples)}")
            sigmas = sigmas.reshape((-1,) + (1,) * (original_samples.ndim - 1))
        return original_samples + noise * sigmas
