"""Turn a training run into shippable weights: ``<name>.safetensors`` (EMA) + ``<name>.json`` (config and record).

    python -m ncsn_export.training.package RUN_DIR ncsn_export/weights --name mnist_ncsn \\
        --num-annealed-steps 100 --sampling-eps 2e-5 --final-denoise

The JSON holds ``architecture``, ``model_config``, ``scheduler_config`` (the sampling schedule chosen for the
model: T and eps may differ from training's), ``sampling`` (final_denoise, how the choice was made) and
``training`` (the run's record). Files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from ncsn_runtime.fileio import atomic_write, read_json_object, write_json_atomic
from ncsn_runtime.schedule import check_count, check_positive_float


def package_run(
    run_dir: str | Path,
    weights_dir: str | Path,
    name: str,
    num_annealed_steps: int | None = None,
    sampling_eps: float | None = None,
    final_denoise: bool = True,
    notes: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Copy ``run_dir/ema.safetensors`` and write the JSON record; returns (weights path, json path)."""
    run, out = Path(run_dir), Path(weights_dir)
    record = read_json_object(run / "model.json")
    scheduler = dict(record["scheduler_config"])
    if num_annealed_steps is not None:
        scheduler["num_annealed_steps"] = check_count("num_annealed_steps", num_annealed_steps)
    if sampling_eps is not None:
        scheduler["sampling_eps"] = check_positive_float("sampling_eps", sampling_eps)
    record["scheduler_config"] = scheduler
    record["sampling"] = dict(notes or {}, final_denoise=bool(final_denoise))
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    with open(run / "ema.safetensors", "rb") as source:
        atomic_write(weights, lambda handle: shutil.copyfileobj(source, handle))
    return weights, write_json_atomic(out / f"{name}.json", record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("weights_dir")
    parser.add_argument("--name", default="mnist_ncsn")
    parser.add_argument("--num-annealed-steps", type=int, default=None)
    parser.add_argument("--sampling-eps", type=float, default=None)
    parser.add_argument("--final-denoise", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--notes", default=None, help="JSON object merged into the record's `sampling` section")
    args = parser.parse_args(argv)
    notes = json.loads(args.notes) if args.notes else None
    for path in package_run(args.run_dir, args.weights_dir, args.name, args.num_annealed_steps, args.sampling_eps,
                            args.final_denoise, notes):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
