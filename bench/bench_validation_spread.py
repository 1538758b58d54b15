"""Spread of the full-default-schedule difference: fused ``sampler.onnx`` (runtime) vs the torch eager sampler.

For several seed bases (B samples each, seeds ``base + b``), runs the export's full default schedule (all
levels, the scheduler's T, the model's final denoise) through ``NCSNPipeline`` (fused) and through the eager
sampler, and prints the max abs difference per base: the data behind ``FULL_TOLERANCE`` in
``ncsn_export/exporters/validate.py``.

    python bench/bench_validation_spread.py EXPORT_DIR [--model mnist] [--batch 16] [--bases 8]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ncsn_export.exporters.validate import FULL_TOLERANCE, _open, _run_pipeline, eager_sampler, make_schedule, run_torch
from ncsn_export.models.registry import load_model

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path)
    parser.add_argument("--model", default=None, help="model reference the export was made from (default: mnist)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bases", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_model(args.model)
    pipe = _open(args.export, threads=1)
    config = dict(pipe.scheduler.config)
    reference = eager_sampler(spec.model, config, pipe.final_denoise)
    rows = []
    print(f"{'seeds':>12} {'max abs diff':>13} {'mean abs diff':>14} {'onnx s':>8} {'torch s':>8}")
    for base in range(args.bases):
        schedule = make_schedule(config, pipe.sample_shape, pipe.init_range, args.batch, None, None, base * args.batch, "full")
        start = time.perf_counter()
        fused = _run_pipeline(pipe, schedule, {"mode": "fused"})
        onnx_s = time.perf_counter() - start
        start = time.perf_counter()
        eager = run_torch(reference, schedule)
        torch_s = time.perf_counter() - start
        diff = np.abs(fused.astype(np.float64) - eager)
        rows.append({"seeds": [int(schedule.seeds[0]), int(schedule.seeds[-1])], "max_abs_diff": float(diff.max()),
                     "mean_abs_diff": float(diff.mean()), "onnx_seconds": onnx_s, "torch_seconds": torch_s})
        seeds = f"{schedule.seeds[0]}..{schedule.seeds[-1]}"
        print(f"{seeds:>12} {diff.max():>13.3e} {diff.mean():>14.3e} {onnx_s:>8.1f} {torch_s:>8.1f}")
    worst = max(row["max_abs_diff"] for row in rows)
    print(f"worst {worst:.3e}, median {np.median([r['max_abs_diff'] for r in rows]):.3e}; FULL_TOLERANCE {FULL_TOLERANCE:g}")
    schedule_info = {"levels": len(schedule.timesteps), "num_annealed_steps": schedule.num_annealed_steps,
                     "final_denoise": pipe.final_denoise}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"validation_spread-{spec.name}.json"
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": spec.name,
                               "batch": args.batch, "schedule": schedule_info, "rows": rows, "worst": worst,
                               "full_tolerance": FULL_TOLERANCE}, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
