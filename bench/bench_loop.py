"""CPU speed of the fused loop: composed ``sampler.onnx`` vs N*T bare ``score.onnx`` calls vs torch eager (not a test).

For each model (built-in name, e.g. ``toy-gmm``, ``mnist``): the network is traced once
(``score.onnx``), the graph family is composed from it (:func:`ncsn_export.exporters.compose.compose_graphs`),
and at one batch size, one intra-op thread, the model's own schedule (all trained levels x
``num_annealed_steps``, final denoise as the model ships) these run side by side, interleaved round robin:

* ``fused sampler.onnx``: the composed loop (noise of a level drawn in one pass, ``Elu`` rewritten);
* ``fused, traced Elu``: the same composed loop without the ``Elu`` rewrite;
* ``fused, before``: an older ``sampler.onnx`` from ``--before-dir DIR/before-<model>/sampler.onnx`` (e.g. the
  torch-traced loop of the previous exporter), when given;
* ``gpu_sampler.onnx``: the arithmetic-noise loop, on CPU (for reference);
* ``N*T score.onnx calls``: the bare network called from Python once per step (the floor), shipped
  (rewritten) and traced ``Elu``;
* ``torch eager``: :class:`ncsn_export.sampler.AnnealedLangevinSampler`;
* ``Elu kernel`` vs ``rewritten``: one activation tensor of the network's size, alone.

Targets (issue 10): fused <= 1.5x N*T score calls (toy-gmm), <= 1.05x (mnist), fused <= 0.5x torch eager.
Ratios are of median process CPU times (one thread: the work done, robust on a shared machine);
wall-time ratios are printed and saved next to them.

Run::

    .venv/bin/python bench/bench_loop.py --model toy-gmm --model mnist --batch 16 --repeats 5 [--before-dir /tmp/before]

Results are printed and saved to ``bench/results/bench_loop-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from ncsn_runtime.noise import initial_sample, seeds_for_batch
from ncsn_runtime.schedule import geometric_sigmas, spanning_timesteps, step_sizes
from onnx import TensorProto, helper

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.onnx_export import export_score_onnx
from ncsn_export.models.registry import load_model
from ncsn_export.sampler import AnnealedLangevinSampler

RESULTS = Path(__file__).resolve().parent / "results"


def save_stamped_result(name: str, script: str, payload: dict) -> Path:
    """Write ``payload`` (plus the command line and the machine) to ``bench/results/<name>-<UTC stamp>.json``.

    Atomic (temp file + rename, ``ncsn_runtime.fileio.write_json_atomic``), so an interrupted bench leaves no
    half-written result.
    """
    from ncsn_runtime.fileio import write_json_atomic

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    header = {"command": " ".join([f"bench/{script}", *sys.argv[1:]]), "cpu_count": os.cpu_count(),
              "platform": platform.platform(), "onnxruntime": ort.__version__, "torch": torch.__version__}
    return write_json_atomic(RESULTS / f"{name}-{stamp}.json", {**header, **payload}, sort_keys=False)


def session(model: onnx.ModelProto | Path, threads: int, config: dict[str, str] | None = None) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads, no spinning; ``config``: extra session config entries."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def timed_round_robin(configurations: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Wall and process-CPU time of ``repeats`` interleaved runs of each configuration, after one warm-up run each.

    With one intra-op thread everything runs on the calling thread, so the process CPU time is the work
    done, and far less sensitive than wall time to other processes on a shared machine.
    """
    for function in configurations.values():
        function()
    wall: dict[str, list[float]] = {label: [] for label in configurations}
    cpu: dict[str, list[float]] = {label: [] for label in configurations}
    for _ in range(repeats):
        for label, function in configurations.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            cpu[label].append(time.process_time() - start_cpu)
            wall[label].append(time.perf_counter() - start)
    return {label: {"cpu_median_ms": 1e3 * statistics.median(cpu[label]), "cpu_min_ms": 1e3 * min(cpu[label]),
                    "median_ms": 1e3 * statistics.median(wall[label]), "min_ms": 1e3 * min(wall[label]),
                    "spread": max(wall[label]) / min(wall[label])} for label in configurations}


