"""The embedded default model: a small NCSN RefineNet trained on MNIST (5k, then the 60k), shipped as safetensors.

``ncsn_export/weights/mnist_ncsn.safetensors`` holds the EMA weights; ``mnist_ncsn.json`` the architecture
config, the scheduler config chosen by measurement (``bench/eval_mnist.py``), and the training record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ncsn_runtime.fileio import read_json_object
from ncsn_runtime.schedule import geometric_sigmas

from .refinenet import CondRefineNetDilated
from .registry import ModelSpec

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MNIST_WEIGHTS = "mnist_ncsn.safetensors"
MNIST_RECORD = "mnist_ncsn.json"


def build_refinenet(record: dict[str, Any]) -> CondRefineNetDilated:
    """An untrained :class:`CondRefineNetDilated` shaped as ``record["model_config"]`` describes."""
    if record.get("architecture") != "CondRefineNetDilated":
        raise ValueError(f"unsupported architecture {record.get('architecture')!r}; expected 'CondRefineNetDilated'")
    config = record["model_config"]
    scheduler = record["scheduler_config"]
    sigmas = None
    if config.get("ncsnv2"):
        sigmas = geometric_sigmas(scheduler["sigma_max"], scheduler["sigma_min"], scheduler["num_train_timesteps"])
    return CondRefineNetDilated(
        in_channels=config["in_channels"],
        image_size=config["image_size"],
        num_classes=config["num_classes"],
        ngf=config["ngf"],
        sigmas=sigmas,
        centered=config.get("centered", True),
    )


def load_refinenet(weights: str | Path, record_path: str | Path) -> tuple[CondRefineNetDilated, dict[str, Any]]:
    """Load a trained RefineNet (eval mode) from a safetensors file and its JSON record."""
    from safetensors.torch import load_file

    weights, record_path = Path(weights), Path(record_path)
    for path in (weights, record_path):
        if not path.is_file():
            raise FileNotFoundError(f"model file missing: {path} (the package's weights/ folder must ship it)")
    record = read_json_object(record_path)
    model = build_refinenet(record)
    model.load_state_dict(load_file(str(weights)))
    return model.eval(), record


def load_training_run(directory: str | Path, name: str | None = None) -> ModelSpec:
    """A ``ncsn-train`` run directory (``ema.safetensors`` + ``model.json``) as a :class:`ModelSpec`."""
    root = Path(directory)
    model, record = load_refinenet(root / "ema.safetensors", root / "model.json")
    return ModelSpec(
        name=name or root.resolve().name,
        model=model,
        scheduler_config=dict(record["scheduler_config"]),
        sample_shape=tuple(model.sample_shape),
        final_denoise=bool(record.get("sampling", {}).get("final_denoise", True)),
        description=f"NCSN RefineNet (ngf={model.config['ngf']}) from the ncsn-train run {root}",
    )


def mnist_spec(weights_dir: str | Path | None = None) -> ModelSpec:
    """The default model: NCSN RefineNet on 28x28 MNIST digits, data and init range [0, 1]."""
    root = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    model, record = load_refinenet(root / MNIST_WEIGHTS, root / MNIST_RECORD)
    scheduler = record["scheduler_config"]
    sampling = record.get("sampling", {})
    return ModelSpec(
        name="mnist",
        model=model,
        scheduler_config=dict(scheduler),
        sample_shape=tuple(model.sample_shape),
        is_image=True,
        init_range=(0.0, 1.0),
        data_range=(0.0, 1.0),
        final_denoise=bool(sampling.get("final_denoise", True)),
        description=(
            f"NCSN RefineNet (ngf={model.config['ngf']}, {record.get('num_parameters', '?')} params) "
            f"trained on {record.get('training', {}).get('dataset', 'MNIST')}"
        ),
    )
