"""Validation of an export against torch eager: every artifact, the full loop, fixed seeds.

The reference is the eager :class:`~ncsn_export.sampler.AnnealedLangevinSampler` on a short schedule
(``num_inference_steps`` levels x ``num_annealed_steps`` steps, seeds ``0..B-1``, the initial sample of
:func:`ncsn_runtime.noise.initial_sample`). Checked against it:

* ``sampler.onnx`` on onnxruntime CPU (``ORT_ENABLE_ALL``): the fused loop;
* ``step.onnx`` (+ ``score.onnx`` for the final denoising step) driven by a Python loop, as the
  runtime's per-step path does it;
* ``score.onnx`` on its own, at every level of the schedule;
* ``sampler.pt`` through ``torch.jit.load`` and ``sampler.pt2`` through ``torch.export.load``.

Tolerance: ``FP32_TOLERANCE`` on the max abs difference of samples. ``score.onnx`` compares scores,
whose magnitude grows like 1/sigma_min, so its bound is scaled by ``max(1, max|score|)``.
fp16 artifacts are compared with the fp32 torch model under ``FP16_TOLERANCE`` relative to the
reference's magnitude, i.e. ``max|a - r| <= FP16_TOLERANCE * max(1, max|r|)`` (half precision has
about 3 significant digits, so an absolute bound would depend on the model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from ncsn_runtime.noise import initial_sample, langevin_counter, seeds_for_batch
from ncsn_runtime.schedule import denoise_update
from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler

from ..sampler import AnnealedLangevinSampler
from .onnx_export import SAMPLER_INPUTS
from .torchscript_export import load_pt2

FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-2


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

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance * self.scale

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def validation_inputs(
    scheduler_config: dict[str, Any],
    sample_shape: Sequence[int],
    init_range: Sequence[float],
    batch_size: int = 2,
    num_inference_steps: int = 3,
    num_annealed_steps: int = 5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The fused sampler's inputs (numpy, keyed by graph input name) for a short schedule.

    ``num_inference_steps`` levels spread over the trained range (clipped to it) and ``num_annealed_steps`` per level.
    """
    scheduler = AnnealedLangevinDynamicsScheduler(**scheduler_config)
    scheduler.set_timesteps(min(num_inference_steps, scheduler.num_train_timesteps))
    timesteps, _, step_size = scheduler.schedule_arrays()
    seeds = seeds_for_batch(seed, batch_size)
    return {
        "sample": initial_sample(seeds, tuple(sample_shape), float(init_range[0]), float(init_range[1])),
        "seed": seeds,
        "timesteps": timesteps,
        "step_sizes": step_size,
        "num_annealed_steps": np.array(num_annealed_steps, dtype=np.int64),
    }


