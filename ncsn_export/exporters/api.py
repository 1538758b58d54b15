"""``export_model``: from a model (name, ``module:factory``, directory or :class:`ModelSpec`) to a validated export directory."""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import onnxscript
import torch
from ncsn_runtime.config import save_scheduler_config
from ncsn_runtime.manifest import FORMAT_NAME, FORMAT_VERSION, file_entry, write_manifest
from ncsn_runtime.schedule import check_count, geometric_sigmas
from torch import nn

from ..models.registry import ModelSpec
from ..sampler import AnnealedLangevinSampler
from .compose import compose_graphs
from .directory import atomic_directory, check_output_dir
from .errors import ExportError
from .inputs import check_export_arguments, load_spec
from .onnx_export import (
    DEFAULT_OPSET,
    check_opset,
    example_inputs,
    export_score_onnx,
    save_graph,
)
from .torchscript_export import export_pt2, export_torchscript
from .validate import FP16_TOLERANCE, FP32_TOLERANCE, ValidationResult, format_table, validate_export, validation_inputs

SCHEDULER_CONFIG_PATH = "scheduler/scheduler_config.json"


class HalfPrecisionScore(nn.Module):
    """Runs a score network in float16 behind a float32 interface (the Langevin update stays float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.model(sample.to(torch.float16), timestep).to(torch.float32)


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: the directory, its manifest, and the validation rows."""

    output_dir: Path
    manifest: dict[str, Any]
    validation: list[ValidationResult] = field(default_factory=list)

    @property
    def table(self) -> str:
        return format_table(self.validation)


def check_network(spec: ModelSpec, batch_size: int = 2) -> None:
    """Run the network once on ``[B, *sample_shape]``; raise :class:`ExportError` when it rejects the shape."""
    shape = tuple(spec.sample_shape)
    if not shape or any(not isinstance(size, int) or size < 1 for size in shape):
        raise ExportError(f"model {spec.name!r}: `sample_shape` must be a non-empty tuple of positive ints, got {shape}")
    levels = int(spec.scheduler_config["num_train_timesteps"])
    sample = example_inputs(shape, batch_size)["sample"]
    for level in sorted({0, levels - 1}):
        try:
            with torch.no_grad():
                score = spec.model(sample, torch.full((batch_size,), level, dtype=torch.int64))
        except Exception as error:
            raise ExportError(f"model {spec.name!r} rejects sample shape [B, {', '.join(map(str, shape))}] at level {level} "
                              f"({type(error).__name__}: {error}); set ModelSpec.sample_shape to what the network takes"
                              ) from error
        if not isinstance(score, torch.Tensor) or tuple(score.shape) != tuple(sample.shape) or score.dtype != torch.float32:
            got = f"{tuple(score.shape)} {score.dtype}" if isinstance(score, torch.Tensor) else type(score).__name__
            raise ExportError(f"model {spec.name!r} must return a float32 score shaped like its input {tuple(sample.shape)}, "
                              f"got {got}")


def _versions() -> dict[str, str]:
    from .. import __version__

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxscript": onnxscript.__version__, "ncsn_export": __version__, "python": platform.python_version()}