def elu_models(shape: list[int]) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(Elu, rewritten Elu) on one float32 tensor of ``shape``."""
    from ncsn_export.exporters.graph_passes import rewrite_elu

    graph = helper.make_graph([helper.make_node("Elu", ["x"], ["y"])], "elu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return model, rewrite_elu(model)[0]


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    spec = load_model(name)
    config = spec.scheduler_config
    shape = tuple(spec.sample_shape)
    num_levels = int(config["num_train_timesteps"]) if args.levels is None else args.levels
    num_steps = int(config["num_annealed_steps"]) if args.steps is None else args.steps
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], int(config["num_train_timesteps"]))
    start = time.perf_counter()
    export_score_onnx(spec.model, shape, workdir / f"{name}-score.onnx", 18)
    trace_s = time.perf_counter() - start
    traced = onnx.load(str(workdir / f"{name}-score.onnx"))
    start = time.perf_counter()
    graphs = compose_graphs(traced, shape, sigmas, spec.final_denoise)
    compose_s = time.perf_counter() - start
    plain = compose_graphs(traced, shape, sigmas, spec.final_denoise, keys=("sampler",), fast_elu=False)["sampler"]

    seeds = seeds_for_batch(0, args.batch)
    timesteps = spanning_timesteps(num_levels, len(sigmas))
    feed = {"sample": initial_sample(seeds, shape, *spec.init_range), "seed": seeds, "timesteps": timesteps,
            "step_sizes": step_sizes(sigmas[timesteps], config["sampling_eps"]),
            "num_annealed_steps": np.array(num_steps, dtype=np.int64)}
    calls = [np.full(args.batch, level, dtype=np.int64) for level in timesteps for _ in range(num_steps)]
    calls += [calls[-1]] if spec.final_denoise else []  # the denoising step is one more network call
    threads = args.threads
    fused, fused_plain = session(graphs["sampler"], threads), session(plain, threads)
    gpu_fused = session(graphs["gpu_sampler"], threads)
    score, score_traced = session(graphs["score"], threads), session(traced, threads)

    def score_calls(score_session: ort.InferenceSession) -> None:
        for timestep in calls:
            score_session.run(None, {"sample": feed["sample"], "timestep": timestep})

    eager_sampler = AnnealedLangevinSampler(spec.model, torch.from_numpy(sigmas), spec.final_denoise).eval()
    torch_args = [torch.from_numpy(np.asarray(value)) for value in feed.values()]
    torch.set_num_threads(threads)

    def eager() -> None:
        with torch.no_grad():
            eager_sampler(*torch_args)

    configurations: dict[str, Callable[[], object]] = {
        "fused sampler.onnx": lambda: fused.run(None, feed),
        "fused, traced Elu": lambda: fused_plain.run(None, feed),
    }
    before_path = None if args.before_dir is None else args.before_dir / f"before-{name}" / "sampler.onnx"
    if before_path is not None and before_path.exists():
        before = session(before_path, threads)
        configurations["fused, before (--before-dir)"] = lambda: before.run(None, feed)
    configurations.update({
        "gpu_sampler.onnx (on CPU)": lambda: gpu_fused.run(None, feed),
        "N*T score.onnx calls": lambda: score_calls(score),
        "N*T score.onnx calls, traced Elu": lambda: score_calls(score_traced),
        "torch eager sampler": eager,
    })
    rows = timed_round_robin(configurations, args.repeats)
    elu, rewritten = (session(model, threads) for model in elu_models([args.batch, 64, *shape[1:]] if len(shape) == 3
                                                                       else [args.batch, 64]))
    activation = {"x": np.random.default_rng(0).standard_normal([args.batch, 64, *shape[1:]] if len(shape) == 3
                                                                  else [args.batch, 64]).astype(np.float32)}
    rows.update(timed_round_robin({"Elu kernel x100": lambda: [elu.run(None, activation) for _ in range(100)],
                                   "rewritten Elu x100": lambda: [rewritten.run(None, activation) for _ in range(100)]},
                                  args.repeats))
    def ratio(numerator: str, denominator: str, key: str = "cpu_median_ms") -> float:
        return rows[numerator][key] / rows[denominator][key]

    pairs = {
        "fused / N*T score calls": ("fused sampler.onnx", "N*T score.onnx calls"),
        "fused / N*T score calls (traced Elu)": ("fused sampler.onnx", "N*T score.onnx calls, traced Elu"),
        "fused / torch eager": ("fused sampler.onnx", "torch eager sampler"),
        "fused traced Elu / fused": ("fused, traced Elu", "fused sampler.onnx"),
        "Elu kernel / rewritten": ("Elu kernel x100", "rewritten Elu x100"),
    }
    if "fused, before (--before-dir)" in rows:
        pairs["fused before / fused"] = ("fused, before (--before-dir)", "fused sampler.onnx")
        pairs["fused before / N*T score calls (traced Elu)"] = ("fused, before (--before-dir)",
                                                               "N*T score.onnx calls, traced Elu")
    ratios = {label: ratio(*pair) for label, pair in pairs.items()}
    wall_ratios = {label: ratio(*pair, key="median_ms") for label, pair in pairs.items()}
    return {"model": name, "sample_shape": list(shape), "levels": num_levels, "steps": num_steps, "batch": args.batch,
            "final_denoise": spec.final_denoise, "threads": threads, "trace_seconds": round(trace_s, 2),
            "compose_seconds": round(compose_s, 2), "timings": rows, "ratios": ratios, "wall_ratios": wall_ratios}


def print_result(result: dict) -> None:
    print(f"\n{result['model']}: sample {result['sample_shape']}, batch {result['batch']}, {result['levels']}x{result['steps']} "
          f"steps{' + denoise' if result['final_denoise'] else ''}, {result['threads']} thread(s); "
          f"trace {result['trace_seconds']} s, compose {result['compose_seconds']} s")
    print(f"  {'configuration':<40} {'cpu median ms':>14} {'cpu min ms':>11} {'wall median ms':>15} {'wall max/min':>13}")
    for label, row in result["timings"].items():
        print(f"  {label:<40} {row['cpu_median_ms']:>14.2f} {row['cpu_min_ms']:>11.2f} {row['median_ms']:>15.2f} "
              f"{row['spread']:>13.2f}")
    print(f"  {'ratio':<48} {'cpu':>7} {'wall':>7}")
    for label, value in result["ratios"].items():
        print(f"  {label:<48} {value:>6.2f}x {result['wall_ratios'][label]:>6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="built-in model name (repeatable; default: toy-gmm and mnist)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--levels", type=int, default=None, help="N levels (default: all trained levels)")
    parser.add_argument("--steps", type=int, default=None, help="T steps per level (default: the model's num_annealed_steps)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of onnxruntime and torch (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration, interleaved (default 5)")
    parser.add_argument("--before-dir", type=Path, default=None, help="DIR with before-<model>/sampler.onnx to time alongside")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.model or ["toy-gmm", "mnist"]:
            results.append(bench_model(name, args, Path(workdir)))
            print_result(results[-1])
    path = save_stamped_result("bench_loop", "bench_loop.py", {"results": results})
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
