"""Runtime on CUDA (for a session lent an H200): correctness, node placement, then fused vs stepwise vs torch eager.

Run through ``bench/gpu_check.sh`` (which installs onnxruntime-gpu from carried wheel parts); directly:

    PYTHONPATH=runtime:.:bench python3 bench/bench_runtime_gpu.py --exports bench/gpu_exports --out $OUT

Needs onnxruntime-gpu (CUDAExecutionProvider really answering: checked with session.get_providers(), since
onnxruntime-gpu lists CUDA even where no GPU answers), torch with CUDA, and the exports made here by
``python bench/bench_runtime.py --gpu-exports bench/gpu_exports`` (small-conv 1x28x28 10x5 steps, toy-gmm 10x100).

Prints and saves (``runtime_gpu.json``):
1. providers and, per graph, how many nodes onnxruntime placed on CUDA vs CPU (from a profiling trace);
   a CUDA graph needs every node on CUDA;
2. max abs difference of each CUDA path against onnxruntime CPU (fused) on the same seeds (TF32 off);
3. seconds per batch for batch 1/16/64: CUDA fused (sampler.onnx Loop), CUDA stepwise with IO binding, CUDA
   stepwise with IO binding + CUDA graph, score.onnx on CUDA + numpy noise/update, torch eager on CUDA; and the
   speedup of the best onnxruntime path over torch eager (target >= 1.5x).
Expect the noise nodes on CPU: onnxruntime's CUDA EP has no BitwiseAnd / BitwiseXor kernels, which the Philox
noise in step.onnx / sampler.onnx uses; the placement table shows how many, and a CUDA graph then cannot be
captured (the pipeline falls back to IO binding and records why in ``cuda_graph_error``).
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


def bench_model(name: str, exports: Path, batches: list[int], repeats: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Placement, correctness and timings of one export on CUDA."""
    import torch
    from bench_runtime import load_torch_model, torch_eager_sample
    from ncsn_runtime.noise import initial_sample, seeds_for_batch
    from ncsn_runtime.pipeline import NCSNPipeline

    export = exports / name
    print(f"== {name}", flush=True)
    found: dict[str, Any] = {}
    for graph in ("score", "step", "sampler"):
        attempt(found, f"placement_{graph}", lambda graph=graph: placement(export / f"{graph}.onnx"))
    cpu = NCSNPipeline.from_pretrained(export, provider="cpu")
    try:
        graph_pipe = NCSNPipeline.from_pretrained(export, provider=DEVICE)
    except Exception as error:
        found["open_cuda"] = f"FAILED: {type(error).__name__}: {error}"
        print(f"  provider='cuda' failed: {error}", flush=True)
        return found, []
    found["open_cuda"] = graph_pipe.provider
    plain = NCSNPipeline.from_pretrained(export, provider=DEVICE, cuda_graph=False)
    by_score = NCSNPipeline.from_pretrained(export, provider=DEVICE, stepwise_graph="score")  # noise + update in numpy
    model = load_torch_model(name, exports).to(DEVICE).eval()
    synchronize = torch.cuda.synchronize if DEVICE == "cuda" else None

    def sample(pipe: Any, mode: str, batch: int, seed: int = 0) -> np.ndarray:
        return pipe(batch_size=batch, seed=seed, mode=mode, output_type="raw", progress=False).images

    steps = cpu.scheduler.num_annealed_steps
    cpu.scheduler.set_timesteps(cpu.scheduler.num_train_timesteps)
    timesteps, _, step_sizes = cpu.scheduler.schedule_arrays()

    def torch_run(batch: int, seed: int = 0) -> Any:
        seeds = seeds_for_batch(seed, batch)
        x0 = initial_sample(seeds, cpu.sample_shape, *cpu.init_range)
        return torch_eager_sample(model, x0, seeds, timesteps, step_sizes, steps, device=DEVICE)

    reference = sample(cpu, "fused", 16, seed=3)
    checks = {
        "fused": lambda: sample(plain, "fused", 16, seed=3),
        "stepwise_iobinding": lambda: sample(plain, "stepwise", 16, seed=3),
        "stepwise_cuda_graph": lambda: sample(graph_pipe, "stepwise", 16, seed=3),
        "stepwise_score_numpy": lambda: sample(by_score, "stepwise", 16, seed=3),
        "torch_eager_cuda": lambda: torch_run(16, seed=3).cpu().numpy(),
    }
    for label, function in checks.items():
        attempt(found, f"maxdiff_{label}_vs_cpu", lambda function=function: float(np.abs(function() - reference).max()))
    found["stepwise_engine_with_graph"] = graph_pipe.stepper(16).kind
    found["cuda_graph_error"] = graph_pipe.cuda_graph_error
    rows = []
    for batch in batches:
        row: dict[str, Any] = {"model": name, "batch": batch, "steps": len(timesteps) * steps}
        paths = {
            "fused_s": lambda batch=batch: sample(plain, "fused", batch),
            "stepwise_iobinding_s": lambda batch=batch: sample(plain, "stepwise", batch),
            "stepwise_cuda_graph_s": lambda batch=batch: sample(graph_pipe, "stepwise", batch),
            "stepwise_score_numpy_s": lambda batch=batch: sample(by_score, "stepwise", batch),
            "torch_eager_s": lambda batch=batch: torch_run(batch),
        }
        for key, function in paths.items():
            def measure(function=function, key=key) -> float:
                function()  # warm-up: sessions, cuDNN algorithm search, graph capture
                return timed(function, repeats, synchronize if key.startswith("torch") else None)

            attempt(row, key, measure)
        onnx_keys = ("fused_s", "stepwise_iobinding_s", "stepwise_cuda_graph_s", "stepwise_score_numpy_s")
        onnx_times = [row[key] for key in onnx_keys if isinstance(row[key], float)]
        if onnx_times and isinstance(row["torch_eager_s"], float):
            row["best_cuda_over_torch_speedup"] = row["torch_eager_s"] / min(onnx_times)
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
    print("\nmodel        B  steps   fused_s  iobind_s cudagraph  score+np   torch_s  best CUDA path / torch eager (speedup)")
    for r in rows:
        cells = [r.get(k) for k in ("fused_s", "stepwise_iobinding_s", "stepwise_cuda_graph_s", "stepwise_score_numpy_s",
                                    "torch_eager_s")]
        text = " ".join(f"{c:9.4f}" if isinstance(c, float) else "   failed" for c in cells)
        speedup = r.get("best_cuda_over_torch_speedup", float("nan"))
        print(f"{r['model']:10s} {r['batch']:3d} {r['steps']:6d} {text}  {speedup:.2f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime_gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"saved {args.out / 'runtime_gpu.json'}")


if __name__ == "__main__":
    main()
