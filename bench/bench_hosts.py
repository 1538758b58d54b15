"""Same seeds on every host: Python runtime, Node (onnxruntime-node), Chromium (onnxruntime-web wasm), C (C API).

Prints a table host x mode -> max abs difference against the Python runtime (same mode and fused) and the time of
one sample batch (sampling only: sessions are created before timing on every host), and saves it as JSON.

    .venv/bin/python bench/bench_hosts.py --export exports/mnist --batch-size 16 --seed 0
    .venv/bin/python bench/bench_hosts.py --model toy-gmm --batch-size 1000

Needs `npm ci` (Node, browser), /usr/bin/chromium (browser) and `bash examples/c/build.sh` (C); a host whose
tools are missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def python_run(export: Path, seed: int, batch: int, mode: str, steps: int | None) -> tuple[np.ndarray, float, str]:
    from ncsn_runtime.pipeline import NCSNPipeline

    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    pipe(batch_size=1, seed=seed, mode=mode, num_inference_steps=steps, output_type="raw", progress=False)  # open sessions
    output = pipe(batch_size=batch, seed=seed, mode=mode, num_inference_steps=steps, output_type="raw", progress=False)
    return np.asarray(output.images), pipe.last_run.seconds, pipe.last_run.engine


def node_run(export: Path, seed: int, batch: int, mode: str, steps: int | None, work: Path) -> tuple[np.ndarray, float]:
    output = work / f"node-{mode}.npy"
    args = [
        "node",
        "runtime/js/cli.mjs",
        str(export),
        "--seed",
        str(seed),
        "--num-samples",
        str(batch),
        "--mode",
        mode,
        "--output",
        str(output),
        "--json",
    ] + (["--steps", str(steps)] if steps else [])
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True)
    return np.load(output), json.loads(proc.stdout.splitlines()[-1])["seconds"]


def browser_runs(export: Path, seed: int, batch: int, steps: int | None, work: Path) -> dict[str, tuple[np.ndarray, float]]:
    runs = [
        {"name": mode, "seed": str(seed), "count": batch, "mode": mode, **({"steps": steps} if steps else {})}
        for mode in ("fused", "stepwise")
    ]
    spec = {"exportDir": str(export), "outDir": str(work), "runs": runs, "timeoutMs": 1_800_000}
    proc = subprocess.run(
        ["node", "tests/js/browser.mjs", json.dumps(spec)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    results = {}
    for run in json.loads(proc.stdout):
        if run["state"] != "done":
            raise RuntimeError(f"browser {run['name']}: {run.get('error')} {run.get('console')}")
        results[run["name"]] = (np.load(work / f"{run['name']}.npy"), run["seconds"])
        shutil.copy(work / f"{run['name']}.png", work / f"browser-{run['name']}.png")
    return results


def c_run(export: Path, seed: int, batch: int, steps: int | None, work: Path) -> tuple[np.ndarray, float]:
    import onnxruntime

    library = next((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    output = work / "c-fused.npy"
    args = [
        str(ROOT / "examples/c/build/ncsn_sample"),
        str(export),
        "--seed",
        str(seed),
        "--num-samples",
        str(batch),
        "--output",
        str(output),
        "--ort-lib",
        str(library),
        "--json",
    ] + (["--steps", str(steps)] if steps else [])
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return np.load(output), json.loads(proc.stdout)["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--export", type=Path, help="an existing export directory")
    source.add_argument("--model", help="export this model (built-in name) into a temporary directory first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="noise levels (default: all trained levels)")
    parser.add_argument("--hosts", default="python,node,browser,c", help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "hosts.json")
    parser.add_argument("--screenshots", type=Path, default=None, help="copy the browser screenshots here")
    args = parser.parse_args(argv)
    hosts = set(args.hosts.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    export = args.export
    if export is None:
        from ncsn_export.exporters import export_model

        export = work / args.model
        export_model(args.model, export, validate=False)
    seed, batch, steps = args.seed, args.batch_size, args.steps

    rows: list[dict] = []
    reference: dict[str, np.ndarray] = {}
    for mode in ("fused", "stepwise"):
        samples, seconds, engine = python_run(export, seed, batch, mode, steps)
        reference[mode] = samples
        rows.append(
            {"host": "python (onnxruntime CPU)", "mode": f"{mode} ({engine})", "seconds": seconds, "samples": samples, "vs": mode}
        )
    if "node" in hosts:
        for mode in ("fused", "stepwise"):
            samples, seconds = node_run(export, seed, batch, mode, steps, work)
            rows.append({"host": "node (onnxruntime-node CPU)", "mode": mode, "seconds": seconds, "samples": samples, "vs": mode})
    if "browser" in hosts:
        if not Path("/usr/bin/chromium").exists():
            print("browser: skipped (/usr/bin/chromium missing)", file=sys.stderr)
        else:
            for mode, (samples, seconds) in browser_runs(export, seed, batch, steps, work).items():
                rows.append(
                    {"host": "chromium (onnxruntime-web wasm)", "mode": mode, "seconds": seconds, "samples": samples, "vs": mode}
                )
    if "c" in hosts:
        if not (ROOT / "examples/c/build/ncsn_sample").exists():
            print("c: skipped (run bash examples/c/build.sh)", file=sys.stderr)
        else:
            samples, seconds = c_run(export, seed, batch, steps, work)
            rows.append({"host": "c (onnxruntime C API)", "mode": "fused", "seconds": seconds, "samples": samples, "vs": "fused"})

    manifest = json.loads((export / "manifest.json").read_text())
    config = json.loads((export / "scheduler" / "scheduler_config.json").read_text())
    levels = steps or config["num_train_timesteps"]
    print(
        f"\nexport {export} (model {manifest['model']['name']}, sample shape {manifest['model']['sample_shape']}), "
        f"seed {seed}, batch {batch}, {levels} levels x {config['num_annealed_steps']} steps; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n"
    )
    print("| host | mode | max abs diff vs Python (same mode) | vs Python fused | s per batch |")
    print("| --- | --- | --- | --- | --- |")
    table = []
    for row in rows:
        same = float(np.abs(row["samples"] - reference[row["vs"]]).max())
        fused = float(np.abs(row["samples"] - reference["fused"]).max())
        print(f"| {row['host']} | {row['mode']} | {same:.2e} | {fused:.2e} | {row['seconds']:.3f} |")
        table.append(
            {k: row[k] for k in ("host", "mode", "seconds")} | {"max_abs_diff_same_mode": same, "max_abs_diff_fused": fused}
        )
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
        for shot in work.glob("browser-*.png"):
            shutil.copy(shot, args.screenshots / shot.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "export": str(export),
        "model": manifest["model"]["name"],
        "seed": seed,
        "batch_size": batch,
        "levels": levels,
        "num_annealed_steps": config["num_annealed_steps"],
        "rows": table,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    from ncsn_runtime.fileio import write_json_atomic

    write_json_atomic(args.out, payload, sort_keys=False)
    print(f"\nsaved {args.out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
