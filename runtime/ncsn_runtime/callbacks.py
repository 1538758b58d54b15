"""Per-step callbacks of :class:`~ncsn_runtime.pipeline.NCSNPipeline`: diffusers' ``callback_on_step_end`` API.

``callback_on_step_end(pipe, step_index, timestep, callback_kwargs) -> dict | None`` runs after every Langevin
step. The fused graphs run every step inside one onnxruntime call and cannot stop for it, so a callback makes
the pipeline sample stepwise (``mode="auto"``) or is refused (``mode="fused"``, a fused ``graph=``).

The conventions are diffusers-ncsn's (the seed's ``NCSNPipeline``):

* ``step_index`` is the annealed step within its noise level, ``0 .. num_annealed_steps - 1``, and ``timestep``
  the level's trained index (``int``), so ``if step_index != 0: return callback_kwargs`` runs once per level;
* ``callback_kwargs`` holds the tensors named in ``callback_on_step_end_tensor_inputs`` (default and only
  allowed name: ``"samples"``, :data:`CALLBACK_TENSOR_INPUTS`), float32 numpy arrays [B, *sample_shape], and
  the keys of the runtime's earlier API: ``sample`` (the same array), ``position`` (schedule position),
  ``annealed_step`` (= ``step_index``), ``sigma`` (the level's noise scale) and ``global_step``
  (``position * num_annealed_steps + annealed_step``, what ``step_index`` was before);
* a returned dict whose ``"samples"`` (or ``"sample"``) is an array replaces the state for the next step; it is
  checked first (shape [B, *sample_shape], a real floating dtype, every value finite). ``None`` keeps the
  state; returning the ``callback_kwargs`` it was given keeps edits made in place to its array;
* an object with ``tensor_inputs`` and ``__call__`` (diffusers' ``PipelineCallback`` and
  ``MultiPipelineCallbacks``) is called the same way, and its own ``tensor_inputs`` are used, as diffusers does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["CALLBACK_TENSOR_INPUTS", "Callback", "callback_tensor_inputs", "check_returned_samples", "make_step_hook"]

CALLBACK_TENSOR_INPUTS = ("samples",)  # the seed's NCSNPipeline._callback_tensor_inputs
STATE_KEYS = ("samples", "sample")  # a returned dict may replace the state under either name (the second: the earlier API)

Callback = Callable[[Any, int, int, dict[str, Any]], "dict[str, Any] | None"]


def callback_tensor_inputs(callback: Any, tensor_inputs: Sequence[str] | None,
                           allowed: Sequence[str] = CALLBACK_TENSOR_INPUTS) -> list[str]:
    """The tensor names ``callback`` receives: the object's own ``tensor_inputs`` when it has them (diffusers'
    ``PipelineCallback`` / ``MultiPipelineCallbacks``), else ``tensor_inputs``, else ``allowed``
    (``callback=None``: only ``tensor_inputs`` is checked).

    Raises:
        TypeError: ``callback`` is not callable, or the names are not a list of strings.
        ValueError: a name outside ``allowed`` (all of them are listed, as diffusers does).
    """
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback_on_step_end` must be callable as f(pipe, step_index, timestep, callback_kwargs) "
                        f"(a function, or an object with __call__ such as diffusers' PipelineCallback), got "
                        f"{type(callback).__name__}")
    names = getattr(callback, "tensor_inputs", None)
    source = f"{type(callback).__name__}.tensor_inputs"
    if names is None:
        names, source = tensor_inputs, "`callback_on_step_end_tensor_inputs`"
    if names is None:
        return list(allowed)
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"{source} must be a list of names from {list(allowed)}, got {names!r}")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        hint = " ('sample' is a key of callback_kwargs, not a tensor input: ask for 'samples')" if "sample" in unknown else ""
        raise ValueError(f"{source} has to be in {list(allowed)}, but found {unknown}{hint}")
    return list(dict.fromkeys(names))


def check_returned_samples(value: Any, shape: Sequence[int], key: str) -> np.ndarray:
    """A callback's replacement state as float32 [B, *sample_shape], or a ``ValueError`` / ``TypeError`` saying why not.

    Accepts any real floating array-like (numpy, or a CPU tensor numpy can read) of exactly ``shape``.
    """
    where = f"callback_on_step_end returned {key!r}"
    try:
        array = np.asarray(value)
    except Exception as error:  # e.g. a CUDA tensor numpy cannot read
        raise TypeError(f"{where} as {type(value).__name__}, which numpy cannot read ({error}); return a numpy array") from None
    if array.dtype.kind != "f":
        raise TypeError(f"{where} with dtype {array.dtype}; it must be a floating array (float32 [B, *sample_shape])")
    if array.shape != tuple(shape):
        raise ValueError(f"{where} with shape {array.shape}; the state is {tuple(shape)} (batch, *sample_shape)")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1)).tolist()
        raise ValueError(f"{where} with NaN/inf (or values beyond float32) in samples {bad[:10]}")
    return array


def make_step_hook(pipe: Any, callback: Callback, tensor_inputs: Sequence[str], timesteps: np.ndarray,
                   sigmas: np.ndarray, num_annealed_steps: int) -> Callable[[int, int, np.ndarray], np.ndarray | None]:
    """The ``after_step`` hook of :func:`~ncsn_runtime.steppers.langevin_loop` that calls ``callback`` (see the module
    docstring); it returns the replacement state or ``None``."""
    steps = int(num_annealed_steps)
    levels = np.asarray(timesteps).tolist()

    def hook(position: int, annealed_step: int, x: np.ndarray) -> np.ndarray | None:
        kwargs: dict[str, Any] = dict.fromkeys(tensor_inputs, x)
        kwargs.update(sample=x, position=position, annealed_step=annealed_step, sigma=float(sigmas[position]),
                      global_step=position * steps + annealed_step)
        result = callback(pipe, annealed_step, int(levels[position]), kwargs)
        if result is None:
            return None
        if not isinstance(result, dict):
            raise TypeError(f"callback_on_step_end must return a dict (e.g. the callback_kwargs it got) or None, got "
                            f"{type(result).__name__}")
        given = {key: result[key] for key in STATE_KEYS if result.get(key) is not None}
        changed = {key: value for key, value in given.items() if value is not x}
        if len(changed) == 2 and changed["samples"] is not changed["sample"]:
            raise ValueError("callback_on_step_end returned different arrays under 'samples' and 'sample'; return one")
        if not given:
            return None
        key, value = next(iter(changed.items())) if changed else next(iter(given.items()))
        return check_returned_samples(value, x.shape, key)

    return hook
