"""Validation of an export directory through the runtime's own code, against the torch eager sampler.

:func:`validate_export` opens the directory with :class:`ncsn_runtime.NCSNPipeline` (CPU) and samples
through every graph the export ships, then compares each result with the eager
:class:`~ncsn_export.sampler.AnnealedLangevinSampler` on the same seeds, initial sample and schedule:

* the **dynamic check** (default B=3, N=4 levels, T=3): at a batch size and level count different
  from the trace shapes (B=2, N=3, see :func:`ncsn_export.exporters.onnx_export.example_inputs`), so
  the dynamic axes are exercised. Rows: ``sampler`` (fused), ``step`` (stepwise, IO binding),
  ``score`` (stepwise with the numpy scheduler), the gpu graphs when the pipeline can select them
  (``graph=``), ``sampler.pt`` / ``sampler.pt2`` when shipped, and ``inpaint.onnx`` against a torch eager
  inpainting (:mod:`.inpaint_validation`);
* the **full check** (default B=16, ``FULL_BATCH``): the fused graph over the export's full default schedule (all
  trained levels, the scheduler's T, the model's final denoise). It records the real difference
  after the whole loop. In ``auto`` mode it is cut to what fits the validation budget
  (:func:`~ncsn_export.exporters.validation_budget.plan_full_check`: smaller batch, then fewer steps per level,
  then fewer levels), with its cost estimated from the dynamic check's measured time per score call;
  ``full`` runs the whole schedule at B=16 whatever it costs. The table and the manifest
  (``validation_schedule.full_plan``) say what ran and what was left out.

Tolerances bound the max abs difference of samples relative to the reference's magnitude,
``max|a - r| <= tol * max(1, max|r|)`` (float32 rounding scales with the values; samples in [0, 1] get
the plain absolute bound): ``FP32_TOLERANCE`` for the dynamic check; ``FULL_TOLERANCE`` for the full
check, whose difference grows with the number of steps (float32 rounding differences between
onnxruntime and torch, amplified by the score's 1/sigma_min gain; the spread over seeds is in
docs/design.md). fp16 exports are compared with the fp32 torch model under ``FP16_TOLERANCE``.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ncsn_runtime.contract import ARTIFACTS, GRAPHS, ORT_PREFIX, ort_file
from ncsn_runtime.interrupt import run_interruptibly
from ncsn_runtime.manifest import load_manifest, read_manifest
from ncsn_runtime.mobile import MOBILE_PREFIX, MobileSampler, mobile_graphs
from ncsn_runtime.noise import initial_sample, seeds_for_batch
from ncsn_runtime.ort_format import ort_graph_files
from ncsn_runtime.pipeline import NCSNPipeline
from ncsn_runtime.providers import open_session
from ncsn_runtime.sampling import run_fused
from ncsn_runtime.schedule import check_count
from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler
from torch import nn

from ..models.registry import ModelSpec
from ..sampler import AnnealedLangevinSampler
from ..validation_budget import (
    DEFAULT_VALIDATION_BUDGET,
    FullCheckPlan,
    check_validate_mode,
    check_validation_budget,
    plan_full_check,
)
from .progress import stage_bar, timed_bar
from .torchscript_export import load_pt2

logger = logging.getLogger("ncsn_export")

FP32_TOLERANCE = 1e-4
FULL_TOLERANCE = 5e-3  # 3x the worst of 8 seed groups at B=16 (docs/design.md, "Validation")
FP16_TOLERANCE = 5e-2
DYNAMIC_BATCH = 3  # the dynamic check's default shapes differ from the trace's (B=2, N=3)
DYNAMIC_LEVELS = 4
TORCH_THREADS = 1
FULL_BATCH = 16  # the full check's default batch (MNIST RefineNet: 10 s of eager torch, bench/bench_export_time.py)
SAMPLER_INPUTS = GRAPHS["sampler"].input_names
# The full check plans with this share of the budget left: a smaller batch than the dynamic check's does not divide
# the per-call overhead (73 M UNet: planned 84 s at B=1 from B=3 timings, took 98.5 s; validation 132 s for 120).
BUDGET_MARGIN = 0.8


@dataclass(frozen=True)
class Schedule:
    """One validation schedule: batch size, seeds, level indices, step sizes and T (numpy, graph dtypes)."""

    name: str
    seeds: np.ndarray  # int64 [B]
    sample: np.ndarray  # float32 [B, ...], the initial sample
    timesteps: np.ndarray  # int64 [N]
    step_sizes: np.ndarray  # float32 [N]
    num_annealed_steps: int

    @property
    def batch_size(self) -> int:
        return len(self.seeds)

    def feeds(self) -> dict[str, np.ndarray]:
        """The fused sampler's inputs keyed by graph input name."""
        return {"sample": self.sample, "seed": self.seeds, "timesteps": self.timesteps, "step_sizes": self.step_sizes,
                "num_annealed_steps": np.array(self.num_annealed_steps, dtype=np.int64)}

    def describe(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "timesteps": self.timesteps.tolist(),
                "num_annealed_steps": self.num_annealed_steps, "seeds": self.seeds.tolist()}


