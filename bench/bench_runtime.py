"""Runtime benchmark on CPU: ncsn-sample's import time and peak RSS vs torch, mode timings, stepwise overhead.

    .venv/bin/python bench/bench_runtime.py                 # full run (a few minutes on 2 cores)
    .venv/bin/python bench/bench_runtime.py --quick         # batch 1 and 16, fewer repeats

Models (exported once into --workdir with the real exporter):
* ``small-conv``: a 3-layer conv score net (16 channels, level embedding) on 1x28x28, 10 levels x 5 steps;
* ``toy-gmm``: the paper's 2-D mixture, 10 levels x 100 steps (a tiny network: measures per-step overhead).

Tables:
1. modes: fused / stepwise (step.onnx + IO binding) / stepwise (score.onnx + numpy scheduler) / torch eager loop,
   and the bare costs: N*T score.onnx calls and N*T step.onnx calls through ``session.run``. Each cell is the
   best of ``--repeats`` runs of one full sample batch, sessions already open, 1 intra-op thread everywhere.
2. import time (median of 7 fresh processes) and peak RSS (VmHWM of a process that samples 16 images):
   ncsn-sample vs torch processes (TorchScript ``sampler.pt``, and torch eager with our package) on the same model.
Targets (issue 4): import < 0.3 s, RSS <= 0.25x torch's, stepwise <= 1.10x bare score calls. Results go to
``bench/results/runtime_cpu.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SMALL_CONV_CONFIG = {"num_train_timesteps": 10, "num_annealed_steps": 5, "sigma_min": 0.01, "sigma_max": 1.0,
                     "sampling_eps": 2e-5}


# -- models and exports (torch side; also imported by bench_runtime_gpu.py) ---------------------------------
def small_conv_model(seed: int = 0):
    """3-layer conv score net on [B, 1, 28, 28] conditioned on the level by an embedding; deterministic weights."""
    import torch
    from torch import nn

    class SmallConvScore(nn.Module):
        def __init__(self, levels: int, channels: int = 16) -> None:
            super().__init__()
            self.conv_in = nn.Conv2d(1, channels, 3, padding=1)
            self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
            self.conv_out = nn.Conv2d(channels, 1, 3, padding=1)
            self.embed = nn.Embedding(levels, channels)

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            hidden = torch.nn.functional.silu(self.conv_in(sample) + self.embed(timestep)[:, :, None, None])
            hidden = torch.nn.functional.silu(self.conv_mid(hidden))
            return self.conv_out(hidden) - sample

    torch.manual_seed(seed)
    return SmallConvScore(SMALL_CONV_CONFIG["num_train_timesteps"]).eval()


def small_conv_spec(model=None):
    from ncsn_export.models.registry import ModelSpec

    return ModelSpec(name="small-conv", model=model if model is not None else small_conv_model(),
                     scheduler_config=dict(SMALL_CONV_CONFIG), sample_shape=(1, 28, 28), is_image=True,
                     description="benchmark-only 3-layer conv net")


def prepare_exports(workdir: Path) -> dict[str, Path]:
    """Export small-conv (weights saved beside it as safetensors) and toy-gmm into ``workdir`` once."""
    from safetensors.torch import save_file

    from ncsn_export.exporters import export_model

    workdir.mkdir(parents=True, exist_ok=True)
    exports = {"small-conv": workdir / "small-conv", "toy-gmm": workdir / "toy-gmm"}
    if not (exports["small-conv"] / "manifest.json").is_file():
        model = small_conv_model()
        save_file(model.state_dict(), str(workdir / "small-conv.safetensors"))
        export_model(small_conv_spec(model), exports["small-conv"], force=True)
    if not (exports["toy-gmm"] / "manifest.json").is_file():
        export_model("toy-gmm", exports["toy-gmm"], force=True)
    return exports


def load_torch_model(name: str, workdir: Path):
    """The torch score network of an export (small-conv from its safetensors, toy-gmm from the registry)."""
    if name == "toy-gmm":
        from ncsn_export.models.gmm import toy_gmm_spec

        return toy_gmm_spec().model
    from safetensors.torch import load_file

    model = small_conv_model()
    model.load_state_dict(load_file(str(workdir / "small-conv.safetensors")))
    return model.eval()


def torch_eager_sample(model, x0, seeds, timesteps, step_sizes, steps: int, device: str = "cpu"):
    """Annealed Langevin in torch eager: a Python loop over the score net and LangevinStep (counter noise)."""
    import torch

    from ncsn_export.step import LangevinStep

    step = LangevinStep()
    x = torch.from_numpy(x0).to(device)
    seed = torch.from_numpy(seeds).to(device)
    levels = torch.from_numpy(timesteps).to(device)
    alphas = torch.from_numpy(step_sizes).to(device)
    with torch.no_grad():
        for i in range(len(timesteps)):
            level = levels[i].reshape(1).expand(x.shape[0])
            for t in range(steps):
                counter = torch.tensor(i * steps + t, dtype=torch.int64, device=device)
                x = step(x, model(x, level), alphas[i], seed, counter)
    return x


# -- timing helpers -----------------------------------------------------------------------------------------
def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def time_modes(pipes: dict[str, Any], model: Any, batch: int, repeats: int) -> dict[str, Any]:
    """One row of the mode table: every way to draw ``batch`` samples from one export, sessions already open."""
    from ncsn_runtime.noise import initial_sample, seeds_for_batch

    pipe = pipes["step"]
    steps = pipe.scheduler.num_annealed_steps
    pipe.scheduler.set_timesteps(pipe.scheduler.num_train_timesteps)
    timesteps, _, step_sizes = pipe.scheduler.schedule_arrays()
    total = len(timesteps) * steps
    seeds = seeds_for_batch(0, batch)
    x0 = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)

    def run(mode: str, graph: str = "step") -> None:
        pipes[graph](batch_size=batch, seed=0, mode=mode, output_type="raw", progress=False)

    for mode, graph in (("fused", "step"), ("stepwise", "step"), ("stepwise", "score")):
        run(mode, graph)  # warm-up: opens sessions, allocates buffers
    score_session, step_session = pipe.session("score"), pipe.session("step")
    level = np.zeros(batch, np.int64)
    step_feeds = {"sample": x0, "seed": seeds, "timestep": np.array(0, np.int64), "step_size": np.array(1e-4, np.float32),
                  "counter": np.array(0, np.int64)}

    def bare_score() -> None:
        for _ in range(total):
            score_session.run(None, {"sample": x0, "timestep": level})

    def bare_step() -> None:
        for _ in range(total):
            step_session.run(None, step_feeds)

    def torch_eager() -> None:
        torch_eager_sample(model, x0, seeds, timesteps, step_sizes, steps)

    row = {
        "batch": batch, "steps": total,
        "fused_s": best_of(lambda: run("fused"), repeats),
        "stepwise_iobinding_s": best_of(lambda: run("stepwise"), repeats),
        "stepwise_score_numpy_s": best_of(lambda: run("stepwise", "score"), repeats),
        "bare_score_calls_s": best_of(bare_score, repeats),
        "bare_step_calls_s": best_of(bare_step, repeats),
        "torch_eager_s": best_of(torch_eager, max(1, repeats - 1)),
    }
    row["stepwise_over_bare_score"] = row["stepwise_iobinding_s"] / row["bare_score_calls_s"]
    row["stepwise_over_bare_step"] = row["stepwise_iobinding_s"] / row["bare_step_calls_s"]
    row["fused_over_bare_score"] = row["fused_s"] / row["bare_score_calls_s"]
    row["faster_mode"] = "fused" if row["fused_s"] <= row["stepwise_iobinding_s"] else "stepwise"
    return row


def mode_table(exports: dict[str, Path], workdir: Path, batches: list[int], repeats: int) -> list[dict[str, Any]]:
    import torch
    from ncsn_runtime.pipeline import NCSNPipeline

    torch.set_num_threads(1)
    rows = []
    for name, export in exports.items():
        pipes = {graph: NCSNPipeline.from_pretrained(export, provider="cpu", stepwise_graph=graph, intra_op_threads=1)
                 for graph in ("step", "score")}
        model = load_torch_model(name, workdir)
        for batch in batches:
            row = {"model": name, **time_modes(pipes, model, batch, repeats)}
            rows.append(row)
            print(f"  {name:10s} B={batch:3d}: fused {row['fused_s']:.3f}s  stepwise {row['stepwise_iobinding_s']:.3f}s  "
                  f"score+numpy {row['stepwise_score_numpy_s']:.3f}s  bare score {row['bare_score_calls_s']:.3f}s  "
                  f"bare step {row['bare_step_calls_s']:.3f}s  torch {row['torch_eager_s']:.3f}s", flush=True)
    return rows


# -- processes: import time and peak RSS ---------------------------------------------------------------------
def _python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return result.stdout.strip().splitlines()[-1]


IMPORTS = {
    "numpy (floor)": "import numpy",
    "numpy + onnxruntime (floor)": "import numpy, onnxruntime",
    "ncsn_runtime (scheduler + noise)": "import ncsn_runtime",
    "ncsn-sample (cli + pipeline + onnxruntime)": "import ncsn_runtime.cli, ncsn_runtime.pipeline",
    "torch": "import torch",
    "torch + ncsn_export sampler": "import torch, ncsn_export.sampler",
}


def import_table(runs: int = 7) -> list[dict[str, Any]]:
    rows = []
    for label, statement in IMPORTS.items():
        code = (f"import time\nstart, cpu = time.perf_counter(), time.process_time()\n{statement}\n"
                "print(time.perf_counter() - start, time.process_time() - cpu)")
        samples = [tuple(map(float, _python(code).split())) for _ in range(runs)]
        wall, cpu = [s[0] for s in samples], [s[1] for s in samples]
        rows.append({"what": label, "median_s": statistics.median(wall), "min_s": min(wall),
                     "cpu_median_s": statistics.median(cpu)})
        print(f"  import {label}: median {rows[-1]['median_s']:.3f} s wall, {rows[-1]['cpu_median_s']:.3f} s CPU", flush=True)
    return rows


def rss_table(export: Path, workdir: Path, batch: int = 16) -> list[dict[str, Any]]:
    """Peak RSS of one process sampling ``batch`` images from ``export`` (same seeds and schedule in each)."""
    out = workdir / "rss.npy"
    prologue = "import sys, time\nstart = time.perf_counter()\n"
    # VmHWM (peak resident set of this process image). Not ru_maxrss: Linux carries that over exec from the
    # forking parent, so every child of this (torch-importing) process would report the parent's peak.
    epilogue = ("\nhwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]"
                "\nprint(hwm, time.perf_counter() - start, 'torch' in sys.modules)")
    inputs = f"""
        import numpy as np
        from ncsn_runtime.noise import initial_sample, seeds_for_batch
        from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler
        sched = AnnealedLangevinDynamicsScheduler.from_pretrained({str(export)!r} + '/scheduler')
        ts, _, alphas = sched.schedule_arrays()
        seeds = seeds_for_batch(0, {batch})
        x0 = initial_sample(seeds, (1, 28, 28), 0.0, 1.0)
    """
    workloads = {
        "ncsn-sample (onnxruntime, fused)": f"""
            from ncsn_runtime.cli import main
            main([{str(export)!r}, '-n', '{batch}', '-o', {str(out)!r}, '--no-progress', '--mode', 'fused'])""",
        "ncsn-sample (onnxruntime, stepwise)": f"""
            from ncsn_runtime.cli import main
            main([{str(export)!r}, '-n', '{batch}', '-o', {str(out)!r}, '--no-progress', '--mode', 'stepwise'])""",
        "torch: TorchScript sampler.pt": inputs + f"""
        import torch
        torch.set_num_threads(1)
        sampler = torch.jit.load({str(export / 'sampler.pt')!r})
        with torch.no_grad():
            sampler(torch.from_numpy(x0), torch.from_numpy(seeds), torch.from_numpy(ts), torch.from_numpy(alphas),
                    torch.tensor(sched.num_annealed_steps))""",
        "torch: eager loop (ncsn_export)": inputs + f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {str(ROOT / 'bench')!r})
        from bench_runtime import load_torch_model, torch_eager_sample
        model = load_torch_model('small-conv', __import__('pathlib').Path({str(workdir)!r}))
        torch_eager_sample(model, x0, seeds, ts, alphas, sched.num_annealed_steps)""",
    }
    rows = []
    for label, body in workloads.items():
        code = prologue + textwrap.dedent(body) + epilogue
        rss_kib, seconds, torch_loaded = _python(code, env={"NCSN_NUM_THREADS": "1"}).split()
        rows.append({"process": label, "peak_rss_mib": int(rss_kib) / 1024, "seconds": float(seconds),
                     "torch_loaded": torch_loaded == "True"})
        print(f"  {label}: peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB, {float(seconds):.2f} s", flush=True)
    return rows


