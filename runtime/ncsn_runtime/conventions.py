"""diffusers' pipeline conventions the runtime follows without torch: device strings, generator objects, tqdm bars.

* :func:`parse_device`: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or anything whose ``str()`` is one of them (a
  ``torch.device``) -> ``(kind, device_id)``;
* :func:`generator_seeds`: the per-sample seeds of ``generator=`` when it is not a numpy ``Generator``: an object
  with ``initial_seed()`` (a ``torch.Generator``) gives the seeds of ``seed=generator.initial_seed()``, a list of
  B of them one seed each. Only the seed is read: the noise is the runtime's counter-based Philox noise, the same
  on every host, not torch's;
* :func:`check_progress_bar_config` / :func:`progress_bar`: ``set_progress_bar_config(**tqdm_kwargs)`` and
  ``progress_bar(iterable)`` as in diffusers' ``DiffusionPipeline``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .noise import MAX_SEED, seeds_for_batch

__all__ = ["check_progress_bar_config", "generator_seeds", "parse_device", "progress_bar"]

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d{1,4}))?")


def parse_device(device: Any) -> tuple[str, int]:
    """``(kind, device_id)`` of ``device``: ``"cpu"`` (also ``"cpu:0"``), ``"cuda"`` (= ``"cuda:0"``), ``"cuda:N"``,
    or any object whose ``str()`` is one of them (``torch.device``); a ``ValueError`` names the accepted forms."""
    text = str(device) if not isinstance(device, str) else device
    match = _DEVICE.fullmatch(text.strip())
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        hint = ""
        if text.startswith("torch.") and not text.startswith("torch.device"):
            hint = " (the graphs are float32 as exported; a dtype cannot be changed here)"
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N' (or an object whose str() is one of them, such as "
                         f"torch.device), got {text!r}{hint}")
    return match.group(1), int(match.group(2) or 0)


def _initial_seed(generator: Any, name: str) -> int:
    seed = generator.initial_seed()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{name}.initial_seed() must return an int, got {type(seed).__name__}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{name}.initial_seed() is {seed}, outside the seeds [0, 2**63 - 1] the runtime's noise takes; "
                         "seed it with manual_seed(n) for such an n, or pass seed=")
    return int(seed)


def generator_seeds(generator: Any, batch_size: int) -> np.ndarray:
    """int64 [B] seeds of a ``generator`` that is not a numpy ``Generator`` (see the module docstring).

    Raises:
        TypeError: neither an object with ``initial_seed()`` nor a list of them.
        ValueError: a seed out of range, or a list whose length is not ``batch_size``.
    """
    if callable(getattr(generator, "initial_seed", None)):
        seed = _initial_seed(generator, "generator")
        try:
            return seeds_for_batch(seed, batch_size)
        except ValueError as error:
            raise ValueError(f"generator.initial_seed() = {seed} does not leave room for {batch_size} samples: {error}") from None
    if isinstance(generator, Sequence) and not isinstance(generator, (str, bytes)) and generator and all(
            callable(getattr(item, "initial_seed", None)) for item in generator):
        if len(generator) != batch_size:
            raise ValueError(f"`generator` is a list of {len(generator)} generators but batch_size is {batch_size}")
        return np.array([_initial_seed(item, f"generator[{index}]") for index, item in enumerate(generator)], dtype=np.int64)
    raise TypeError("`generator` must be a numpy.random.Generator, an object with initial_seed() such as torch.Generator "
                    f"(its samples are those of seed=generator.initial_seed()), or a list of batch_size of them; got "
                    f"{type(generator).__name__}")


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no bar without it
        return None
    return tqdm


def check_progress_bar_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` if every key is a keyword of ``tqdm`` (``TypeError`` listing the others); unchecked without tqdm."""
    tqdm = _tqdm()
    if tqdm is None:
        return dict(config)
    from tqdm.std import tqdm as base  # tqdm.auto's class takes (*args, **kwargs) and passes them on to this one

    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    known = {name for name, parameter in inspect.signature(base.__init__).parameters.items()
             if parameter.kind in named} - {"self", "iterable"}
    if "total" in config:
        raise TypeError("set_progress_bar_config() got `total`, which each bar sets itself (progress_bar(total=...))")
    unknown = sorted(set(config) - known)
    if unknown:
        raise TypeError(f"set_progress_bar_config() got options tqdm does not take: {unknown} (tqdm takes {sorted(known)})")
    return dict(config)


def progress_bar(iterable: Iterable[Any] | None = None, total: int | None = None,
                 config: dict[str, Any] | None = None) -> Any:
    """``tqdm(iterable, **config)`` or ``tqdm(total=total, **config)``, as diffusers' ``DiffusionPipeline.progress_bar``.

    Without tqdm installed: ``iterable`` itself, or a bar whose ``update`` / ``close`` do nothing.
    """
    if iterable is None and total is None:
        raise ValueError("progress_bar() needs `iterable` or `total`")
    tqdm = _tqdm()
    if tqdm is not None:
        return tqdm(iterable, **(config or {})) if iterable is not None else tqdm(total=total, **(config or {}))
    if iterable is not None:
        return iterable
    return NoBar()


class NoBar:
    """A progress bar that shows nothing (tqdm missing or the bar disabled)."""

    def update(self, count: int = 1) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None: ...