def ort_session(path: str | Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """CPU session at ``ORT_ENABLE_ALL`` (fails loudly if onnxruntime cannot load or optimise the graph)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3  # errors only
    # Spinning intra-op threads fight other processes for cores and make timings swing (bench/bench_loop.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(function: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = function()
    return np.asarray(result), time.perf_counter() - start


def _diff(result: np.ndarray, reference: np.ndarray) -> float:
    if result.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(result.astype(np.float64) - reference.astype(np.float64)))) if result.size else 0.0


def run_step_loop(step: ort.InferenceSession, score: ort.InferenceSession | None, inputs: dict[str, np.ndarray],
                  sigma_last: float | None) -> np.ndarray:
    """The per-step path: ``step.onnx`` once per Langevin step (counter ``i*T + t``), then the optional denoise."""
    x = inputs["sample"]
    num_steps = int(inputs["num_annealed_steps"])
    for position, (level, alpha) in enumerate(zip(inputs["timesteps"], inputs["step_sizes"], strict=True)):
        for t in range(num_steps):
            feed = {"sample": x, "seed": inputs["seed"], "timestep": np.asarray(level, dtype=np.int64),
                    "step_size": np.asarray(alpha, dtype=np.float32),
                    "counter": np.asarray(langevin_counter(position, t, num_steps), dtype=np.int64)}
            x = step.run(None, feed)[0]
    if sigma_last is not None and score is not None:
        levels = np.full(len(x), inputs["timesteps"][-1], dtype=np.int64)
        x = denoise_update(x, score.run(None, {"sample": x, "timestep": levels})[0], np.float32(sigma_last) ** 2)
    return x


def validate_export(
    directory: str | Path,
    sampler: AnnealedLangevinSampler,
    inputs: dict[str, np.ndarray],
    tolerance: float = FP32_TOLERANCE,
    relative: bool = False,
    artifacts: Sequence[str] = ("sampler.onnx", "step.onnx", "score.onnx", "sampler.pt", "sampler.pt2"),
) -> list[ValidationResult]:
    """Compare each artifact in ``directory`` with the eager ``sampler`` on ``inputs``.

    ``relative``: scale the tolerance by ``max(1, max|reference|)`` per artifact (used for fp16).
    """
    directory = Path(directory)
    torch_inputs = [torch.from_numpy(np.array(inputs[name])) for name in SAMPLER_INPUTS]
    with torch.no_grad():
        reference, _ = _timed(lambda: sampler(*torch_inputs).numpy())
    results: list[ValidationResult] = []

    def add(artifact: str, reference: str, run: Callable[[], np.ndarray], expected: np.ndarray, scaled: bool = False) -> None:
        result, seconds = _timed(run)
        size = (directory / artifact).stat().st_size
        scale = max(1.0, float(np.max(np.abs(expected)))) if (relative or scaled) and expected.size else 1.0
        results.append(ValidationResult(artifact, reference, _diff(result, expected), tolerance, round(seconds, 4), size,
                                        round(scale, 4)))

    sessions = {name: ort_session(directory / name) for name in artifacts if name.endswith(".onnx")}
    loop = f"torch eager loop {len(inputs['timesteps'])}x{int(inputs['num_annealed_steps'])}, B={len(inputs['seed'])}"
    if "sampler.onnx" in sessions:
        add("sampler.onnx", loop, lambda: sessions["sampler.onnx"].run(None, dict(inputs))[0], reference)
    if "step.onnx" in sessions:
        sigma_last = None
        if sampler.final_denoise:
            sigma_last = float(sampler.train_sigmas[int(inputs["timesteps"][-1])])
        add("step.onnx", loop + " (per-step)",
            lambda: run_step_loop(sessions["step.onnx"], sessions.get("score.onnx"), inputs, sigma_last), reference)
    if "score.onnx" in sessions:
        x = inputs["sample"]
        levels = [np.full(len(x), level, dtype=np.int64) for level in inputs["timesteps"]]
        with torch.no_grad():
            expected = np.stack([sampler.score_model(torch.from_numpy(x), torch.from_numpy(lv)).numpy() for lv in levels])
        add("score.onnx", f"torch score at {len(levels)} levels",
            lambda: np.stack([sessions["score.onnx"].run(None, {"sample": x, "timestep": lv})[0] for lv in levels]), expected,
            scaled=True)
    if "sampler.pt" in artifacts:
        scripted = torch.jit.load(str(directory / "sampler.pt"))
        with torch.jit.optimized_execution(False):  # the profiling executor's warm-up passes cost ~30 s on a RefineNet
            add("sampler.pt", loop, lambda: _run_torch(scripted, torch_inputs), reference)
    if "sampler.pt2" in artifacts:
        program = load_pt2(directory / "sampler.pt2")
        add("sampler.pt2", loop, lambda: _run_torch(program, torch_inputs), reference)
    return results


def _run_torch(module: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        return module(*inputs).numpy()


def format_table(results: Sequence[ValidationResult]) -> str:
    """A plain-text table: artifact, size, max abs diff, tolerance, time, verdict."""
    header = f"{'artifact':<13} {'size':>10} {'max abs diff':>13} {'allowed':>10} {'time s':>8}  {'result':<6} reference"
    lines = [header, "-" * len(header)]
    for row in results:
        size = f"{row.bytes / 1024:.1f} KiB" if row.bytes < 1 << 20 else f"{row.bytes / (1 << 20):.2f} MiB"
        verdict = "ok" if row.passed else "FAIL"
        allowed = row.tolerance * row.scale
        lines.append(f"{row.artifact:<13} {size:>10} {row.max_abs_diff:>13.3e} {allowed:>10.1e} {row.seconds:>8.3f}  "
                     f"{verdict:<6} {row.reference}")
    return "\n".join(lines)