def export_model(
    model: str | ModelSpec | None,
    output_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    validate: bool = True,
    force: bool = False,
    allow_extra_files: bool = False,
    batch_size: int = 2,
    num_inference_steps: int | None = None,
    num_annealed_steps: int = 5,
    final_denoise: bool | None = None,
    tolerance: float | None = None,
    lean_shift: bool = True,
    log: Callable[[str], None] | None = print,
) -> ExportReport:
    """Export a score network to ``output_dir``: score/step/sampler ONNX, ``sampler.pt``, ``sampler.pt2``, manifest.

    Args:
        model: built-in name, ``package.module:factory``, diffusers-ncsn directory, a :class:`ModelSpec`,
            or None for the default model.
        output_dir: directory to create; written atomically (staged, then renamed).
        opset: ONNX opset of every graph, in [18, onnx's newest].
        fp16: run the score network in float16 inside every artifact (I/O stays float32).
        validate: compare every artifact with torch eager; on failure nothing is written.
        force: replace an existing export directory (only an ncsn-export directory holding nothing but its listed files).
        allow_extra_files: with ``force``, also delete files in it that the earlier export did not write.
        batch_size, num_inference_steps, num_annealed_steps: the validation schedule (levels are spread
            over the trained range; ``num_inference_steps=None`` means min(3, trained levels)).
        final_denoise: NCSNv2 final denoising step in the samplers; None takes the model's default.
        tolerance: max abs difference allowed; default 1e-4 (fp32), or 5e-2 relative to the output's
            magnitude for fp16 (see :mod:`.validate`).
        lean_shift: lower the noise's right shifts to one ``Div`` each (see :mod:`.onnx_export`).
        log: where progress lines and the table go (None: silent).

    Raises:
        ExportError: unknown/broken model, untraceable network, bad opset, failed validation, existing output.
    """
    say = log or (lambda _line: None)
    opset = check_opset(opset)
    check_export_arguments(batch_size, num_inference_steps, num_annealed_steps, tolerance)
    check_output_dir(output_dir, force, allow_extra_files)
    spec = load_spec(model)
    config = dict(spec.scheduler_config)
    num_levels = int(config["num_train_timesteps"])
    if num_inference_steps is None:
        num_inference_steps = min(3, num_levels)
    num_inference_steps = check_count("num_inference_steps", num_inference_steps, 1, num_levels)
    check_network(spec, min(batch_size, 2))
    denoise = spec.final_denoise if final_denoise is None else bool(final_denoise)
    tolerance = (FP16_TOLERANCE if fp16 else FP32_TOLERANCE) if tolerance is None else float(tolerance)
    train_sigmas = torch.from_numpy(geometric_sigmas(config["sigma_max"], config["sigma_min"], num_levels))
    reference = AnnealedLangevinSampler(spec.model, train_sigmas, denoise).eval()
    network = HalfPrecisionScore(_clone(spec.model)).eval() if fp16 else spec.model
    sampler = AnnealedLangevinSampler(network, train_sigmas, denoise).eval()
    shape = tuple(spec.sample_shape)

    say(f"exporting {spec.name!r} (sample shape {list(shape)}, opset {opset}, {'fp16' if fp16 else 'fp32'}, "
        f"final_denoise={denoise}) to {output_dir}")
    timings: dict[str, float] = {}

    def timed(name: str, function: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        start = time.perf_counter()
        result = function()
        timings[name] = round(time.perf_counter() - start, 3)
        say(f"  wrote {name} in {timings[name]:.1f} s")
        return result

    with atomic_directory(output_dir, force, allow_extra_files) as staging:
        save_scheduler_config(staging / "scheduler", config)
        score = timed("score.onnx", lambda: export_score_onnx(network, shape, staging / "score.onnx", opset, lean_shift))
        lean = score.pop("lean_shift")  # False when the network shifts right itself
        graphs = {"score": score}

        def composed() -> dict[str, Any]:
            models = compose_graphs(onnx.load(str(staging / "score.onnx")), shape, train_sigmas.numpy(), denoise,
                                    keys=("score", "step", "sampler"), opset=opset)
            return {key: save_graph(model, staging / f"{key}.onnx") for key, model in models.items()}

        graphs.update(timed("step.onnx + sampler.onnx (composed)", composed))
        for graph in graphs.values():
            graph.pop("shifts_right", None)
        torchscript = timed("sampler.pt",
                            lambda: export_torchscript(network, train_sigmas, denoise, shape, staging / "sampler.pt"))
        torch_export = timed("sampler.pt2", lambda: export_pt2(sampler, shape, staging / "sampler.pt2"))
        inputs = validation_inputs(config, shape, spec.init_range, batch_size, num_inference_steps, num_annealed_steps)
        results: list[ValidationResult] = []
        if validate:
            results = validate_export(staging, reference, inputs, tolerance, relative=fp16)
            say(format_table(results))
            failed = [row.artifact for row in results if not row.passed]
            if failed:
                raise ExportError(f"validation failed for {', '.join(failed)} (max abs diff above {tolerance:g}); "
                                  f"nothing was written to {output_dir}\n{format_table(results)}")
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": {
                "name": spec.name,
                "description": spec.description,
                "sample_shape": list(shape),
                "dtype": "float32",
                "compute_dtype": "float16" if fp16 else "float32",
                "is_image": bool(spec.is_image),
                "init_range": [float(value) for value in spec.init_range],
                "data_range": [float(value) for value in spec.data_range],
                "final_denoise": denoise,
                "num_train_timesteps": num_levels,
            },
            "scheduler_config": SCHEDULER_CONFIG_PATH,
            "opset": opset,
            "graphs": graphs,
            "torchscript": torchscript,
            "torch_export": torch_export,
            "noise": {"lean_shift": lean},
            "export_seconds": timings,
            "validation": [row.as_dict() for row in results],
            "validation_schedule": {
                "batch_size": batch_size,
                "timesteps": inputs["timesteps"].tolist(),
                "num_annealed_steps": num_annealed_steps,
                "seeds": inputs["seed"].tolist(),
                "tolerance": tolerance,
                "relative_tolerance": bool(fp16),
                "validated": bool(validate),
            },
            "versions": _versions(),
            "files": {},
        }
        files = sorted(path for path in staging.rglob("*") if path.is_file())
        manifest["files"] = {path.relative_to(staging).as_posix(): file_entry(path) for path in files}
        write_manifest(staging, manifest)
    output = Path(output_dir)
    say(f"export written to {output} ({len(manifest['files'])} files)")
    return ExportReport(output, manifest, results)


def _clone(model: nn.Module) -> nn.Module:
    """A deep copy (``.half()`` converts in place; the caller's fp32 model stays untouched)."""
    return copy.deepcopy(model)
