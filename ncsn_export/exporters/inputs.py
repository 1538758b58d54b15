"""Checks of what a caller hands ``export_model`` / ``ncsn-export``, done before any tracing or writing.

Every failure is an :class:`~.errors.ExportInputError` (``ncsn-export`` exits 2 with its one-line message).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ncsn_runtime.config import check_scheduler_config
from ncsn_runtime.schedule import MAX_ANNEALED_STEPS, check_count

from ..models.registry import ModelSpec, load_model
from .errors import ExportInputError

MAX_VALIDATION_BATCH = 1024
MAX_TOLERANCE = 1e3


def load_spec(model: str | ModelSpec | None) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``; a module that fails to import or a factory that raises is an input error."""
    if isinstance(model, ModelSpec):
        spec = model
    else:
        try:
            spec = load_model(model)
        except (ValueError, TypeError, ImportError) as error:
            raise ExportInputError(str(error)) from error
        except Exception as error:  # the user's module or factory raised: report it, no traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportInputError(f"loading `model` {model!r} failed: {type(error).__name__}: {first[:300]}") from error
    return check_spec(spec)


def check_spec(spec: ModelSpec) -> ModelSpec:
    """A spec's scheduler config must hold the five parameters within range; its model must be a module."""
    try:
        spec.scheduler_config = check_scheduler_config(spec.scheduler_config, f"model {spec.name!r}: scheduler_config")
    except (TypeError, ValueError) as error:
        raise ExportInputError(str(error)) from None
    if not callable(getattr(spec.model, "eval", None)):
        raise ExportInputError(f"model {spec.name!r}: ModelSpec.model must be a torch.nn.Module, got {type(spec.model).__name__}")
    spec.model.eval()
    return spec


def check_tolerance(tolerance: Any, name: str = "tolerance") -> float | None:
    """None (the default) or a finite float in (0, MAX_TOLERANCE]; NaN would write invalid JSON and pass nothing."""
    if tolerance is None:
        return None
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise ExportInputError(f"`{name}` must be a float, got {type(tolerance).__name__}")
    try:
        value, shown = float(tolerance), repr(tolerance)
    except (OverflowError, ValueError):  # an int beyond float64 (or too long to print)
        value, shown = math.inf, "an int beyond float64"
    if not math.isfinite(value) or not 0.0 < value <= MAX_TOLERANCE:
        raise ExportInputError(f"`{name}` must be a finite float in (0, {MAX_TOLERANCE:g}], got {shown}")
    return value


def check_export_arguments(batch_size: Any, num_inference_steps: Any, num_annealed_steps: Any, tolerance: Any,
                           full_tolerance: Any = None) -> None:
    """Range checks of the validation schedule (``num_inference_steps`` is checked against the model later;
    ``None`` steps mean the defaults)."""
    try:
        check_count("batch_size", batch_size, 1, MAX_VALIDATION_BATCH)
        if num_inference_steps is not None:
            check_count("num_inference_steps", num_inference_steps, 1)
        if num_annealed_steps is not None:
            check_count("num_annealed_steps", num_annealed_steps, 1, MAX_ANNEALED_STEPS)
    except (TypeError, ValueError) as error:
        raise ExportInputError(str(error)) from None
    check_tolerance(tolerance)
    check_tolerance(full_tolerance, "full_tolerance")
