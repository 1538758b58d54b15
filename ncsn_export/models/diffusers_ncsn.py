"""Load a diffusers-ncsn checkpoint directory as a :class:`ModelSpec` (needs the optional ``diffusers`` extra).

Layout (what ``ncsn.NCSNPipeline.save_pretrained`` writes)::

    model_index.json                        {"_class_name": "NCSNPipeline", "unet": [...], "scheduler": [...]}
    unet/config.json                        UNet2DModel(ForNCSN) config (+ sigma_min, sigma_max, num_train_timesteps)
    unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json         AnnealedLangevinDynamicsScheduler config

The UNet is a diffusers ``UNet2DModel`` called with the integer noise-level index as its timestep; its
output is the score (diffusers-ncsn does not divide by sigma). ``ncsn.unet.UNet2DModelForNCSN`` is used
when the ``diffusers-ncsn`` package is installed, plain ``diffusers.UNet2DModel`` otherwise (the extra
config keys and the unused ``sigmas`` buffer are then ignored).

A directory written by ``ncsn-train`` (``model.json`` + ``ema.safetensors``, no ``model_index.json``) is handed
to :func:`ncsn_export.models.default.load_training_run`, so ``ncsn-export --model RUN_DIR`` exports a trained run.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from ncsn_runtime.config import load_scheduler_config, read_json_object
from torch import nn

from .registry import ModelSpec

UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class DiffusersUNetScore(nn.Module):
    """``forward(sample f32[B, C, H, W], timestep i64[B]) -> score f32[B, C, H, W]`` around a ``UNet2DModel``."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, return_dict=False)[0]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"diffusers-ncsn checkpoint: missing {path}") from None


def _unet_class(class_name: str | None) -> type:
    try:
        from diffusers import UNet2DModel
    except ImportError as error:
        raise ImportError(
            "loading a diffusers-ncsn checkpoint needs diffusers: pip install 'ncsn-export[diffusers]'"
        ) from error
    if class_name == "UNet2DModelForNCSN":
        try:
            from ncsn.unet import UNet2DModelForNCSN

            return UNet2DModelForNCSN
        except ImportError:
            pass
    return UNet2DModel


def load_diffusers_ncsn(directory: str | Path, name: str | None = None) -> ModelSpec:
    """A diffusers-ncsn checkpoint directory -> :class:`ModelSpec` (UNet in eval mode, float32, CPU).

    Args:
        directory: folder with ``model_index.json``, ``unet/`` and ``scheduler/``.
        name: manifest name (default: the folder's name).

    Raises:
        FileNotFoundError: a required file is missing (the message names it).
        ValueError: malformed config (unknown sample size, level count mismatch, ...).
        ImportError: diffusers is not installed.
    """
    root = Path(directory)
    if not (root / "model_index.json").exists() and (root / "model.json").is_file() and (root / "ema.safetensors").is_file():
        from .default import load_training_run  # an ncsn-train run directory, not a diffusers-ncsn checkpoint

        return load_training_run(root, name)
    index = _read_json(root / "model_index.json")
    for key in ("unet", "scheduler"):
        if key not in index:
            raise ValueError(f"{root / 'model_index.json'} has no {key!r} entry (found: {', '.join(sorted(index))})")
    unet_config = _read_json(root / "unet" / "config.json")
    if not any((root / "unet" / weights).is_file() for weights in UNET_WEIGHTS):
        raise FileNotFoundError(f"diffusers-ncsn checkpoint: no {' or '.join(UNET_WEIGHTS)} in {root / 'unet'}")
    scheduler_config = load_scheduler_config(root / "scheduler")

    unet_class = _unet_class(unet_config.get("_class_name"))
    overrides: dict[str, Any] = {}
    if unet_class.__name__ == "UNet2DModelForNCSN":
        # diffusers-ncsn 0.1.0 saves num_train_timesteps=None (UNet2DModel's own config entry overwrites it), and
        # then cannot reload its own checkpoint; the scheduler's level count is the one the UNet was trained with.
        overrides["num_train_timesteps"] = scheduler_config["num_train_timesteps"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers warns about config keys the plain UNet2DModel does not take
        unet = unet_class.from_pretrained(str(root / "unet"), torch_dtype=torch.float32, **overrides)
    unet = unet.to("cpu").eval()

    size = unet_config.get("sample_size")
    if isinstance(size, int):
        height = width = size
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        height, width = (int(v) for v in size)
    else:
        raise ValueError(f"{root / 'unet' / 'config.json'}: `sample_size` must be an int or [H, W], got {size!r}")
    channels = int(unet_config.get("in_channels", 3))
    if int(unet_config.get("out_channels", channels)) != channels:
        raise ValueError(f"{root / 'unet' / 'config.json'}: a score network needs out_channels == in_channels, "
                         f"got {unet_config.get('out_channels')} != {channels}")
    trained = unet_config.get("num_train_timesteps")
    if trained is not None and int(trained) != scheduler_config["num_train_timesteps"]:
        raise ValueError(f"unet has num_train_timesteps={trained} but the scheduler has "
                         f"{scheduler_config['num_train_timesteps']}: the checkpoint is inconsistent")
    return ModelSpec(
        name=name or root.resolve().name,
        model=DiffusersUNetScore(unet).eval(),
        scheduler_config=scheduler_config,
        sample_shape=(channels, height, width),
        is_image=True,
        init_range=(0.0, 1.0),
        data_range=(0.0, 1.0),
        final_denoise=False,
        description=f"diffusers-ncsn {unet_class.__name__} from {root}",
    )
