"""``export_model``: from a model (name, ``module:factory``, directory or :class:`ModelSpec`) to a validated export directory.

Five steps, each a function with a typed result (docs/design.md, "Export pipeline"):

1. :func:`trace`: one ``torch.onnx.export(dynamo=True)`` of the score network -> ``score.onnx`` (:class:`TraceResult`).
2. :func:`compose`: every other ONNX graph of the contract composed from that score graph with
   :func:`ncsn_export.exporters.compose.compose_graphs` (:class:`ComposeResult`); no second trace.
3. :func:`write`: the graphs (checked against :mod:`ncsn_runtime.contract`), the scheduler config and the
   requested torch artifacts into the staging directory (:class:`WriteResult`).
4. :func:`run_validation`: :func:`~ncsn_export.exporters.validate.validate_export`, the runtime against torch eager
   (:class:`~ncsn_export.exporters.validate.ValidationReport`); optional artifacts that fail are removed.
5. :func:`finish_manifest`: the manifest through :class:`~ncsn_export.exporters.manifest_builder.ManifestBuilder`.

Progress goes to the ``ncsn_export`` logger (the CLI configures it); nothing is printed.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from ncsn_runtime.config import save_scheduler_config
from ncsn_runtime.contract import GRAPHS, ORT_CONFIG
from ncsn_runtime.fileio import ENVIRONMENT_ERRNOS
from ncsn_runtime.schedule import check_count, geometric_sigmas
from torch import nn

from ..models.registry import ModelSpec
from ..sampler import AnnealedLangevinSampler
from ..validation_budget import DEFAULT_VALIDATION_BUDGET, check_validate_mode, check_validation_budget
from .artifacts import ArtifactSelection, select_artifacts
from .compose import compose_graphs
from .directory import atomic_directory, check_output_dir
from .errors import ExportError, ExportInputError
from .inputs import MAX_VALIDATION_BATCH, check_export_arguments, load_spec
from .lean_graph import lean_graph
from .manifest_builder import ArtifactEntry, GraphEntry, ManifestBuilder, ModelInfo, versions
from .mobile_artifact import DEFAULT_MOBILE_BATCH, MobileGraphError, check_mobile_batch, write_mobile_graphs
from .onnx_export import (
    DEFAULT_OPSET,
    check_opset,
    count_nodes,
    estimate_trace_seconds,
    example_inputs,
    export_score_onnx,
)
from .ort_format import refresh_after_validation, table_line, write_ort_models
from .progress import stage_bar, timed_bar
from .shared_weights import WEIGHTS_FILE, SharedWeights, detach_weights
from .torchscript_export import export_pt2, export_torchscript
from .validate import FP16_TOLERANCE, FP32_TOLERANCE, FULL_BATCH, FULL_TOLERANCE, ValidationReport, validate_export

logger = logging.getLogger("ncsn_export")

TRACE_BATCH = 2  # trace shapes: B=2, N=3 (example_inputs); validation runs at other sizes to prove the dynamic axes
TRACE_LEVELS = 3


class HalfPrecisionScore(nn.Module):
    """Runs a score network in float16 behind a float32 interface (the Langevin update stays float32)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half()  # .half() converts in place: the caller's fp32 model stays untouched

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.model(sample.to(torch.float16), timestep).to(torch.float32)


@dataclass(frozen=True)
class ExportPlan:
    """Everything decided before tracing: the model, the network to trace and the options."""

    spec: ModelSpec
    network: nn.Module  # spec.model, or its fp16 wrapper
    sample_shape: tuple[int, ...]
    train_sigmas: np.ndarray  # float32 [L]
    final_denoise: bool
    opset: int
    fp16: bool
    artifacts: ArtifactSelection

    def sampler(self) -> AnnealedLangevinSampler:
        return AnnealedLangevinSampler(self.network, torch.from_numpy(self.train_sigmas), self.final_denoise).eval()


@dataclass
class TraceResult:
    """Step 1: the score graph from the one dynamo export of the network."""

    score: onnx.ModelProto
    seconds: float
    weights: SharedWeights | None = None  # the network's weights, detached into one file (every graph reads it)


@dataclass
class ComposeResult:
    """Step 2: every requested ONNX graph (contract key -> model) and the ones that could not be made."""

    graphs: dict[str, onnx.ModelProto]
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason
    seconds: float = 0.0
    weights: SharedWeights | None = None  # moved into the export directory by `write`


