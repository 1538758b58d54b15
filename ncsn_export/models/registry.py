"""Resolve ``--model NAME_OR_REF`` to a :class:`ModelSpec`: a score network plus what exporting it needs.

Accepted references:
* a built-in name (:data:`BUILTIN_MODELS`);
* ``package.module:factory``: a callable returning a :class:`ModelSpec`;
* a directory in diffusers-ncsn's layout (``model_index.json``, ``unet/``, ``scheduler/``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

# name -> "module:function" returning a ModelSpec; imported lazily so each model's code loads only when used.
BUILTIN_MODELS: dict[str, str] = {
    "mnist": "ncsn_export.models.default:mnist_spec",
    "toy-gmm": "ncsn_export.models.gmm:toy_gmm_spec",
}
DEFAULT_MODEL = "mnist"
DIFFUSERS_NCSN_LOADER = "ncsn_export.models.diffusers_ncsn:load_diffusers_ncsn"


@dataclass
class ModelSpec:
    """A score network and the facts an export needs about it.

    Attributes:
        name: short identifier written to the manifest.
        model: ``forward(sample f32[B, *sample_shape], timestep i64[B]) -> score f32[B, *sample_shape]``,
            in eval mode; ``timestep`` is the trained noise-level index.
        scheduler_config: the five ``AnnealedLangevinDynamicsScheduler`` parameters.
        sample_shape: per-sample shape, e.g. (1, 28, 28) or (2,).
        is_image: whether samples are images [C, H, W] with values in ``data_range``.
        init_range: (low, high) of the uniform initial sample.
        data_range: (low, high) of clean data, used to map samples to pixels.
        final_denoise: default for NCSNv2's final denoising step ``x + sigma_last**2 * score``.
        description: one line for tables and ``--help``.
    """

    name: str
    model: nn.Module
    scheduler_config: dict[str, Any]
    sample_shape: tuple[int, ...]
    is_image: bool = True
    init_range: tuple[float, float] = (0.0, 1.0)
    data_range: tuple[float, float] = (0.0, 1.0)
    final_denoise: bool = False
    description: str = ""


def _import_callable(reference: str) -> Callable[..., Any]:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"`model` reference must look like 'package.module:factory', got {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} for `model` {reference!r}: {error}") from error
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (from `model` {reference!r})") from None


def load_model(name_or_ref: str | None = None, **kwargs: Any) -> ModelSpec:
    """Return the :class:`ModelSpec` for a built-in name, a ``module:factory`` or a diffusers-ncsn directory."""
    reference = DEFAULT_MODEL if name_or_ref is None else name_or_ref
    if reference in BUILTIN_MODELS:
        factory = _import_callable(BUILTIN_MODELS[reference])
    elif Path(reference).is_dir():
        return _import_callable(DIFFUSERS_NCSN_LOADER)(reference, **kwargs)
    elif ":" in reference:
        factory = _import_callable(reference)
    else:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ValueError(
            f"unknown `model` {reference!r}: use a built-in name ({known}), 'package.module:factory', "
            "or a diffusers-ncsn checkpoint directory"
        )
    spec = factory(**kwargs)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"model factory {reference!r} must return a ModelSpec, got {type(spec).__name__}")
    spec.model.eval()
    return spec