@dataclass
class ValidationResult:
    """One row of the validation table (also stored in ``manifest["validation"]``)."""

    artifact: str
    reference: str
    max_abs_diff: float
    tolerance: float
    seconds: float
    bytes: int
    scale: float = 1.0  # the tolerance applies to max_abs_diff / scale
    check: str = "dynamic"  # "dynamic" or "full"
    graph: str = ""  # contract key or artifact key
    mode: str = ""  # how the runtime drove it: fused, stepwise, torch

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance * self.scale

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class ValidationReport:
    """What :func:`validate_export` checked: the rows and the schedules they ran."""

    rows: list[ValidationResult] = field(default_factory=list)
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_seconds: dict[str, float] = field(default_factory=dict)  # the torch eager runs, per check
    tolerance: float = FP32_TOLERANCE
    full_tolerance: float = FULL_TOLERANCE
    full_plan: FullCheckPlan | None = None  # what the full check ran (None: not planned, full_batch_size 0)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def failed(self) -> list[ValidationResult]:
        return [row for row in self.rows if not row.passed]

    @property
    def table(self) -> str:
        table = format_table(self.rows)
        if self.full_plan is not None:
            plan = self.full_plan
            table += f"\nfull check: {plan.summary()}; left out: {plan.left_out()}"
            if not plan.skipped and plan.reason:
                table += f" ({plan.reason})"
        return table


def make_schedule(scheduler_config: dict[str, Any], sample_shape: Sequence[int], init_range: Sequence[float],
                  batch_size: int, num_inference_steps: int | None, num_annealed_steps: int | None,
                  seed: int = 0, name: str = "dynamic", positions: Sequence[int] | None = None) -> Schedule:
    """The runtime's schedule for ``num_inference_steps`` levels (None: all trained) and T (None: the config's).

    The same seeds (``seed + b``), initial sample and arrays as ``NCSNPipeline(batch_size, num_inference_steps, seed)``.
    ``positions`` keeps only those positions of that schedule (with their step sizes): a part of a longer schedule.
    """
    scheduler = AnnealedLangevinDynamicsScheduler(**scheduler_config)
    levels = scheduler.num_train_timesteps
    count = levels if num_inference_steps is None else check_count("num_inference_steps", num_inference_steps, 1, levels)
    scheduler.set_timesteps(count)
    timesteps, _, step_sizes = scheduler.schedule_arrays()
    steps = scheduler.num_annealed_steps if num_annealed_steps is None else check_count("num_annealed_steps", num_annealed_steps)
    seeds = seeds_for_batch(seed, check_count("batch_size", batch_size, 1))
    sample = initial_sample(seeds, tuple(sample_shape), float(init_range[0]), float(init_range[1]))
    if positions is not None:
        keep = np.asarray(list(positions), dtype=np.int64)
        timesteps, step_sizes = timesteps[keep], step_sizes[keep]
    return Schedule(name, seeds, sample, timesteps, step_sizes, steps)


def validation_inputs(scheduler_config: dict[str, Any], sample_shape: Sequence[int], init_range: Sequence[float],
                      batch_size: int = 3, num_inference_steps: int | None = None, num_annealed_steps: int | None = 3,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """The fused sampler's feeds for a schedule (see :func:`make_schedule`)."""
    return make_schedule(scheduler_config, sample_shape, init_range, batch_size, num_inference_steps, num_annealed_steps,
                         seed).feeds()


def _diff(result: np.ndarray, reference: np.ndarray) -> float:
    result, reference = np.asarray(result), np.asarray(reference)
    if result.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(result.astype(np.float64) - reference.astype(np.float64)))) if result.size else 0.0


