"""Fused sampling time of two exports side by side (issue 16: the new default model at most 1.3x the old one).

    .venv/bin/python bench/bench_default_model.py --old /tmp/old_export --new /tmp/new_export

Both exports are opened once on onnxruntime CPU (``--threads`` intra-op threads); then ``--repeats`` rounds each
time one fused ``sampler.onnx`` batch (``--batch-size``, default 16) of old and new, alternating which goes first,
so both see the same machine load. Prints the median and best seconds and new/old ratios; writes
``bench/results/default_model_timing.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def schedule_of(export_dir: str) -> dict:
    """L, T and the score calls per sample of an export (manifest ``model`` + its scheduler config)."""
    from ncsn_runtime.fileio import read_json_object
    from ncsn_runtime.manifest import load_manifest

    manifest = load_manifest(export_dir)  # checks paths stay inside the export
    config = read_json_object(Path(export_dir) / manifest["scheduler_config"])
    levels, steps = int(config["num_train_timesteps"]), int(config["num_annealed_steps"])
    denoise = bool(manifest["model"].get("final_denoise", False))
    return {"levels": levels, "annealed_steps": steps, "final_denoise": denoise, "sampling_eps": config["sampling_eps"],
            "score_calls": levels * steps + int(denoise), "description": manifest["model"].get("description", "")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="export directory of the old default model")
    parser.add_argument("--new", required=True, help="export directory of the new default model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--json", default=str(RESULTS / "default_model_timing.json"))
    args = parser.parse_args(argv)
    from ncsn_runtime.config import write_json_atomic
    from ncsn_runtime.pipeline import NCSNPipeline

    pipes = {name: NCSNPipeline.from_pretrained(path, provider="cpu", intra_op_threads=args.threads)
             for name, path in (("old", args.old), ("new", args.new))}
    for pipe in pipes.values():  # warm-up
        pipe(batch_size=args.batch_size, seed=0, output_type="raw", progress=False, mode="fused")
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.repeats):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
            start = time.perf_counter()
            pipes[name](batch_size=args.batch_size, seed=r, output_type="raw", progress=False, mode="fused")
            times[name].append(time.perf_counter() - start)
    rows = {name: {"export": getattr(args, name), **schedule_of(getattr(args, name)),
                   "median_s": statistics.median(t), "best_s": min(t), "times_s": t} for name, t in times.items()}
    ratio = {"median": rows["new"]["median_s"] / rows["old"]["median_s"], "best": rows["new"]["best_s"] / rows["old"]["best_s"]}
    print(f"fused sampling, batch {args.batch_size}, {args.threads} intra-op thread(s), {args.repeats} alternating rounds")
    print(f"{'model':>5} {'L':>4} {'T':>3} {'calls':>5} {'median s':>9} {'best s':>8}")
    for name, row in rows.items():
        print(f"{name:>5} {row['levels']:4d} {row['annealed_steps']:3d} {row['score_calls']:5d} {row['median_s']:9.3f} "
              f"{row['best_s']:8.3f}")
    print(f"new/old: median {ratio['median']:.3f}x, best {ratio['best']:.3f}x (target <= 1.3x)")
    write_json_atomic(args.json, {"batch_size": args.batch_size, "threads": args.threads, "repeats": args.repeats,
                                  "rows": rows, "ratio": ratio})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
