"""Cost and statistics of the counter-based noise vs plain generators.

Times one draw of a [64, 3, 32, 32] batch (196,608 values) with:
numpy ``counter_normal`` (Philox4x32-10 + Box-Muller), ``numpy.random.Generator.standard_normal``,
torch ``counter_normal`` (the exportable int64 formulation), ``torch.randn``, and the exported
``LangevinStep`` graph on onnxruntime CPU (noise + update). Also prints the noise statistics
over 1,048,576 draws. Prints a table and saves JSON to bench/results/noise.json.

    .venv/bin/python bench/bench_noise.py [--repeats 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from ncsn_runtime import noise
from ncsn_runtime.fileio import write_json_atomic
from scipy import stats

from ncsn_export import LangevinStep
from ncsn_export import noise as torch_noise

SHAPE = (3, 32, 32)
BATCH = 64


def best_of(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def export_step(path: str) -> None:
    x = torch.zeros(2, *SHAPE)
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        LangevinStep(), (x, x, torch.tensor(1.0), torch.tensor([0, 1]), torch.tensor(0)), path, dynamo=True,
        input_names=["sample", "score", "step_size", "seed", "counter"], output_names=["next_sample"],
        dynamic_shapes={"sample": {0: batch}, "score": {0: batch}, "step_size": None, "seed": {0: batch}, "counter": None},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed repetitions; the best is reported")
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    seeds = np.arange(BATCH)
    seeds_t = torch.from_numpy(seeds)
    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "step.onnx")
        export_step(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        zeros = np.zeros((BATCH, *SHAPE), np.float32)
        feeds = {"sample": zeros, "score": zeros, "step_size": np.array(1.0, np.float32), "seed": seeds,
                 "counter": np.array(5, np.int64)}
        rows = {
            "numpy Generator.standard_normal (float32)": best_of(
                lambda: rng.standard_normal((BATCH, *SHAPE), np.float32), args.repeats),
            "numpy counter_normal (ours)": best_of(lambda: noise.counter_normal(seeds, 5, SHAPE), args.repeats),
            "torch.randn": best_of(lambda: torch.randn(BATCH, *SHAPE, generator=generator), args.repeats),
            "torch counter_normal (ours, int64 ops)": best_of(
                lambda: torch_noise.counter_normal(seeds_t, torch.tensor(5), list(SHAPE)), args.repeats),
            "onnxruntime LangevinStep graph (noise + update)": best_of(lambda: session.run(None, feeds), args.repeats),
        }

    z = noise.counter_normal(np.arange(64), 0, (16384,)).astype(np.float64)
    statistics = {
        "draws": int(z.size),
        "mean": float(z.mean()),
        "variance": float(z.var()),
        "ks_statistic": float(stats.kstest(z.ravel(), "norm").statistic),
        "ks_pvalue": float(stats.kstest(z.ravel(), "norm").pvalue),
        "lag1_elements": float(np.corrcoef(z[:, :-1].ravel(), z[:, 1:].ravel())[0, 1]),
        "across_counters": float(np.corrcoef(z.ravel(), noise.counter_normal(np.arange(64), 1, (16384,)).ravel())[0, 1]),
        "neighbouring_seeds": float(np.corrcoef(z.ravel(), noise.counter_normal(np.arange(1, 65), 0, (16384,)).ravel())[0, 1]),
        "standard_error": float(1 / np.sqrt(z.size)),
    }

    baseline = rows["numpy Generator.standard_normal (float32)"]
    print(f"noise for a [{BATCH}, {', '.join(map(str, SHAPE))}] batch, best of {args.repeats}, {args.threads} thread(s)")
    print(f"{'generator':<50} {'ms':>8} {'x numpy randn':>14}")
    for name, seconds in rows.items():
        print(f"{name:<50} {seconds * 1e3:8.2f} {seconds / baseline:14.1f}")
    print("\nstatistics of counter_normal:")
    for name, value in statistics.items():
        print(f"  {name:<20} {value: .3g}")
    result = {"shape": [BATCH, *SHAPE], "threads": args.threads, "seconds": rows, "statistics": statistics,
              "machine": platform.platform(), "torch": torch.__version__, "onnxruntime": ort.__version__}
    out = Path(__file__).parent / "results" / "noise.json"
    write_json_atomic(out, result, sort_keys=False)
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