def _timed(function: Callable[[], Any]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = function()
    return np.asarray(result), time.perf_counter() - start


def eager_sampler(model: nn.Module, scheduler_config: dict[str, Any], final_denoise: bool) -> AnnealedLangevinSampler:
    """The torch reference: the eager sampler around ``model`` with the export's trained sigmas."""
    sigmas = torch.from_numpy(AnnealedLangevinDynamicsScheduler(**scheduler_config).train_sigmas.astype(np.float32))
    return AnnealedLangevinSampler(model, sigmas, final_denoise).eval()


def run_torch(module: Callable[..., torch.Tensor], schedule: Schedule) -> np.ndarray:
    """Run a torch sampler (eager, TorchScript or torch.export) on ``schedule``."""
    feeds = schedule.feeds()
    with torch.no_grad():
        return module(*(torch.from_numpy(np.array(feeds[name])) for name in SAMPLER_INPUTS)).numpy()


def _pipeline_supports_graph() -> bool:
    return "graph" in inspect.signature(NCSNPipeline.__call__).parameters


def runtime_routes(graphs: Sequence[str]) -> list[tuple[str, dict[str, Any], str]]:
    """``(graph key, pipeline options, mode label)`` for every shipped graph the runtime can drive.

    With the pipeline's ``graph=`` every shipped graph is selected by name; without it (an older runtime)
    ``mode`` picks sampler/step, ``stepwise_graph="score"`` the score path, and ``gpu_sampler`` runs as
    one direct session call (``gpu_step`` then stays unvalidated).
    """
    modes = {"sampler": "fused", "gpu_sampler": "fused", "step": "stepwise", "gpu_step": "stepwise", "score": "stepwise"}
    present = [key for key in GRAPHS if key in graphs and key in modes]  # inpaint: its own check (.inpaint_validation)
    if _pipeline_supports_graph():
        return [(key, {"graph": key}, modes[key]) for key in present]
    fallback = {"sampler": {"mode": "fused"}, "step": {"mode": "stepwise"},
                "score": {"mode": "stepwise", "stepwise_graph": "score"}, "gpu_sampler": {"direct": "gpu_sampler"}}
    return [(key, fallback[key], modes[key]) for key in present if key in fallback]


def _open(export_dir: Path, stepwise_graph: str = "auto", threads: int | None = None,
          graph_format: str = "onnx") -> NCSNPipeline:
    return NCSNPipeline.from_pretrained(export_dir, provider="cpu", stepwise_graph=stepwise_graph, intra_op_threads=threads,
                                        graph_format=graph_format)


def _run_pipeline(pipe: NCSNPipeline, schedule: Schedule, options: dict[str, Any]) -> np.ndarray:
    """Sample ``schedule`` through ``pipe`` (its seeds are ``seed + b`` from ``schedule.seeds[0]``)."""
    if "direct" in options:  # a fused graph with the sampler's I/O, on the pipeline's device and session options
        session = open_session(pipe.graph_path(options["direct"]), pipe.device, intra_op_threads=pipe.intra_op_threads)
        return run_interruptibly(session, None, schedule.feeds())[0]  # Ctrl-C stops it, like every runtime call
    pipe.scheduler.num_annealed_steps = schedule.num_annealed_steps
    out = pipe(batch_size=schedule.batch_size, num_inference_steps=len(schedule.timesteps), seed=int(schedule.seeds[0]),
               output_type="raw", progress=False, **{k: v for k, v in options.items() if k != "stepwise_graph"})
    return out.images


def validate_export(
    export_dir: str | Path,
    model: ModelSpec | nn.Module,
    *,
    batch_size: int = 3,
    num_inference_steps: int | None = None,
    num_annealed_steps: int | None = 3,
    full_batch_size: int = FULL_BATCH,
    seed: int = 0,
    tolerance: float | None = None,
    full_tolerance: float | None = None,
    intra_op_threads: int | None = None,
    torch_threads: int | None = TORCH_THREADS,
    mode: str = "auto",
    budget: float = DEFAULT_VALIDATION_BUDGET,
    progress: bool = False,
) -> ValidationReport:
    """Sample through every graph and torch artifact of ``export_dir`` with the runtime; compare with torch eager.

    Args:
        export_dir: an export directory (its ``manifest.json`` names the graphs, schedule and model facts).
        model: the fp32 score network (or its :class:`ModelSpec`) the export was made from.
        batch_size, num_inference_steps, num_annealed_steps: the dynamic check's schedule (levels in [1, L];
            ``None`` levels = min(4, L), ``None`` T = the scheduler's).
        full_batch_size: batch of the full-default-schedule check of the fused graph (0: skip it).
        seed: seed of sample 0 (sample b uses ``seed + b``).
        tolerance, full_tolerance: max abs difference allowed (defaults: module constants; fp16 exports
            use ``FP16_TOLERANCE`` relative to the reference's magnitude).
        intra_op_threads: onnxruntime threads per operator (None: its default).
        torch_threads: torch intra-op threads for the eager reference and the torch artifacts (None: torch's
            default). Default 1: on a busy 2-core machine torch's default threads made the RefineNet
            reference ~100x slower (B=3, 4x3 steps: 73-92 s with 2 threads, 0.8 s with 1).
        mode: ``"auto"`` (the full check cut to fit ``budget``) or ``"full"`` (the whole default schedule at
            ``full_batch_size``, whatever it costs; its estimate is logged first).
        budget: seconds for the whole validation in ``auto`` mode; the full check gets what the dynamic check left.
        progress: tqdm bars with an ETA on stderr.

    Returns:
        :class:`ValidationReport` (rows in the order run; check ``.passed``). Does not raise on a mismatch.
    """
    mode = check_validate_mode(mode)
    if mode == "none":
        raise ValueError("validate_export runs a validation: `mode` must be 'auto' or 'full', got 'none'")
    budget = check_validation_budget(budget)
    previous = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(check_count("torch_threads", torch_threads, 1))
    try:
        return _validate(Path(export_dir), model.model if isinstance(model, ModelSpec) else model, batch_size,
                         num_inference_steps, num_annealed_steps, full_batch_size, seed, tolerance, full_tolerance,
                         intra_op_threads, mode, budget, progress)
    finally:
        torch.set_num_threads(previous)


def _validate(root: Path, network: nn.Module, batch_size: int, num_inference_steps: int | None,
              num_annealed_steps: int | None, full_batch_size: int, seed: int, tolerance: float | None,
              full_tolerance: float | None, intra_op_threads: int | None, mode: str, budget: float,
              progress: bool) -> ValidationReport:
    started = time.perf_counter()
    manifest = load_manifest(root)
    info = manifest["model"]
    shape = tuple(info["sample_shape"])
    fp16 = info.get("compute_dtype", "float32") == "float16"
    final_denoise = bool(info.get("final_denoise", False))
    tolerance = (FP16_TOLERANCE if fp16 else FP32_TOLERANCE) if tolerance is None else float(tolerance)
    full_tolerance = (FP16_TOLERANCE if fp16 else FULL_TOLERANCE) if full_tolerance is None else float(full_tolerance)
    report = ValidationReport(tolerance=tolerance, full_tolerance=full_tolerance)
    pipe = _open(root, threads=intra_op_threads)
    config = dict(pipe.scheduler.config)
    reference = eager_sampler(network.eval(), config, final_denoise)

    def add(artifact: str, graph: str, mode: str, label: str, run: Callable[[], np.ndarray], expected: np.ndarray,
            schedule: Schedule, bound: float, warm: Callable[[], Any] | None = None) -> ValidationResult:
        try:
            if warm is not None:  # open the session first, so the row times the sampling alone
                warm()
            result, seconds = _timed(run)
            diff = _diff(result, expected)
        except Exception as error:  # a graph the runtime cannot run is a failed row, not a crash of the export
            logger.warning("validation of %s (%s) raised %s: %s", artifact, mode, type(error).__name__, error)
            diff, seconds = float("inf"), 0.0
        scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
        size = (root / artifact).stat().st_size if (root / artifact).is_file() else 0
        row = ValidationResult(artifact, label, diff, bound, round(seconds, 4), size, round(scale, 4), schedule.name, graph,
                               mode)
        report.rows.append(row)
        return row

    if num_inference_steps is None:
        num_inference_steps = min(DYNAMIC_LEVELS, int(config["num_train_timesteps"]))
    dynamic = make_schedule(config, shape, info["init_range"], batch_size, num_inference_steps, num_annealed_steps, seed)
    report.schedules["dynamic"] = dynamic.describe()
    routes = runtime_routes(list(manifest["graphs"]))
    torch_files = [(key, loader) for key, loader in (("torchscript", _load_torchscript), ("torch_export", load_pt2))
                   if manifest.get("artifacts", {}).get(key, {}).get("status") == "written"]
    ort_routes = runtime_routes(list(ort_graph_files(read_manifest(root))))  # the .ort graphs (--artifacts ort)
    ort_pipes: list[NCSNPipeline] = []

    def ort_pipe() -> NCSNPipeline:  # opened on first use, inside a row: a broken .ort fails its row, not the export
        if not ort_pipes:
            ort_pipes.append(_open(root, threads=intra_op_threads, graph_format="ort"))
        return ort_pipes[0]

    fused_seconds: float | None = None
    with stage_bar(f"validate: dynamic check ({len(dynamic.timesteps)}x{dynamic.num_annealed_steps}, B={dynamic.batch_size})",
                   1 + len(routes) + len(ort_routes) + len(torch_files), progress) as bar:
        expected, report.reference_seconds["dynamic"] = _timed(lambda: run_torch(reference, dynamic))
        bar.update()
        label = f"torch eager {len(dynamic.timesteps)}x{dynamic.num_annealed_steps}, B={dynamic.batch_size}"
        score_pipe: NCSNPipeline | None = None
        for key, options, route_mode in routes:
            runner = pipe
            if options.get("stepwise_graph") == "score":
                score_pipe = score_pipe or _open(root, stepwise_graph="score", threads=intra_op_threads)
                runner = score_pipe
            warm = None if "direct" in options else (lambda r=runner, k=key: r.graphs.session(k))
            row = add(GRAPHS[key].file, key, route_mode, label, lambda r=runner, o=options: _run_pipeline(r, dynamic, o),
                      expected, dynamic, tolerance, warm)
            if key == "sampler" and row.passed:
                fused_seconds = row.seconds
            bar.update()
        for key, options, route_mode in ort_routes:  # same schedule, same torch reference, through the runtime
            add(ort_file(key), ORT_PREFIX + key, route_mode, label, lambda o=options: _run_pipeline(ort_pipe(), dynamic, o),
                expected, dynamic, tolerance, lambda k=key: ort_pipe().graphs.session(k))
            bar.update()
        _mobile_rows(root, add, reference, config, shape, info["init_range"], dynamic, intra_op_threads, tolerance)
        for key, loader in torch_files:
            path = root / ARTIFACTS[key]
            with torch.jit.optimized_execution(False):  # the profiling executor's warm-up passes cost ~30 s on a RefineNet
                add(ARTIFACTS[key], key, "torch", label, lambda p=path, f=loader: run_torch(f(p), dynamic), expected, dynamic,
                    tolerance)
            bar.update()

    if "inpaint" in manifest["graphs"]:  # fused inpaint.onnx vs torch eager inpainting (.inpaint_validation)
        from .inpaint_validation import inpaint_check

        fused_inpaint, eager_inpaint, inpaint_label = inpaint_check(pipe, network.eval(), dynamic.batch_size,
                                                                    len(dynamic.timesteps), dynamic.num_annealed_steps,
                                                                    int(dynamic.seeds[0]))
        inpaint_expected, report.reference_seconds["inpaint"] = _timed(eager_inpaint)
        add(GRAPHS["inpaint"].file, "inpaint", "fused", inpaint_label, fused_inpaint, inpaint_expected, dynamic, tolerance,
            lambda: pipe.graphs.session("inpaint"))
        if "inpaint" in ort_graph_files(read_manifest(root)):  # ort/inpaint.ort through the runtime, same reference
            def ort_inpaint() -> np.ndarray:
                return inpaint_check(ort_pipe(), network, dynamic.batch_size, len(dynamic.timesteps),
                                     dynamic.num_annealed_steps, int(dynamic.seeds[0]))[0]()

            add(ort_file("inpaint"), ORT_PREFIX + "inpaint", "fused", inpaint_label, ort_inpaint, inpaint_expected, dynamic,
                tolerance, lambda: ort_pipe().graphs.session("inpaint"))

    if full_batch_size and "sampler" in manifest["graphs"]:
        calls = len(dynamic.timesteps) * dynamic.num_annealed_steps + int(final_denoise)
        torch_seconds = report.reference_seconds["dynamic"]
        onnx_seconds = torch_seconds if fused_seconds is None else fused_seconds  # no fused row: assume torch's speed
        per_sample_call = (torch_seconds + onnx_seconds) / (calls * dynamic.batch_size)
        left = (budget - (time.perf_counter() - started)) * BUDGET_MARGIN
        plan = plan_full_check(mode, per_sample_call, left,
                               num_levels=int(config["num_train_timesteps"]),
                               num_annealed_steps=int(config["num_annealed_steps"]), full_batch=full_batch_size,
                               final_denoise=final_denoise)
        report.full_plan = plan
        report.schedules["full_plan"] = plan.describe()
        if plan.skipped:
            logger.warning("full check skipped: %s", plan.reason)
        else:
            logger.info("full check: %s, estimated %.0f s (%s)", plan.summary(), plan.estimated_seconds, plan.reason)
            _full_check(report, add, pipe, reference, plan, config, shape, info["init_range"], seed, full_tolerance,
                        torch_seconds / max(torch_seconds + onnx_seconds, 1e-9), progress)
    return report


def _mobile_rows(root: Path, add: Callable[..., ValidationResult], reference: nn.Module, config: dict[str, Any],
                 shape: tuple[int, ...], init_range: Sequence[float], dynamic: Schedule, threads: int | None,
                 bound: float) -> None:
    """The fixed-shape ``mobile/`` graphs (``--artifacts mobile``) through the runtime's host loop
    (:class:`ncsn_runtime.mobile.MobileSampler`, host counter noise) at their batch, on the dynamic check's levels."""
    graphs = mobile_graphs(read_manifest(root))
    for key, graph in graphs.items():
        schedule = make_schedule(config, shape, init_range, graph.batch, len(dynamic.timesteps), dynamic.num_annealed_steps,
                                 int(dynamic.seeds[0]), name="dynamic")
        expected = run_torch(reference, schedule)
        label = f"torch eager {len(schedule.timesteps)}x{schedule.num_annealed_steps}, B={schedule.batch_size} (fixed)"

        def run(k: str = key, s: Schedule = schedule) -> np.ndarray:
            sampler = MobileSampler(root, k, intra_op_threads=threads)
            return sampler(s.seeds, len(s.timesteps), s.num_annealed_steps, sample=s.sample)

        add(graph.file, MOBILE_PREFIX + key, "stepwise", label, run, expected, schedule, bound)


def _full_check(report: ValidationReport, add: Callable[..., ValidationResult], pipe: NCSNPipeline, reference: nn.Module,
                plan: FullCheckPlan, config: dict[str, Any], shape: tuple[int, ...], init_range: Sequence[float], seed: int,
                bound: float, torch_share: float, progress: bool) -> None:
    """The fused graph through the runtime over ``plan``'s part of the full default schedule, against torch eager."""
    full = make_schedule(config, shape, init_range, plan.batch_size, None, plan.num_annealed_steps, seed, name="full",
                         positions=plan.timesteps)
    report.schedules["full"] = full.describe()
    with timed_bar("validate: full check, torch eager", plan.estimated_seconds * torch_share, progress):
        expected, report.reference_seconds["full"] = _timed(lambda: run_torch(reference, full))
    label = f"torch eager {len(full.timesteps)}x{full.num_annealed_steps}, B={full.batch_size} " + (
        "(full default schedule)" if plan.is_whole else f"(part of the full {plan.full_levels}x{plan.full_steps} schedule)")

    def fused() -> np.ndarray:
        return run_fused(pipe.graphs, "sampler", full.sample, full.seeds, full.timesteps, full.step_sizes,
                         full.num_annealed_steps, progress=False)

    with timed_bar("validate: full check, onnxruntime", plan.estimated_seconds * (1 - torch_share), progress):
        add(GRAPHS["sampler"].file, "sampler", "fused", label, fused, expected, full, bound)


def _load_torchscript(path: Path) -> Any:
    return torch.jit.load(str(path))


def format_table(results: Sequence[ValidationResult]) -> str:
    """A plain-text table: artifact, size, max abs diff, tolerance, time, verdict, check, reference."""
    header = (f"{'artifact':<17} {'size':>10} {'max abs diff':>13} {'allowed':>10} {'time s':>8}  {'result':<6} "
              f"{'mode':<9} reference")
    lines = [header, "-" * len(header)]
    for row in results:
        size = f"{row.bytes / 1024:.1f} KiB" if row.bytes < 1 << 20 else f"{row.bytes / (1 << 20):.2f} MiB"
        verdict = "ok" if row.passed else "FAIL"
        allowed = row.tolerance * row.scale
        lines.append(f"{row.artifact:<17} {size:>10} {row.max_abs_diff:>13.3e} {allowed:>10.1e} {row.seconds:>8.3f}  "
                     f"{verdict:<6} {row.mode:<9} {row.reference}")
    return "\n".join(lines)
