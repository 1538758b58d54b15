"""The schedule formulas of annealed Langevin dynamics, defined once and shared by every host.

All functions are pure numpy. Arrays are computed in float64 and handed out as float32
(sigmas, step sizes) or int64 (timesteps), the dtypes the graphs take.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

# Resource limits on numbers read from configs and export directories (untrusted input; SECURITY.md).
MAX_TRAIN_TIMESTEPS = 100_000  # trained noise levels L (NCSN++ uses about 2000)
MAX_ANNEALED_STEPS = 10_000  # Langevin steps T per level (the paper uses 100)
MAX_TOTAL_STEPS = 1_000_000  # levels x T in one sampling run (the paper: 10 x 100)


def check_count(name: str, value: object, low: int = 1, high: int | None = None) -> int:
    """Validate an integer count in [low, high]; return it as an ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < low or (high is not None and value > high):
        upper = "inf" if high is None else str(high)
        raise ValueError(f"`{name}` must be in [{low}, {upper}], got {value}")
    return value


def check_positive_float(name: str, value: object) -> float:
    """Validate a finite float > 0; return it as a ``float``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a float, got {type(value).__name__} ({value!r})")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"`{name}` must be a finite float > 0, got an int too large for a float") from None
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"`{name}` must be a finite float > 0, got {value}")
    return value


def check_sigma_range(sigma_min: object, sigma_max: object) -> tuple[float, float]:
    """Validate 0 < sigma_min < sigma_max, both finite."""
    sigma_min = check_positive_float("sigma_min", sigma_min)
    sigma_max = check_positive_float("sigma_max", sigma_max)
    if sigma_min >= sigma_max:
        raise ValueError(f"`sigma_min` must be < `sigma_max`, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    return sigma_min, sigma_max


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> np.ndarray:
    """Noise levels, float32 [num_levels]: geometric from ``sigma_max`` down to ``sigma_min``."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), num_levels)).astype(np.float32)


def step_sizes(sigmas: np.ndarray, sampling_eps: float) -> np.ndarray:
    """Langevin step sizes, float32 [N]: ``alpha_i = eps * (sigma_i / sigma_last)**2``."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return (sampling_eps * (sigmas / sigmas[-1]) ** 2).astype(np.float32)


def spanning_timesteps(num_inference_steps: int, num_train_timesteps: int) -> np.ndarray:
    """Level indices, int64 [n]: n levels evenly spread from the first trained level to the last."""
    return np.round(np.linspace(0, num_train_timesteps - 1, num_inference_steps)).astype(np.int64)


def langevin_update(sample, score, step_size, sqrt_step_size, noise):
    """One Langevin step ``x + alpha/2 * score + sqrt(alpha) * z``.

    Works on numpy arrays and torch tensors alike (operators only), so the schedulers, the
    traceable step module and the exported graphs all evaluate the same expression in the same
    order. ``step_size`` and ``sqrt_step_size`` broadcast against ``sample``.
    """
    return sample + 0.5 * step_size * score + sqrt_step_size * noise


def denoise_update(sample, score, sigma_last_squared):
    """NCSNv2's final denoising step ``x + sigma_last**2 * score`` (Tweedie's formula)."""
    return sample + sigma_last_squared * score
