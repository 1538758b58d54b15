"""``scheduler_config.json`` in diffusers' format: read, validate, write atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as JSON to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file that must hold an object; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(payload).__name__}")
    return payload


def load_scheduler_config(pretrained_path: str | os.PathLike, subfolder: str | None = None) -> dict[str, Any]:
    """Read and check a scheduler config; returns the five constructor parameters."""
    path = resolve_config_file(pretrained_path, subfolder)
    payload = read_json_object(path)
    class_name = payload.get("_class_name", SCHEDULER_CLASS_NAME)
    if class_name != SCHEDULER_CLASS_NAME:
        raise ValueError(f"{path} configures `{class_name}`, expected `{SCHEDULER_CLASS_NAME}`")
    missing = [key for key in SCHEDULER_PARAMETERS if key not in payload]
    if missing:
        raise ValueError(f"{path} is missing required keys: {', '.join(missing)}")
    return {key: payload[key] for key in SCHEDULER_PARAMETERS}


def save_scheduler_config(directory: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write ``directory/scheduler_config.json`` (``_class_name`` plus the five parameters)."""
    payload = {"_class_name": SCHEDULER_CLASS_NAME, **{key: config[key] for key in SCHEDULER_PARAMETERS}}
    return write_json_atomic(Path(directory) / SCHEDULER_CONFIG_NAME, payload)