def print_tables(results: dict[str, Any]) -> None:
    print("\nmodes (CPU, 1 thread; seconds for one batch, best of repeats)")
    print(f"{'model':10s} {'B':>4s} {'steps':>5s} {'fused':>8s} {'stepwise':>9s} {'score+np':>9s} {'bare score':>10s} "
          f"{'bare step':>9s} {'torch':>8s} {'sw/score':>8s} {'sw/step':>8s} {'fu/score':>8s} faster")
    for r in results["modes"]:
        print(f"{r['model']:10s} {r['batch']:4d} {r['steps']:5d} {r['fused_s']:8.3f} {r['stepwise_iobinding_s']:9.3f} "
              f"{r['stepwise_score_numpy_s']:9.3f} {r['bare_score_calls_s']:10.3f} {r['bare_step_calls_s']:9.3f} "
              f"{r['torch_eager_s']:8.3f} {r['stepwise_over_bare_score']:8.2f} {r['stepwise_over_bare_step']:8.2f} "
              f"{r['fused_over_bare_score']:8.2f} {r['faster_mode']}")
    print("\nimport time (7 fresh processes: median wall, min wall, median CPU time of the importing process)")
    for r in results["imports"]:
        cpu = r.get("cpu_median_s", float("nan"))
        print(f"  {r['what']:45s} {r['median_s']:.3f} s (min {r['min_s']:.3f} s, CPU {cpu:.3f} s)")
    print("\npeak RSS of a process sampling 16 small-conv images")
    torch_rss = min(r["peak_rss_mib"] for r in results["rss"] if r["torch_loaded"])
    for r in results["rss"]:
        print(f"  {r['process']:40s} {r['peak_rss_mib']:7.0f} MiB  {r['peak_rss_mib'] / torch_rss:5.2f}x torch's smallest  "
              f"({r['seconds']:.2f} s, torch loaded: {r['torch_loaded']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ncsn-bench-runtime"))
    parser.add_argument("--quick", action="store_true", help="batch 1 and 16, 2 repeats")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "runtime_cpu.json")
    parser.add_argument("--exports-only", action="store_true", help="only write the exports into --workdir (for the GPU check)")
    parser.add_argument("--skip-modes", action="store_true", help="only the import and RSS tables (modes kept from --json)")
    args = parser.parse_args()
    if args.exports_only:
        print("\n".join(f"{name}: {path}" for name, path in prepare_exports(args.workdir).items()))
        return
    batches, repeats = ([1, 16], 2) if args.quick else ([1, 16, 64], args.repeats)
    import onnxruntime

    print(f"exports in {args.workdir}", flush=True)
    exports = prepare_exports(args.workdir)
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
                                           "cpus": os.cpu_count(), "threads": 1}}
    if args.skip_modes and args.json.is_file():
        from ncsn_runtime.fileio import read_json_object

        results["modes"] = read_json_object(args.json)["modes"]
    else:
        print("mode timings", flush=True)
        results["modes"] = mode_table(exports, args.workdir, batches, repeats)
    print("import times", flush=True)
    results["imports"] = import_table()
    print("peak RSS", flush=True)
    results["rss"] = rss_table(exports["small-conv"], args.workdir)
    print_tables(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    from ncsn_runtime.fileio import write_json_atomic

    write_json_atomic(args.json, results, sort_keys=False)
    print(f"\nsaved {args.json}")


if __name__ == "__main__":
    main()