@dataclass
class WriteResult:
    """Step 3: what is on disk in the staging directory."""

    graphs: list[GraphEntry]
    artifacts: list[ArtifactEntry]
    seconds: dict[str, float]


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: the directory, its manifest, the validation and the artifact table."""

    output_dir: Path
    manifest: dict[str, Any]
    validation: ValidationReport = field(default_factory=ValidationReport)

    @property
    def table(self) -> str:
        """The validation table followed by one line per skipped artifact."""
        lines = [self.validation.table]
        for entry in self.manifest.get("artifacts", {}).values():
            if entry.get("status") == "skipped":
                lines.append(f"{entry['file']:<17} skipped: {entry.get('reason', '')}")
            elif entry.get("file") == ORT_CONFIG:
                lines.append(table_line(entry))
        return "\n".join(lines)


def check_network(spec: ModelSpec, batch_size: int = TRACE_BATCH) -> None:
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


def plan_export(model: str | ModelSpec | None, *, opset: int, fp16: bool, final_denoise: bool | None,
                artifacts: str | Iterable[str] | None) -> ExportPlan:
    """Resolve the model and options; raise :class:`ExportError` for anything invalid (before any trace)."""
    opset = check_opset(opset)
    selection = select_artifacts(artifacts)
    spec = load_spec(model)
    check_network(spec)
    config = spec.scheduler_config
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], int(config["num_train_timesteps"]))
    network = HalfPrecisionScore(spec.model).eval() if fp16 else spec.model
    denoise = spec.final_denoise if final_denoise is None else bool(final_denoise)
    return ExportPlan(spec, network, tuple(spec.sample_shape), sigmas, denoise, opset, fp16, selection)


def trace(plan: ExportPlan, workdir: Path, progress: bool = False) -> TraceResult:
    """Step 1: ``torch.onnx.export(dynamo=True)`` of the score network, once."""
    start = time.perf_counter()
    path = workdir / GRAPHS["score"].file
    estimate = estimate_trace_seconds(plan.network) if progress else 0.0
    with timed_bar("trace: torch.onnx.export(dynamo=True)", estimate, progress):
        export_score_onnx(plan.network, plan.sample_shape, path, plan.opset)
    proto = onnx.load(str(path))
    path.unlink()
    proto, lean_counts = lean_graph(proto)  # once, with the weights still inline: its new level tables are shared too
    logger.debug("lean_graph rewrites: %s", lean_counts)
    weights = detach_weights(proto, workdir / WEIGHTS_FILE)  # one file for every graph; compose copies references only
    seconds = time.perf_counter() - start
    logger.info("traced the score network (one dynamo export) in %.1f s", seconds)
    return TraceResult(proto, seconds, weights)


def compose(plan: ExportPlan, traced: TraceResult, progress: bool = False) -> ComposeResult:
    """Step 2: the requested graphs, composed from the traced score graph (no re-trace).

    Each graph is composed on its own, so one that fails skips only itself (or fails the export when required).
    """
    start = time.perf_counter()
    graphs: dict[str, onnx.ModelProto] = {}
    skipped: dict[str, str] = {}
    with stage_bar("compose", len(plan.artifacts.graphs), progress) as bar:
        for key in plan.artifacts.graphs:  # "score" too: the composer applies its graph rewrites (e.g. Elu) to it
            try:
                graphs[key] = compose_graphs(traced.score, plan.sample_shape, plan.train_sigmas, plan.final_denoise,
                                             keys=(key,), opset=plan.opset, lean=False,  # done in trace()
                                             external_data_dir=traced.weights.path.parent if traced.weights else None)[key]
            except Exception as error:  # onnx checker / shape inference errors: this graph only
                skipped[key] = f"{type(error).__name__}: {error}"
                logger.warning("could not make %s: %s", GRAPHS[key].file, skipped[key])
            bar.update()
    seconds = time.perf_counter() - start
    logger.info("composed %s from the score graph in %.1f s", ", ".join(k for k in graphs if k != "score"), seconds)
    return ComposeResult(graphs, skipped, seconds, traced.weights)


def check_graph_io(key: str, model: onnx.ModelProto, sample_shape: Sequence[int]) -> None:
    """Check ``model``'s inputs/outputs against the contract (names, order, dtypes, fixed dims); name symbolic dims
    as the contract does (``batch``, ``num_levels``) so the manifest and the graph agree."""
    spec = GRAPHS[key]
    for kind, actual, expected in (("inputs", model.graph.input, spec.inputs), ("outputs", model.graph.output, spec.outputs)):
        names = [value.name for value in actual]
        if names != [tensor.name for tensor in expected]:
            raise ExportError(f"{spec.file}: {kind} {names} differ from the contract's {[t.name for t in expected]}")
        for value, tensor in zip(actual, expected, strict=True):
            dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
            dims = value.type.tensor_type.shape.dim
            shape = tensor.concrete_shape(sample_shape)
            if dtype != tensor.dtype or len(dims) != len(shape):
                raise ExportError(f"{spec.file}: {value.name} is {dtype}[{len(dims)} dims], the contract says "
                                  f"{tensor.dtype}{shape}")
            for dim, want in zip(dims, shape, strict=True):
                if isinstance(want, int):
                    if dim.dim_value != want:
                        raise ExportError(f"{spec.file}: {value.name} has shape {_dims(dims)}, the contract says {shape}")
                elif dim.dim_value:
                    raise ExportError(f"{spec.file}: {value.name} has a fixed {dim.dim_value} where the contract has "
                                      f"the dynamic axis {want!r}")
                else:
                    dim.dim_param = str(want)


def _dims(dims: Any) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in dims]


def _unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]] | None:
    try:
        from .placement import unsupported_ops
    except ImportError:  # the placement audit is not in this build
        return None
    return unsupported_ops(model)


def write(plan: ExportPlan, composed: ComposeResult, staging: Path, progress: bool = False) -> WriteResult:
    """Step 3: graphs (contract-checked), scheduler config and the requested torch artifacts into ``staging``."""
    seconds: dict[str, float] = {}
    entries: list[GraphEntry] = []
    artifacts: list[ArtifactEntry] = [ArtifactEntry(key, "skipped", reason) for key, reason in composed.skipped.items()]
    save_scheduler_config(staging / "scheduler", dict(plan.spec.scheduler_config))
    if composed.weights is not None:
        composed.weights.install(staging)
    keys = [key for key in GRAPHS if key in composed.graphs]
    with stage_bar("write", len(keys) + len(plan.artifacts.torch) + plan.artifacts.ort, progress) as bar:
        for key in keys:
            start = time.perf_counter()
            model = composed.graphs[key]
            check_graph_io(key, model, plan.sample_shape)
            path = staging / GRAPHS[key].file
            onnx.save(model, str(path))
            try:
                onnx.checker.check_model(str(path), full_check=True)
            except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
                raise ExportError(f"{path.name} does not pass onnx's checker: {' '.join(str(error).split())[:500]}"
                                  ) from error
            entries.append(GraphEntry(key, count_nodes(model.graph), _unsupported_ops(model)))
            if key not in ("score", "step", "sampler"):
                artifacts.append(ArtifactEntry(key, "written"))
            seconds[GRAPHS[key].file] = round(time.perf_counter() - start, 3)
            bar.update()
        for key in plan.artifacts.torch:
            start = time.perf_counter()
            entry = _write_torch_artifact(plan, key, staging)
            seconds[entry.file] = round(time.perf_counter() - start, 3)
            artifacts.append(entry)
            bar.update()
        if plan.artifacts.ort:  # ort/KEY.ort of every graph written above + ort/required_operators.config
            ort_entries, ort_seconds = write_ort_models(staging, [entry.key for entry in entries])
            artifacts.extend(ort_entries)
            seconds.update(ort_seconds)
            bar.update()
    for entry in artifacts:
        if entry.status == "skipped" and plan.artifacts.is_required(entry.key):
            raise ExportError(f"{entry.file} was requested but could not be made: {entry.reason}")
    return WriteResult(entries, artifacts, seconds)


def _write_torch_artifact(plan: ExportPlan, key: str, staging: Path) -> ArtifactEntry:
    path = staging / ArtifactEntry(key, "").file
    try:
        if key == "torchscript":
            details = export_torchscript(plan.network, torch.from_numpy(plan.train_sigmas), plan.final_denoise,
                                         plan.sample_shape, path)
        else:
            details = export_pt2(plan.sampler(), plan.sample_shape, path)
    except OSError as error:
        path.unlink(missing_ok=True)
        if error.errno in ENVIRONMENT_ERRNOS:  # a full disk is not "this artifact cannot be made": fail the export
            raise
        logger.warning("could not make %s: %s", path.name, error)
        return ArtifactEntry(key, "skipped", f"{type(error).__name__}: {error}")
    except Exception as error:  # an optional artifact that cannot be made must not discard the ONNX graphs
        path.unlink(missing_ok=True)
        logger.warning("could not make %s: %s", path.name, error)
        return ArtifactEntry(key, "skipped", f"{type(error).__name__}: {error}")
    logger.info("wrote %s", path.name)
    return ArtifactEntry(key, "written", details=details)


def write_mobile(plan: ExportPlan, traced: TraceResult, staging: Path, batch: int) -> WriteResult:
    """Step 3b, with ``mobile`` requested: ``mobile/`` graphs from the lean traced network (weights now in ``staging``)."""
    try:
        entries, seconds = write_mobile_graphs(staging, traced.score, staging if traced.weights else None,
                                               plan.sample_shape, len(plan.train_sigmas), batch)
    except (MobileGraphError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportError(f"the mobile graphs were requested but could not be made: {error}") from error
    return WriteResult([], entries, seconds)


def run_validation(plan: ExportPlan, staging: Path, builder: ManifestBuilder, **options: Any) -> ValidationReport:
    """Step 4: the runtime through every shipped graph vs torch eager; optional artifacts that fail are removed.

    Writes a provisional manifest first (the runtime opens an export directory through its manifest).
    Raises :class:`ExportError` when a required graph fails.
    """
    builder.write(staging)
    start = time.perf_counter()
    report = validate_export(staging, plan.spec.model, **options)
    builder.export_seconds["validation"] = round(time.perf_counter() - start, 3)
    logger.info("validated %d runs in %.1f s (%d failed)", len(report.rows), builder.export_seconds["validation"],
                len(report.failed()))
    logger.debug("validation table:\n%s", report.table)
    for row in report.failed():
        if plan.artifacts.is_required(row.graph):
            continue
        reason = (f"validation failed: max abs diff {row.max_abs_diff:.3e} > {row.tolerance * row.scale:.1e} "
                  f"({row.mode}, {row.reference})")
        (staging / row.artifact).unlink(missing_ok=True)
        builder.graphs = [entry for entry in builder.graphs if entry.key != row.graph]
        builder.artifacts = [entry if entry.key != row.graph else ArtifactEntry(row.graph, "skipped", reason)
                             for entry in builder.artifacts]
        logger.warning("skipped %s: %s", row.artifact, reason)
    builder.artifacts = refresh_after_validation(staging, builder.artifacts)  # the ORT config lists the .ort left
    checked = {row.graph for row in report.rows}
    for entry in builder.artifacts:
        if entry.status == "written" and entry.file != ORT_CONFIG:
            entry.details["validated"] = entry.key in checked  # False: this runtime has no driver for it (gpu_step)
            if entry.key not in checked:
                logger.warning("%s is written but not validated: the runtime in this build cannot drive it", entry.file)
    failed = [row for row in report.failed() if plan.artifacts.is_required(row.graph)]
    if failed:
        raise ExportError(f"validation failed for {', '.join(sorted({row.artifact for row in failed}))}; nothing was "
                          f"written\n{report.table}")
    return report


def finish_manifest(builder: ManifestBuilder, staging: Path) -> dict[str, Any]:
    """Step 5: the final ``manifest.json`` (validation rows, timings, sha256 of every file)."""
    return builder.write(staging)


def export_model(
    model: str | ModelSpec | None,
    output_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    validate: bool | str = True,
    validation_budget: float = DEFAULT_VALIDATION_BUDGET,
    progress: bool = False,
    force: bool = False,
    allow_extra_files: bool = False,
    artifacts: str | Iterable[str] | None = None,
    batch_size: int = 3,
    num_inference_steps: int | None = None,
    num_annealed_steps: int | None = 3,
    full_batch_size: int = FULL_BATCH,
    final_denoise: bool | None = None,
    tolerance: float | None = None,
    full_tolerance: float | None = None,
    mobile_batch: int = DEFAULT_MOBILE_BATCH,
) -> ExportReport:
    """Export a score network to ``output_dir``: the contract's ONNX graphs, optional torch files, manifest.

    Args:
        model: built-in name, ``package.module:factory``, diffusers-ncsn directory, a :class:`ModelSpec`,
            or None for the default model.
        output_dir: directory to create; written atomically (staged, then renamed).
        opset: ONNX opset of every graph, in [18, onnx's newest].
        fp16: run the score network in float16 inside every artifact (I/O stays float32).
        validate: how to validate before anything is written: ``"auto"`` (True; the full check cut to fit
            ``validation_budget``), ``"full"`` (the whole default schedule at ``full_batch_size``, whatever it costs)
            or ``"none"`` (False).
        validation_budget: seconds for the whole validation in ``auto`` mode, in [0, one week] (default 120).
        progress: tqdm bars with an ETA on stderr for each stage (trace, compose, write, validate).
        force: replace an existing export directory (only an ncsn-export directory holding nothing but its listed files).
        allow_extra_files: with ``force``, also delete files in it that the earlier export did not write.
        artifacts: ``--artifacts`` entries (see :mod:`.artifacts`; None: every ONNX graph + ``sampler.pt``).
        batch_size, num_inference_steps, num_annealed_steps: the validation's dynamic check (levels spread
            over the trained range, in [1, L]; ``None``: min(4, L) levels; ``None`` T: the scheduler's).
        full_batch_size: batch of the full-default-schedule check (0: skip it).
        final_denoise: NCSNv2 final denoising step in the samplers; None takes the model's default.
        tolerance, full_tolerance: max abs difference allowed (see :mod:`.validate`).
        mobile_batch: the fixed batch of the ``mobile`` graphs, in [1, 64] (used only with ``mobile`` in ``artifacts``).

    Raises:
        ExportError: unknown/broken model, untraceable network, bad opset or artifact name, failed validation
        of a required graph, existing output.
    """
    check_export_arguments(batch_size, num_inference_steps, num_annealed_steps, tolerance, full_tolerance)
    try:
        mode = check_validate_mode(validate)
        budget = check_validation_budget(validation_budget)
    except ValueError as error:
        raise ExportInputError(str(error)) from None
    full_batch_size = check_count("full_batch_size", full_batch_size, 0, MAX_VALIDATION_BATCH)
    mobile_batch = check_mobile_batch(mobile_batch)
    check_output_dir(output_dir, force, allow_extra_files)
    plan = plan_export(model, opset=opset, fp16=fp16, final_denoise=final_denoise, artifacts=artifacts)
    if num_inference_steps is not None:
        check_count("num_inference_steps", num_inference_steps, 1, len(plan.train_sigmas))
    logger.info("exporting %r (sample shape %s, opset %d, %s, final_denoise=%s, artifacts %s) to %s", plan.spec.name,
                list(plan.sample_shape), plan.opset, "fp16" if fp16 else "fp32", plan.final_denoise,
                ",".join(plan.artifacts.keys), output_dir)
    builder = ManifestBuilder(
        ModelInfo(plan.spec.name, plan.spec.description, plan.sample_shape, "float16" if fp16 else "float32",
                  bool(plan.spec.is_image), tuple(plan.spec.init_range), tuple(plan.spec.data_range), plan.final_denoise,
                  len(plan.train_sigmas)),
        plan.opset, versions=versions())
    report = ValidationReport(tolerance=(FP16_TOLERANCE if fp16 else FP32_TOLERANCE) if tolerance is None else tolerance,
                              full_tolerance=FULL_TOLERANCE if full_tolerance is None else full_tolerance)
    with (atomic_directory(output_dir, force, allow_extra_files) as staging,
          tempfile.TemporaryDirectory(prefix="ncsn-trace-") as scratch):
        traced = trace(plan, Path(scratch), progress)
        composed = compose(plan, traced, progress)
        written = write(plan, composed, staging, progress)
        builder.graphs, builder.artifacts = written.graphs, written.artifacts
        builder.export_seconds = {"trace": round(traced.seconds, 3), "compose": round(composed.seconds, 3), **written.seconds}
        if plan.artifacts.mobile:
            mobile = write_mobile(plan, traced, staging, mobile_batch)
            builder.artifacts.extend(mobile.artifacts)
            builder.export_seconds.update(mobile.seconds)
        if mode != "none":
            report = run_validation(plan, staging, builder, batch_size=batch_size, num_inference_steps=num_inference_steps,
                                    num_annealed_steps=num_annealed_steps, full_batch_size=full_batch_size,
                                    tolerance=tolerance, full_tolerance=full_tolerance, mode=mode, budget=budget,
                                    progress=progress)
        builder.validation, builder.validated = report, mode != "none"
        manifest = finish_manifest(builder, staging)
    output = Path(output_dir)
    logger.info("export written to %s (%d files)", output, len(manifest["files"]))
    return ExportReport(output, manifest, report)
