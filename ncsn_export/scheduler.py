"""``AnnealedLangevinDynamicsScheduler`` on torch tensors: the documented diffusers-ncsn API.

Numbers match PyPI ``diffusers-ncsn`` (``ncsn.scheduler``) where the APIs overlap, with its
defects fixed: ``step`` honours ``generator`` (and takes ``noise=``), ``0.0`` is a value rather
than "missing", ``set_timesteps(n)`` spans the trained levels, custom ``timesteps`` work, and
``device`` is honoured. The schedule itself lives in
:class:`ncsn_runtime.scheduling_base.AnnealedLangevinSchedulerBase`, shared with the numpy twin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ncsn_runtime.schedule import langevin_update
from ncsn_runtime.scheduling_base import AnnealedLangevinSchedulerBase


@dataclass
class AnnealedLangevinDynamicsOutput:
    """Output of :meth:`AnnealedLangevinDynamicsScheduler.step`.

    Attributes:
        prev_sample: float tensor [B, ...], the sample after one Langevin step.
    """

    prev_sample: torch.Tensor

    def __getitem__(self, index: int) -> torch.Tensor:
        return (self.prev_sample,)[index]


def _check_float_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"`{name}` must have a floating dtype (float16/32/64), got {value.dtype}")
    return value


def _level_indices(timesteps: Any) -> np.ndarray:
    if isinstance(timesteps, torch.Tensor):
        if timesteps.is_floating_point():
            raise TypeError(f"`timestep` must be an int level index, got dtype {timesteps.dtype}")
        return timesteps.detach().cpu().numpy()
    return np.asarray(timesteps)


class AnnealedLangevinDynamicsScheduler(AnnealedLangevinSchedulerBase):
    """Annealed Langevin dynamics (Song & Ermon 2019) for torch samples.

    Args:
        num_train_timesteps: number L of noise levels the network was trained on.
        num_annealed_steps: Langevin steps T per level.
        sigma_min: smallest trained sigma (> 0).
        sigma_max: largest trained sigma (> sigma_min).
        sampling_eps: step-size scale epsilon; ``alpha_i = eps * (sigma_i / sigma_last)**2``.

    ``timesteps`` (int64 [N]) are level indices fed to the network; ``sigmas`` and ``step_size``
    (float32 [N]) are aligned with them and live on the device given to ``set_timesteps``.
    """

    _device: torch.device = torch.device("cpu")

    def _schedule_changed(self, device: Any) -> None:
        if device is not None:
            self._device = torch.device(device)
        self._timesteps = torch.from_numpy(self._timesteps_np.copy()).to(self._device)
        self._sigmas = torch.from_numpy(self._sigmas_np.copy()).to(self._device)
        self._step_size = torch.from_numpy(self._step_size_np.copy()).to(self._device)

    @property
    def timesteps(self) -> torch.Tensor:
        """Level indices int64 [N], largest sigma first."""
        return self._timesteps

    @property
    def sigmas(self) -> torch.Tensor:
        """Noise levels float32 [N], aligned with ``timesteps``."""
        return self._sigmas

    @property
    def step_size(self) -> torch.Tensor:
        """Langevin step sizes float32 [N], aligned with ``timesteps``."""
        return self._step_size

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """Identity (NCSN feeds the sample unscaled); kept for diffusers compatibility."""
        return sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> AnnealedLangevinDynamicsOutput | tuple[torch.Tensor]:
        """One Langevin step ``x + alpha/2 * score + sqrt(alpha) * z`` at level ``timestep``.

        Annealing (looping over levels and steps) is done by the caller.

        Args:
            model_output: score s(x, timestep), float tensor shaped like ``sample``.
            timestep: level index present in ``timesteps``, or an int tensor [B] (one level per sample).
            sample: current x, float tensor [B, ...].
            return_dict: return an :class:`AnnealedLangevinDynamicsOutput` (else a 1-tuple).
            generator: ``torch.Generator`` drawing z when ``noise`` is None.
            noise: z itself, shaped like ``sample`` (e.g. :func:`ncsn_export.noise.counter_normal`).
        """
        sample = _check_float_tensor("sample", sample)
        model_output = _check_float_tensor("model_output", model_output)
        if noise is not None:
            noise = _check_float_tensor("noise", noise)
        self.check_step_shapes(model_output.shape, sample.shape, None if noise is None else noise.shape)
        if noise is None:
            if generator is not None and not isinstance(generator, torch.Generator):
                raise TypeError(f"`generator` must be a torch.Generator, got {type(generator).__name__}")
            draw_device = generator.device if generator is not None else sample.device
            noise = torch.randn(sample.shape, generator=generator, device=draw_device, dtype=sample.dtype)
        alpha_np = self.step_size_for_batch(_level_indices(timestep), tuple(sample.shape))
        alpha = torch.from_numpy(np.asarray(alpha_np)).to(sample.device, sample.dtype)
        prev_sample = langevin_update(sample, model_output, alpha, torch.sqrt(alpha), noise.to(sample.device, sample.dtype))
        return AnnealedLangevinDynamicsOutput(prev_sample) if return_dict else (prev_sample,)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int
    ) -> torch.Tensor:
        """``x + sigma_t * noise``, one level per sample (timesteps [B]) or one for all (scalar)."""
        original_samples = _check_float_tensor("original_samples", original_samples)
        noise = _check_float_tensor("noise", noise)
        if noise.shape != original_samples.shape:
            raise ValueError(
                f"`noise` shape {tuple(noise.shape)} must equal `original_samples` shape {tuple(original_samples.shape)}"
            )
        sigmas_np = self.sigma_of(_level_indices(timesteps))
        if sigmas_np.ndim == 1 and len(sigmas_np) != len(original_samples):
            raise ValueError(f"`timesteps` has {len(sigmas_np)} entries for a batch of {len(original_samples)}")
        sigmas = torch.from_numpy(np.asarray(sigmas_np)).to(original_samples.device, original_samples.dtype)
        if sigmas.ndim == 1:
            sigmas = sigmas.reshape((-1,) + (1,) * (original_samples.ndim - 1))
        return original_samples + noise * sigmas
