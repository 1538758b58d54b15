"""``scheduler_config.json`` in diffusers' format: read, validate, write atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fileio import read_json_object, write_json_atomic
from .schedule import (
    MAX_ANNEALED_STEPS,
    MAX_TOTAL_STEPS,
    MAX_TRAIN_TIMESTEPS,
    check_count,
    check_positive_float,
    check_sigma_range,
)

__all__ = ["FrozenConfig", "check_scheduler_config", "load_scheduler_config", "read_json_object", "save_scheduler_config",
           "write_json_atomic"]

SCHEDULER_CLASS_NAME = "AnnealedLangevinDynamicsScheduler"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
SCHEDULER_PARAMETERS = ("num_train_timesteps", "num_annealed_steps", "sigma_min", "sigma_max", "sampling_eps")


class FrozenConfig(dict):
    """A read-only dict whose keys also read as attributes (like diffusers' ``FrozenDict``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("the scheduler config is read-only; build a new scheduler to change it")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _readonly  # type: ignore[assignment]
    __ior__ = __setattr__ = __delattr__ = _readonly  # type: ignore[assignment]  # `config |= {...}`, `config.x = 1`

    def __reduce__(self) -> tuple[Any, ...]:  # copy / pickle rebuild it from its items (never through __setitem__)
        return (type(self), (dict(self),))


def resolve_config_file(pretrained_path: str | os.PathLike, subfolder: str | None = None) -> Path:
    """Find ``scheduler_config.json`` in a directory (or its ``scheduler/`` subfolder) or a file path."""
    root = Path(pretrained_path)
    if subfolder:
        root = root / subfolder
    if root.is_file():
        return root
    if not root.exists():
        raise FileNotFoundError(f"`pretrained_model_name_or_path` does not exist: {root}")
    for candidate in (root / SCHEDULER_CONFIG_NAME, root / "scheduler" / SCHEDULER_CONFIG_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {SCHEDULER_CONFIG_NAME} in {root} or {root / 'scheduler'}")


def check_scheduler_config(config: Any, where: str = "scheduler config") -> dict[str, Any]:
    """Validate the five parameters (types, ranges, resource limits); returns them as plain numbers.

    Raises ``TypeError`` (not a mapping, wrong value type) or ``ValueError`` (missing key, out of range),
    with ``where`` (e.g. the file) in the message. Keys starting with ``_`` and unknown keys are ignored.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"{where} must be a mapping of {', '.join(SCHEDULER_PARAMETERS)}, got {type(config).__name__}")
    missing = [key for key in SCHEDULER_PARAMETERS if key not in config]
    if missing:
        raise ValueError(f"{where} is missing required keys: {', '.join(missing)}")
    try:
        levels = check_count("num_train_timesteps", config["num_train_timesteps"], 1, MAX_TRAIN_TIMESTEPS)
        steps = check_count("num_annealed_steps", config["num_annealed_steps"], 1, MAX_ANNEALED_STEPS)
        if levels * steps > MAX_TOTAL_STEPS:
            raise ValueError(f"`num_train_timesteps` x `num_annealed_steps` = {levels * steps} exceeds the limit of "
                             f"{MAX_TOTAL_STEPS} Langevin steps per run")
        sigma_min, sigma_max = check_sigma_range(config["sigma_min"], config["sigma_max"])
        eps = check_positive_float("sampling_eps", config["sampling_eps"])
    except (TypeError, ValueError) as error:
        raise type(error)(f"{where}: {error}") from None
    return {"num_train_timesteps": levels, "num_annealed_steps": steps, "sigma_min": sigma_min, "sigma_max": sigma_max,
            "sampling_eps": eps}


def load_scheduler_config(pretrained_path: str | os.PathLike, subfolder: str | None = None) -> dict[str, Any]:
    """Read and check a scheduler config; returns the five constructor parameters."""
    path = resolve_config_file(pretrained_path, subfolder)
    payload = read_json_object(path)
    class_name = payload.get("_class_name", SCHEDULER_CLASS_NAME)
    if class_name != SCHEDULER_CLASS_NAME:
        raise ValueError(f"{path} configures `{class_name}`, expected `{SCHEDULER_CLASS_NAME}`")
    return check_scheduler_config(payload, str(path))


def save_scheduler_config(directory: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write ``directory/scheduler_config.json`` (``_class_name`` plus the five parameters)."""
    payload = {"_class_name": SCHEDULER_CLASS_NAME, **{key: config[key] for key in SCHEDULER_PARAMETERS}}
    return write_json_atomic(Path(directory) / SCHEDULER_CONFIG_NAME, payload)
