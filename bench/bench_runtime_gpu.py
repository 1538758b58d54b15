"""Runtime on CUDA (for a session lent an H200): correctness, node placement, then fused vs stepwise vs torch eager.

Run through ``bench/gpu_check.sh`` (which installs onnxruntime-gpu from carried wheel parts); directly:

    PYTHONPATH=runtime:.:bench python3 bench/bench_runtime_gpu.py --exports bench/gpu_exports --out $OUT

Needs onnxruntime-gpu (CUDAExecutionProvider really answering: checked with session.get_providers(), since
onnxruntime-gpu lists CUDA even where no GPU answers), torch with CUDA, and the exports made here by
``python bench/bench_runtime.py --gpu-exports bench/gpu_exports`` (small-conv 1x28x28 10x5 steps, toy-gmm 10x100).

Prints and saves (``runtime_gpu.json``):
1. providers and, per graph (score, step, sampler, gpu_step, gpu_sampler), how many nodes onnxruntime placed
   on CUDA vs CPU (from a profiling trace), next to the exporter's static audit (op/dtype pairs without a CUDA
   kernel); a CUDA graph needs every node on CUDA;
2. whether gpu_step was captured as a CUDA graph (else the error), and the max abs difference of every graph
   on CUDA (and torch eager on CUDA) against onnxruntime CPU sampler.onnx on the same seeds (TF32 off);
3. seconds per batch for batch 1/16/64: gpu_step with IO binding + CUDA graph, gpu_step with IO binding only,
   gpu_sampler (fused Loop, arithmetic noise), sampler (fused Loop, bitwise noise on CPU), torch eager on CUDA;
   and the speedup of CUDA-graph stepping over torch eager (target >= 1.5x).
Expect step.onnx / sampler.onnx noise nodes on CPU (no CUDA BitwiseAnd / BitwiseXor kernels) and every node of
gpu_step.onnx / gpu_sampler.onnx on CUDA.
Every measurement is wrapped: a failing path is reported with its error and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "runtime", ROOT, ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


DEVICE = "cuda"  # "cpu" with --dry-run-on-cpu: the same code paths without a GPU, to check the script itself


def placement(path: Path) -> dict[str, Any]:
    """Nodes per execution provider in one CUDA run of ``path`` (onnxruntime's profiling trace)."""
    import onnxruntime as ort
    from ncsn_runtime.providers import CUDA_PROVIDER, Device, provider_list

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), path.stem)
    session = ort.InferenceSession(str(path), sess_options=options, providers=provider_list(Device(DEVICE)))
    feeds = {}
    for item in session.get_inputs():
        shape = [2 if not isinstance(size, int) else size for size in item.shape]
        dtype = np.float32 if "float" in item.type else np.int64
        feeds[item.name] = np.ones(shape, dtype) if item.name != "num_annealed_steps" else np.array(1, np.int64)
    session.run(None, feeds)
    trace = json.loads(Path(session.end_profiling()).read_text())
    counts: dict[str, Any] = {}
    seen = set()
    for event in trace:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args and event["name"] not in seen:
            seen.add(event["name"])
            counts[args["provider"]] = counts.get(args["provider"], 0) + 1
    counts["session_providers"] = session.get_providers()
    counts["cuda_ok"] = CUDA_PROVIDER in session.get_providers()
    return counts


def timed(function, repeats: int, sync=None) -> float:
    """Best of ``repeats`` wall-clock runs (after the caller's warm-up)."""
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        function()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def attempt(results: dict[str, Any], key: str, function) -> Any:
    try:
        value = function()
    except Exception as error:  # report and go on: one failing path must not hide the others
        results[key] = f"FAILED: {type(error).__name__}: {error}"
        print(f"  {key}: FAILED {type(error).__name__}: {error}", flush=True)
        traceback.print_exc(limit=3)
        return None
    results[key] = value
    return value


