"""Benchmark the exporters and the fused sampler graph (not part of the test suite).

What it measures, for the toy mixture score and for a small convolutional score network (3 convs,
level embedding, instance norm, 1x28x28 like MNIST), at the same network, schedule (N levels x T
steps) and batch:

* export time of score.onnx, step.onnx, sampler.onnx;
* ``fused``: one ``sampler.onnx`` run (the ONNX Loop) on onnxruntime CPU;
* ``per-step``: ``step.onnx`` called N*T times from Python (what a host without Loop support does);
* ``torch eager``: the eager :class:`AnnealedLangevinSampler` (a Python loop over the step);
* ``N*T score``: N*T bare ``score.onnx`` calls from Python, the floor the fused loop is compared to;
* ``loop only``: ``sampler.onnx`` of a zero-work score network (noise + update + Loop machinery);
* ``before fixes``: ``sampler.onnx`` exported without the lean shift lowering and with the weights
  left as outer-scope values of the Loop (see :mod:`ncsn_export.exporters.onnx_export`).

and the onnxruntime session settings behind the run-to-run variance: intra-op threads (1 vs the
default, one per core), thread spinning, and the graph optimisation level. Every configuration is
timed ``--repeats`` times, interleaved round robin with the others; the table gives the median, min and max/min spread.

Run (a few seconds per model on 2 cores)::

    .venv/bin/python bench/bench_export.py                      # both models, 10x20 steps, batch 8
    .venv/bin/python bench/bench_export.py --models conv --levels 10 --steps 20 --batch 8 --repeats 5
    ncsn-export --output /tmp/mnist && .venv/bin/python bench/bench_export.py --models --export-dir /tmp/mnist \
        --levels 5 --steps 4 --batch 8                          # the default RefineNet, from its export directory

Results are printed and saved to ``bench/results/bench_export-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from ncsn_runtime.config import load_scheduler_config
from ncsn_runtime.fileio import write_json_atomic
from ncsn_runtime.manifest import load_manifest
from ncsn_runtime.noise import initial_sample, langevin_counter, seeds_for_batch
from ncsn_runtime.schedule import geometric_sigmas, spanning_timesteps
from torch import nn

from ncsn_export.exporters.onnx_export import (
    SAMPLER_INPUTS,
    SAMPLER_OUTPUTS,
    batch_shapes,
    example_inputs,
    export_onnx,
    export_sampler_onnx,
    export_score_onnx,
    export_step_onnx,
)
from ncsn_export.exporters.validate import validation_inputs
from ncsn_export.models.gmm import toy_gmm_spec
from ncsn_export.models.registry import load_model
from ncsn_export.sampler import AnnealedLangevinSampler

RESULTS = Path(__file__).resolve().parent / "results"


class SmallConvScore(nn.Module):
    """The issue's probe network: 3 convs + level embedding + instance norm, ``score / sigma``."""

    def __init__(self, channels: int = 1, width: int = 32, num_levels: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = nn.InstanceNorm2d(width, affine=True)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.embedding = nn.Embedding(num_levels, width)
        self.register_buffer("sigmas", torch.from_numpy(geometric_sigmas(1.0, 0.01, num_levels)))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(sample) + self.embedding(timestep)[:, :, None, None]
        h = self.conv_mid(nn.functional.elu(self.norm(h)))
        sigma = torch.index_select(self.sigmas, 0, timestep).reshape(-1, 1, 1, 1)
        return self.conv_out(nn.functional.elu(h)) / sigma


class ZeroScore(nn.Module):
    """A score network that does (almost) nothing: isolates the loop, noise and update."""

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return sample * 0.0


def session(path: Path, threads: int = 1, spinning: bool = False,
            level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed_round_robin(configurations: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Time every configuration ``repeats`` times, interleaved (round robin), after one warm-up call each.

    Interleaving spreads the load of a shared machine over all configurations instead of biasing
    whichever happened to run during a busy second.
    """
    for function in configurations.values():
        function()
    times: dict[str, list[float]] = {label: [] for label in configurations}
    for _ in range(repeats):
        for label, function in configurations.items():
            start = time.perf_counter()
            function()
            times[label].append(time.perf_counter() - start)
    return {label: {"median_ms": 1e3 * statistics.median(values), "min_ms": 1e3 * min(values),
                    "spread": max(values) / min(values)} for label, values in times.items()}


def bench_model(name: str, model: nn.Module, shape: tuple[int, ...], args: argparse.Namespace, workdir: Path) -> dict:
    num_levels, num_steps, batch = args.levels, args.steps, args.batch
    train_sigmas = torch.from_numpy(geometric_sigmas(20.0 if name == "toy" else 1.0, 1.0 if name == "toy" else 0.01, 10))
    sampler = AnnealedLangevinSampler(model, train_sigmas).eval()
    null_sampler = AnnealedLangevinSampler(ZeroScore(), train_sigmas).eval()
    paths = {key: workdir / f"{name}-{key}.onnx" for key in ("score", "step", "sampler", "sampler-plain", "loop-only")}
    plain_shapes = batch_shapes(SAMPLER_INPUTS, batched=("sample", "seed"), levels=("timesteps", "step_sizes"))
    example = example_inputs(shape)
    export_seconds = {}
    for key, export in (
        ("score", lambda: export_score_onnx(model, shape, paths["score"], 18, True)),
        ("step", lambda: export_step_onnx(model, shape, paths["step"], 18, True)),
        ("sampler", lambda: export_sampler_onnx(sampler, shape, paths["sampler"], 18, True)),
        # before the two fixes: the exporter's signed-shift lowering, weights as outer-scope values of the Loop
        ("sampler-plain", lambda: export_onnx(sampler, tuple(example[k] for k in SAMPLER_INPUTS), paths["sampler-plain"],
                                              SAMPLER_INPUTS, SAMPLER_OUTPUTS, plain_shapes, 18, lean_shift=False,
                                              loop_weights_inside=False)),
        ("loop-only", lambda: export_sampler_onnx(null_sampler, shape, paths["loop-only"], 18, True)),
    ):
        start = time.perf_counter()
        export()
        export_seconds[key] = round(time.perf_counter() - start, 2)

    seeds = seeds_for_batch(0, batch)
    levels = spanning_timesteps(num_levels, 10)
    alphas = np.full(num_levels, 1e-4, dtype=np.float32)
    feed = {"sample": initial_sample(seeds, shape), "seed": seeds, "timesteps": levels, "step_sizes": alphas,
            "num_annealed_steps": np.array(num_steps, dtype=np.int64)}
    torch_args = [torch.from_numpy(np.array(value)) for value in feed.values()]

    def per_step(step: ort.InferenceSession) -> np.ndarray:
        x = feed["sample"]
        for position, level in enumerate(levels):
            for t in range(num_steps):
                x = step.run(None, {"sample": x, "seed": seeds, "timestep": np.asarray(level),
                                    "step_size": np.asarray(alphas[position]),
                                    "counter": np.asarray(langevin_counter(position, t, num_steps))})[0]
        return x

    def score_calls(score: ort.InferenceSession) -> None:
        x = feed["sample"]
        for level in levels:
            timestep = np.full(batch, level, dtype=np.int64)
            for _ in range(num_steps):
                score.run(None, {"sample": x, "timestep": timestep})

    def eager() -> None:
        with torch.no_grad():
            sampler(*torch_args)

    torch.set_num_threads(1)
    one, default = {"threads": 1, "spinning": False}, {"threads": 0, "spinning": True}  # 0: one thread per core
    fused, score, step = session(paths["sampler"], **one), session(paths["score"], **one), session(paths["step"], **one)
    fused_default, score_default = session(paths["sampler"], **default), session(paths["score"], **default)
    plain = session(paths["sampler-plain"], **one)
    loop_only = session(paths["loop-only"], **one)
    fused_basic = session(paths["sampler"], **one, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    fused_disabled = session(paths["sampler"], **one, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    rows = timed_round_robin({
        "fused sampler.onnx (1 thread)": lambda: fused.run(None, feed),
        "N*T score.onnx calls (1 thread)": lambda: score_calls(score),
        "per-step step.onnx loop (1 thread)": lambda: per_step(step),
        "torch eager sampler (1 thread)": eager,
        "loop only: zero score (1 thread)": lambda: loop_only.run(None, feed),
        "fused, before fixes (1 thread)": lambda: plain.run(None, feed),
        "fused (1 thread, opt basic)": lambda: fused_basic.run(None, feed),
        "fused (1 thread, opt disabled)": lambda: fused_disabled.run(None, feed),
        "fused (default threads + spinning)": lambda: fused_default.run(None, feed),
        "N*T score.onnx calls (default threads + spinning)": lambda: score_calls(score_default),
    }, args.repeats)

    fused_ms = rows["fused sampler.onnx (1 thread)"]["median_ms"]
    ratios = {
        "fused / N*T score calls": fused_ms / rows["N*T score.onnx calls (1 thread)"]["median_ms"],
        "fused / torch eager": fused_ms / rows["torch eager sampler (1 thread)"]["median_ms"],
        "fused / per-step": fused_ms / rows["per-step step.onnx loop (1 thread)"]["median_ms"],
        "loop-only / fused": rows["loop only: zero score (1 thread)"]["median_ms"] / fused_ms,
        "(N*T score + loop-only) / fused": (rows["N*T score.onnx calls (1 thread)"]["median_ms"]
                                            + rows["loop only: zero score (1 thread)"]["median_ms"]) / fused_ms,
        "fused before fixes / fused": rows["fused, before fixes (1 thread)"]["median_ms"] / fused_ms,
    }
    return {"model": name, "sample_shape": list(shape), "levels": num_levels, "steps": num_steps, "batch": batch,
            "export_seconds": export_seconds, "timings": rows, "ratios": ratios}


def bench_export_dir(directory: Path, args: argparse.Namespace) -> dict:
    """Time an existing export directory (e.g. the default RefineNet): fused vs per-step vs N*T score calls vs eager."""
    manifest = load_manifest(directory)
    model_info = manifest["model"]
    shape = tuple(model_info["sample_shape"])
    config = load_scheduler_config(directory / manifest["scheduler_config"])
    feed = validation_inputs(config, shape, model_info["init_range"], args.batch, args.levels, args.steps)
    num_steps, final_denoise = args.steps, bool(model_info["final_denoise"])
    fused, score, step = (session(directory / name) for name in ("sampler.onnx", "score.onnx", "step.onnx"))
    calls = [np.full(args.batch, level, dtype=np.int64) for level in feed["timesteps"] for _ in range(num_steps)]
    calls += [calls[-1]] if final_denoise else []  # the denoising step is one more network call

    def score_calls() -> None:
        for timestep in calls:
            score.run(None, {"sample": feed["sample"], "timestep": timestep})

    def per_step() -> None:
        x = feed["sample"]
        for position, (level, alpha) in enumerate(zip(feed["timesteps"], feed["step_sizes"], strict=True)):
            for t in range(num_steps):
                counter = np.asarray(langevin_counter(position, t, num_steps))
                x = step.run(None, {"sample": x, "seed": feed["seed"], "timestep": np.asarray(level),
                                    "step_size": np.asarray(alpha), "counter": counter})[0]

    configurations: dict[str, Callable[[], object]] = {
        "fused sampler.onnx (1 thread)": lambda: fused.run(None, feed),
        "N*T score.onnx calls (1 thread)": score_calls,
        "per-step step.onnx loop (1 thread)": per_step,
    }
    try:
        spec = load_model(model_info["name"])
        train_sigmas = torch.from_numpy(geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"]))
        sampler = AnnealedLangevinSampler(spec.model, train_sigmas, final_denoise).eval()
        torch_args = [torch.from_numpy(np.array(feed[name])) for name in SAMPLER_INPUTS]
        torch.set_num_threads(1)

        def eager() -> None:
            with torch.no_grad():
                sampler(*torch_args)

        configurations["torch eager sampler (1 thread)"] = eager
    except Exception as error:  # a model we cannot rebuild here: skip the eager row
        print(f"(no torch eager row for {model_info['name']!r}: {error})")
    rows = timed_round_robin(configurations, args.repeats)
    fused_ms = rows["fused sampler.onnx (1 thread)"]["median_ms"]
    ratios = {"fused / N*T score calls": fused_ms / rows["N*T score.onnx calls (1 thread)"]["median_ms"],
              "fused / per-step": fused_ms / rows["per-step step.onnx loop (1 thread)"]["median_ms"]}
    if "torch eager sampler (1 thread)" in rows:
        ratios["fused / torch eager"] = fused_ms / rows["torch eager sampler (1 thread)"]["median_ms"]
    return {"model": f"{model_info['name']} ({directory})", "sample_shape": list(shape), "levels": len(feed["timesteps"]),
            "steps": num_steps, "batch": args.batch, "export_seconds": manifest.get("export_seconds", {}), "timings": rows,
            "ratios": ratios}


def print_result(result: dict) -> None:
    print(f"\n{result['model']}: sample {result['sample_shape']}, batch {result['batch']}, "
          f"{result['levels']}x{result['steps']} steps; export s: {result['export_seconds']}")
    print(f"  {'configuration':<48} {'median ms':>10} {'min ms':>9} {'max/min':>8}")
    for label, row in result["timings"].items():
        print(f"  {label:<48} {row['median_ms']:>10.2f} {row['min_ms']:>9.2f} {row['spread']:>8.2f}")
    for label, value in result["ratios"].items():
        print(f"  {label:<48} {value:>10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["toy", "conv"], choices=["toy", "conv"])
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="also time an existing export directory (e.g. `ncsn-export --output DIR` of the default model)")
    parser.add_argument("--levels", type=int, default=10, help="N noise levels (default 10)")
    parser.add_argument("--steps", type=int, default=20, help="T steps per level (default 20)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration, interleaved (default 3)")
    args = parser.parse_args()
    models = {"toy": (toy_gmm_spec().model, (2,)), "conv": (SmallConvScore().eval(), (1, 28, 28))}
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            model, shape = models[name]
            results.append(bench_model(name, model, shape, args, Path(workdir)))
            print_result(results[-1])
    if args.export_dir is not None:
        results.append(bench_export_dir(args.export_dir, args))
        print_result(results[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload = {"command": "bench/bench_export.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
               "cpu_count": os.cpu_count(), "platform": platform.platform(), "onnxruntime": ort.__version__,
               "torch": torch.__version__, "results": results}
    path = RESULTS / f"bench_export-{stamp}.json"
    write_json_atomic(path, payload, sort_keys=False)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
