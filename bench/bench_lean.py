"""The lean network graph vs today's (not a test): node counts per graph, exactness, fused sampler CPU time.

The network is traced once (``score.onnx``); the graph family is composed from that one trace twice,
side by side in one run: ``raw`` (``compose_graphs(..., lean=False)``, today's graphs) and ``lean``
(the default, :func:`ncsn_export.exporters.lean_graph.lean_graph` applied first). Then:

* node counts of every graph (nested Loop bodies counted) and the op histogram of ``score``;
* max |lean - raw| and max |lean - torch eager| of ``score`` at batches 1, 5, 16 (random levels);
* the fused ``sampler.onnx`` (all trained levels x ``num_annealed_steps`` unless given), one intra-op thread,
  raw vs lean vs the torch eager sampler, interleaved round robin (``bench_loop.timed_round_robin``).

* with ``--webgpu EXPORT_DIR`` (an export of the same model): examples/web in headless Chromium on its SwiftShader
  WebGPU adapter, ``gpu_step.onnx`` for ``--webgpu-levels`` levels, raw vs lean (each written with its weights
  inline into a copy of EXPORT_DIR, the manifest's hash updated), alternating, ``--webgpu-repeats`` page loads
  each; the page's own sampling time (``result.seconds``, session creation excluded) is compared.

* with ``--denormals-as-zero``: the lean sampler once more, its session flushing denormals to zero.

Target (issue 17): ``score.onnx`` of the default model <= 1100 nodes; lean sampler <= 0.85x raw at B=16, 1 thread.
Measured (shared 2-core machine; ``bench/results/bench_lean-mnist-20261203T150310Z.json``, ``--repeats 3
--traced``): score 2104 -> 1071 nodes, sampler step body 800 nodes; lean / raw sampler CPU 0.885x, lean / torch
eager 0.361x (raw 0.408x). Before (``-20261203T131835Z.json``): 1073 nodes, 0.893x. ``--denormals-as-zero``
(``-20261203T145431Z.json``): the same samples bit for bit, 1.009x the lean time. The floor is about 0.88x
(``ncsn_export/exporters/lean_graph.py``, ``bench/profile_lean.py``). WebGPU (``-20261203T131028Z.json``,
``--levels 1 --repeats 1 --webgpu EXPORT --webgpu-repeats 1``): SwiftShader, 1 level x 10 steps + denoise,
4 samples, one page load each: raw 207.2 s, lean 178.6 s (0.862x); an earlier raw load took 269.4 s, so the
spread between loads is of the size of the gain.

Run::

    .venv/bin/python bench/bench_lean.py --model mnist --batch 16 --repeats 5 [--denormals-as-zero]
    .venv/bin/python bench/bench_lean.py --traced T.onnx --no-eager --repeats 3 --webgpu EXPORT --webgpu-count 4

Results are printed and saved to ``bench/results/bench_lean-<model>-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from ncsn_runtime.noise import initial_sample, seeds_for_batch
from ncsn_runtime.schedule import geometric_sigmas, spanning_timesteps, step_sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loop import save_stamped_result, session, timed_round_robin

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.onnx_export import count_nodes, export_score_onnx
from ncsn_export.models.registry import load_model
from ncsn_export.sampler import AnnealedLangevinSampler


def score_errors(spec, raw: onnx.ModelProto, lean: onnx.ModelProto, num_levels: int) -> list[dict]:
    """max |lean - raw| and |lean - eager|, |raw - eager| (relative to max |eager|) at a few batch sizes."""
    raw_session, lean_session = session(raw, 1), session(lean, 1)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (1, 5, 16):
        sample = rng.standard_normal((batch, *spec.sample_shape)).astype(np.float32)
        levels = rng.integers(0, num_levels, batch).astype(np.int64)
        feed = {"sample": sample, "timestep": levels}
        got_raw, got_lean = raw_session.run(None, feed)[0], lean_session.run(None, feed)[0]
        with torch.no_grad():
            eager = spec.model(torch.from_numpy(sample), torch.from_numpy(levels)).numpy()
        scale = float(np.abs(eager).max())
        rows.append({"batch": batch, "max_abs_eager": scale,
                     "lean_vs_raw": float(np.abs(got_lean - got_raw).max()) / scale,
                     "lean_vs_eager": float(np.abs(got_lean - eager).max()) / scale,
                     "raw_vs_eager": float(np.abs(got_raw - eager).max()) / scale})
    return rows


def bench_model(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    spec = load_model(name)
    config = spec.scheduler_config
    shape = tuple(spec.sample_shape)
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], int(config["num_train_timesteps"]))
    num_levels = len(sigmas) if args.levels is None else args.levels
    num_steps = int(config["num_annealed_steps"]) if args.steps is None else args.steps
    start = time.perf_counter()
    if args.traced is None:
        export_score_onnx(spec.model, shape, workdir / f"{name}-score.onnx", 18)
    trace_s = time.perf_counter() - start
    traced = onnx.load(str(args.traced or workdir / f"{name}-score.onnx"))
    start = time.perf_counter()
    raw = compose_graphs(traced, shape, sigmas, spec.final_denoise, lean=False)
    raw_s = time.perf_counter() - start
    start = time.perf_counter()
    lean = compose_graphs(traced, shape, sigmas, spec.final_denoise)
    lean_s = time.perf_counter() - start
    nodes = {key: {"raw": count_nodes(raw[key].graph), "lean": count_nodes(lean[key].graph)} for key in raw}
    ops = {label: dict(collections.Counter(node.op_type for node in graphs["score"].graph.node).most_common())
           for label, graphs in (("raw", raw), ("lean", lean))}
    errors = score_errors(spec, raw["score"], lean["score"], len(sigmas))

    seeds = seeds_for_batch(0, args.batch)
    timesteps = spanning_timesteps(num_levels, len(sigmas))
    feed = {"sample": initial_sample(seeds, shape, *spec.init_range), "seed": seeds, "timesteps": timesteps,
            "step_sizes": step_sizes(sigmas[timesteps], config["sampling_eps"]),
            "num_annealed_steps": np.array(num_steps, dtype=np.int64)}
    raw_sampler, lean_sampler = session(raw["sampler"], args.threads), session(lean["sampler"], args.threads)
    same = float(np.abs(raw_sampler.run(None, feed)[0] - lean_sampler.run(None, feed)[0]).max())
    eager_sampler = AnnealedLangevinSampler(spec.model, torch.from_numpy(sigmas), spec.final_denoise).eval()
    torch_args = [torch.from_numpy(np.asarray(value)) for value in feed.values()]
    torch.set_num_threads(args.threads)

    def eager() -> None:
        with torch.no_grad():
            eager_sampler(*torch_args)

    configurations = {"raw sampler.onnx (today)": lambda: raw_sampler.run(None, feed),
                      "lean sampler.onnx": lambda: lean_sampler.run(None, feed)}
    if args.denormals_as_zero:  # the same lean graph, its session flushing denormals to zero
        ftz_sampler = session(lean["sampler"], args.threads, {"session.set_denormal_as_zero": "1"})
        same_ftz = float(np.abs(ftz_sampler.run(None, feed)[0] - lean_sampler.run(None, feed)[0]).max())
        configurations["lean, denormals as zero"] = lambda: ftz_sampler.run(None, feed)
    if not args.no_eager:
        configurations["torch eager sampler"] = eager
    timings = timed_round_robin(configurations, args.repeats)
    ratios = {"lean / raw": timings["lean sampler.onnx"]["cpu_median_ms"] / timings["raw sampler.onnx (today)"]["cpu_median_ms"]}
    wall = {"lean / raw": timings["lean sampler.onnx"]["median_ms"] / timings["raw sampler.onnx (today)"]["median_ms"]}
    if "lean, denormals as zero" in timings:
        for table, key in ((ratios, "cpu_median_ms"), (wall, "median_ms")):
            table["lean ftz / lean"] = timings["lean, denormals as zero"][key] / timings["lean sampler.onnx"][key]
    if "torch eager sampler" in timings:
        for label in ("raw sampler.onnx (today)", "lean sampler.onnx"):
            key = f"{label.split()[0]} / torch eager"
            ratios[key] = timings[label]["cpu_median_ms"] / timings["torch eager sampler"]["cpu_median_ms"]
            wall[key] = timings[label]["median_ms"] / timings["torch eager sampler"]["median_ms"]
    webgpu = None
    if args.webgpu is not None:
        inline = {label: compose_graphs(traced, shape, sigmas, spec.final_denoise, keys=("gpu_step",), lean=label == "lean")
                  ["gpu_step"] for label in ("raw", "lean")}
        webgpu = webgpu_pages(args.webgpu, inline, args, workdir)
    return {"model": name, "sample_shape": list(shape), "webgpu": webgpu,
            "levels": num_levels, "steps": num_steps, "batch": args.batch,
            "threads": args.threads, "final_denoise": spec.final_denoise, "trace_seconds": round(trace_s, 2),
            "compose_seconds": {"raw": round(raw_s, 2), "lean": round(lean_s, 2)}, "nodes": nodes, "score_ops": ops,
            "score_errors": errors, "sampler_max_abs_lean_vs_raw": same,
            "sampler_max_abs_ftz_vs_lean": same_ftz if args.denormals_as_zero else None, "timings": timings, "ratios": ratios,
            "wall_ratios": wall}


def webgpu_pages(export: Path, graphs: dict[str, onnx.ModelProto], args: argparse.Namespace, workdir: Path) -> dict:
    """Seconds of examples/web's WebGPU gpu_step sampling per variant (label -> gpu_step model), alternating."""
    root = Path(__file__).resolve().parent.parent
    dirs = {}
    for label, model in graphs.items():
        folder = workdir / f"web-{label}"
        shutil.copytree(export, folder)
        data = model.SerializeToString()
        (folder / "gpu_step.onnx").write_bytes(data)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["gpu_step.onnx"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        dirs[label] = folder
    seconds: dict[str, list[float]] = {label: [] for label in graphs}
    errors: list[str] = []
    for repeat in range(args.webgpu_repeats):
        for label, folder in dirs.items():
            out = workdir / f"out-{label}-{repeat}"
            out.mkdir()
            spec = {"exportDir": str(folder), "outDir": str(out), "executablePath": args.chromium, "timeoutMs": 600000,
                    "runs": [{"name": "webgpu", "seed": 1, "count": args.webgpu_count, "graph": "gpu_step", "ep": "webgpu",
                              "steps": args.webgpu_levels}]}
            proc = subprocess.run(["node", "tests/js/browser.mjs", json.dumps(spec)], cwd=root, capture_output=True,
                                  text=True, timeout=900)
            run = json.loads(proc.stdout)[0] if proc.returncode == 0 else {"state": "error", "error": proc.stderr[-500:]}
            if run["state"] != "done":
                errors.append(f"{label}: {run.get('error')}")
                continue
            seconds[label].append(run["seconds"])
            adapter = run.get("adapter")
    medians = {label: statistics.median(values) for label, values in seconds.items() if values}
    ratio = medians["lean"] / medians["raw"] if len(medians) == 2 else None
    return {"levels": args.webgpu_levels, "count": args.webgpu_count, "seconds": seconds, "median_s": medians,
            "lean / raw": ratio, "adapter": locals().get("adapter"), "errors": errors,
            "nodes": {label: count_nodes(model.graph) for label, model in graphs.items()}}


def print_result(result: dict) -> None:
    print(f"\n{result['model']}: sample {result['sample_shape']}, trace {result['trace_seconds']} s, compose raw "
          f"{result['compose_seconds']['raw']} s / lean {result['compose_seconds']['lean']} s")
    print(f"  {'graph':<12} {'raw nodes':>10} {'lean nodes':>11}")
    for key, row in result["nodes"].items():
        print(f"  {key:<12} {row['raw']:>10} {row['lean']:>11}")
    print(f"  score ops (lean): {result['score_ops']['lean']}")
    print(f"  {'batch':>5} {'lean-raw':>10} {'lean-eager':>11} {'raw-eager':>10}   (max abs / max |eager|)")
    for row in result["score_errors"]:
        print(f"  {row['batch']:>5} {row['lean_vs_raw']:>10.2e} {row['lean_vs_eager']:>11.2e} {row['raw_vs_eager']:>10.2e}")
    print(f"  sampler max |lean - raw|: {result['sampler_max_abs_lean_vs_raw']:.3e}")
    if result.get("sampler_max_abs_ftz_vs_lean") is not None:
        print(f"  sampler max |lean ftz - lean|: {result['sampler_max_abs_ftz_vs_lean']:.3e}")
    print(f"  batch {result['batch']}, {result['levels']}x{result['steps']} steps"
          f"{' + denoise' if result['final_denoise'] else ''}, {result['threads']} thread(s)")
    print(f"  {'configuration':<28} {'cpu median ms':>14} {'cpu min ms':>11} {'wall median ms':>15} {'wall max/min':>13}")
    for label, row in result["timings"].items():
        print(f"  {label:<28} {row['cpu_median_ms']:>14.1f} {row['cpu_min_ms']:>11.1f} {row['median_ms']:>15.1f} "
              f"{row['spread']:>13.2f}")
    for label, value in result["ratios"].items():
        print(f"  {label:<28} cpu {value:.3f}x  wall {result['wall_ratios'][label]:.3f}x")
    web = result.get("webgpu")
    if web:
        print(f"  WebGPU page (gpu_step, {web['levels']} level(s), {web['count']} samples, adapter {web['adapter']}): "
              f"median s {web['median_s']}, lean / raw {web['lean / raw']}, nodes {web['nodes']}, errors {web['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="built-in model name (repeatable; default: mnist)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--levels", type=int, default=None, help="N levels (default: all trained levels)")
    parser.add_argument("--steps", type=int, default=None, help="T steps per level (default: the model's num_annealed_steps)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of onnxruntime and torch (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration, interleaved (default 5)")
    parser.add_argument("--traced", type=Path, default=None,
                        help="an already traced score.onnx of the (one) --model, instead of tracing it again")
    parser.add_argument("--no-eager", action="store_true", help="do not time the torch eager sampler")
    parser.add_argument("--denormals-as-zero", action="store_true",
                        help="also time the lean sampler with session.set_denormal_as_zero=1")
    parser.add_argument("--webgpu", type=Path, default=None, help="an export of the model: also time examples/web on WebGPU")
    parser.add_argument("--webgpu-levels", type=int, default=1, help="noise levels the page samples (default 1)")
    parser.add_argument("--webgpu-count", type=int, default=4, help="samples per page run (default 4)")
    parser.add_argument("--webgpu-repeats", type=int, default=3, help="page loads per variant, alternating (default 3)")
    parser.add_argument("--chromium", default=os.environ.get("NCSN_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    for value, flag in ((args.batch, "--batch"), (args.threads, "--threads"), (args.repeats, "--repeats")):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.model or ["mnist"]:
            result = bench_model(name, args, Path(workdir))
            print_result(result)
            print(f"saved {save_stamped_result(f'bench_lean-{name}', 'bench_lean.py', {'result': result})}")


if __name__ == "__main__":
    main()