def static_audit(export: Path) -> dict[str, Any]:
    """The exporter's op audit (ncsn_export.exporters.placement) per graph: op/dtype pairs without a CUDA kernel."""
    import onnx

    from ncsn_export.exporters.placement import unsupported_ops

    return {graph: unsupported_ops(onnx.load(str(export / f"{graph}.onnx")))["cuda"] for graph in GRAPH_KEYS
            if (export / f"{graph}.onnx").exists()}


GRAPH_KEYS = ("score", "step", "sampler", "gpu_step", "gpu_sampler")


def bench_model(name: str, exports: Path, batches: list[int], repeats: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Placement, CUDA-graph capture, correctness and timings of one export on CUDA."""
    import torch
    from bench_runtime import load_torch_model, torch_eager_sample
    from ncsn_runtime.noise import initial_sample, seeds_for_batch
    from ncsn_runtime.pipeline import NCSNPipeline
    from ncsn_runtime.steppers import GpuStepCudaGraphStepper

    export = exports / name
    print(f"== {name}", flush=True)
    found: dict[str, Any] = {}
    attempt(found, "static_audit_no_cuda_kernel", lambda: static_audit(export))
    for graph in GRAPH_KEYS:
        attempt(found, f"placement_{graph}", lambda graph=graph: placement(export / f"{graph}.onnx"))
    cpu = NCSNPipeline.from_pretrained(export, provider="cpu")
    try:
        graph_pipe = NCSNPipeline.from_pretrained(export, provider=DEVICE)
    except Exception as error:
        found["open_cuda"] = f"FAILED: {type(error).__name__}: {error}"
        print(f"  provider='cuda' failed: {error}", flush=True)
        return found, []
    found["open_cuda"] = graph_pipe.provider
    attempt(found, "auto_graph", lambda: graph_pipe.choose_graph("auto"))
    plain = NCSNPipeline.from_pretrained(export, provider=DEVICE, cuda_graph=False)
    model = load_torch_model(name, exports).to(DEVICE).eval()
    synchronize = torch.cuda.synchronize if DEVICE == "cuda" else None

    def sample(pipe: Any, graph: str, batch: int, seed: int = 0) -> np.ndarray:
        return pipe(batch_size=batch, seed=seed, graph=graph, output_type="raw", progress=False).images

    steps = cpu.scheduler.num_annealed_steps
    cpu.scheduler.set_timesteps(cpu.scheduler.num_train_timesteps)
    timesteps, _, step_sizes = cpu.scheduler.schedule_arrays()

    def torch_run(batch: int, seed: int = 0) -> Any:
        seeds = seeds_for_batch(seed, batch)
        x0 = initial_sample(seeds, cpu.sample_shape, *cpu.init_range)
        return torch_eager_sample(model, x0, seeds, timesteps, step_sizes, steps, device=DEVICE)

    reference = sample(cpu, "sampler", 16, seed=3)
    checks = {
        "gpu_step_cuda_graph": lambda: sample(graph_pipe, "gpu_step", 16, seed=3),
        "gpu_step_iobinding": lambda: sample(plain, "gpu_step", 16, seed=3),
        "gpu_sampler": lambda: sample(plain, "gpu_sampler", 16, seed=3),
        "sampler": lambda: sample(plain, "sampler", 16, seed=3),
        "step_iobinding": lambda: sample(plain, "step", 16, seed=3),
        "score_numpy": lambda: sample(plain, "score", 16, seed=3),
        "torch_eager_cuda": lambda: torch_run(16, seed=3).cpu().numpy(),
    }
    for label, function in checks.items():
        attempt(found, f"maxdiff_{label}_vs_cpu", lambda function=function: float(np.abs(function() - reference).max()))
    stepper = attempt(found, "gpu_step_engine", lambda: graph_pipe.stepper(16, "gpu_step").kind)
    found["cuda_graph_captured"] = stepper == GpuStepCudaGraphStepper.kind
    found["cuda_graph_error"] = graph_pipe.cuda_graph_error
    print(f"  CUDA graph captured: {found['cuda_graph_captured']} ({stepper}); error: {graph_pipe.cuda_graph_error}", flush=True)
    rows = []
    for batch in batches:
        row: dict[str, Any] = {"model": name, "batch": batch, "steps": len(timesteps) * steps}
        paths = {
            "gpu_step_cuda_graph_s": lambda batch=batch: sample(graph_pipe, "gpu_step", batch),
            "gpu_step_iobinding_s": lambda batch=batch: sample(plain, "gpu_step", batch),
            "gpu_sampler_s": lambda batch=batch: sample(plain, "gpu_sampler", batch),
            "sampler_s": lambda batch=batch: sample(plain, "sampler", batch),
            "torch_eager_s": lambda batch=batch: torch_run(batch),
        }
        for key, function in paths.items():
            def measure(function=function, key=key) -> float:
                function()  # warm-up: sessions, cuDNN algorithm search, graph capture
                return timed(function, repeats, synchronize if key.startswith("torch") else None)

            attempt(row, key, measure)
        if isinstance(row["gpu_step_cuda_graph_s"], float) and isinstance(row["torch_eager_s"], float):
            row["cuda_graph_over_torch_speedup"] = row["torch_eager_s"] / row["gpu_step_cuda_graph_s"]
        print("  " + json.dumps(row), flush=True)
        rows.append(row)
    return found, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, default=ROOT / "bench" / "gpu_exports")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run-on-cpu", action="store_true", help="run every path on CPU (checks this script)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = "cpu" if args.dry_run_on_cpu else "cuda"

    import onnxruntime as ort
    import torch

    if hasattr(ort, "preload_dlls") and DEVICE == "cuda":
        try:  # CUDA / cuDNN from the nvidia-* pip packages torch uses (gpu_check.sh also sets LD_LIBRARY_PATH)
            ort.preload_dlls()
        except Exception as error:
            print(f"onnxruntime.preload_dlls() failed: {error}", flush=True)
    torch.backends.cudnn.allow_tf32 = False  # same arithmetic as onnxruntime (use_tf32=0) for the equality check
    torch.backends.cuda.matmul.allow_tf32 = False
    results: dict[str, Any] = {
        "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__, "available_providers": ort.get_available_providers(),
        "torch": torch.__version__, "torch_cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps(results, indent=1), flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for name in ("small-conv", "toy-gmm"):
        results[name], model_rows = bench_model(name, args.exports, batches, args.repeats)
        rows.extend(model_rows)
    results["timings"] = rows
    print("\nseconds per batch (best of --repeats); speedup = torch eager / gpu_step CUDA graph (target >= 1.5x)")
    print("model        B  steps  cudagraph    iobind gpu_smplr   sampler   torch_s  speedup")
    for r in rows:
        cells = [r.get(k) for k in ("gpu_step_cuda_graph_s", "gpu_step_iobinding_s", "gpu_sampler_s", "sampler_s",
                                    "torch_eager_s")]
        text = " ".join(f"{c:9.4f}" if isinstance(c, float) else "   failed" for c in cells)
        speedup = r.get("cuda_graph_over_torch_speedup", float("nan"))
        print(f"{r['model']:10s} {r['batch']:3d} {r['steps']:6d} {text}  {speedup:.2f}x")
    for name in ("small-conv", "toy-gmm"):
        found = results[name]
        diffs = {k[len("maxdiff_"):-len("_vs_cpu")]: v for k, v in found.items() if k.startswith("maxdiff_")}
        captured = found.get("cuda_graph_captured") if DEVICE == "cuda" else "n/a (dry run on CPU: no capture attempted)"
        print(f"{name}: CUDA graph captured {captured}; error {found.get('cuda_graph_error')}; "
              f"max |device - CPU sampler| {diffs}")
        print(f"  static audit, op/dtype without a CUDA kernel: {found.get('static_audit_no_cuda_kernel')}")
        for graph in GRAPH_KEYS:
            print(f"  placement {graph}: {found.get(f'placement_{graph}')}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"saved {args.out / 'runtime_gpu.json'}")


if __name__ == "__main__":
    main()
