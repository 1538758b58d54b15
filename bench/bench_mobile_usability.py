"""onnxruntime's mobile usability checker on an export's graphs, before (``score.onnx``, ``gpu_step.onnx``: dynamic
batch) and after (``mobile/score.onnx``, ``mobile/step.onnx``: ``--artifacts ...,mobile``), per execution provider.

For the dynamic graphs the checker also reports what it would give "if the shapes were fixed" (``--fixed``
column); the mobile graphs are fixed already. Coverage = nodes of the largest partition / all nodes (after the
checker's own onnxruntime basic-level optimization, hence other node counts than the file's).

    .venv/bin/ncsn-export --output exports/mnist --artifacts default,mobile --force
    .venv/bin/python bench/bench_mobile_usability.py exports/mnist            # -> bench/results/mobile_usability-mnist.json
    .venv/bin/python bench/bench_mobile_usability.py exports/unet --name unet-tiny
    .venv/bin/python bench/bench_mobile_usability.py exports/mnist --time 200   # + CPU EP: gpu_step vs mobile/step

``--time N``: N calls of ``gpu_step.onnx`` and of ``mobile/step.onnx`` on onnxruntime's CPU EP, 1 thread, at the
mobile graphs' batch, alternating in blocks of 10 (side by side in one run); medians per call and their ratio.

Prints a table and saves ``bench/results/mobile_usability-<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import onnx
import onnxruntime

from ncsn_export.exporters.mobile_usability import EPS, check_usability

RESULTS = Path(__file__).resolve().parent / "results"
PAIRS = (("score.onnx", "mobile/score.onnx"), ("gpu_step.onnx", "mobile/step.onnx"))


def figures(path: Path) -> dict:
    as_is = {ep: verdict.as_dict() for ep, verdict in check_usability(path).items()}
    fixed = {ep: verdict.as_dict() for ep, verdict in check_usability(path, fixed_shapes=True).items()}
    return {"file_nodes": len(onnx.load(str(path), load_external_data=False).graph.node), "as_is": as_is, "fixed": fixed}


def time_steps(export_dir: Path, calls: int) -> dict:
    """Median seconds per call of gpu_step.onnx and mobile/step.onnx (CPU EP, 1 thread, same x / noise)."""
    import time

    import numpy as np
    import onnxruntime as ort

    manifest = json.loads((export_dir / "manifest.json").read_text())
    entry = manifest["artifacts"]["mobile:step"]
    batch, levels = entry["batch"], entry["inputs"][2]["shape"][1]
    shape = [batch, *manifest["model"]["sample_shape"]]
    rng = np.random.default_rng(0)
    x, z = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(str(export_dir / name), options, providers=["CPUExecutionProvider"])
                for name in ("gpu_step.onnx", "mobile/step.onnx")}
    onehot = np.zeros((1, levels), dtype=np.float32)
    onehot[0, 0] = 1
    feeds = {"gpu_step.onnx": {"sample": x, "noise": z, "timestep": np.array(0), "step_size": np.array(1e-4, np.float32)},
             "mobile/step.onnx": {"sample": x, "noise": z, "level_onehot": onehot,
                                  "step_size": np.array([1e-4], np.float32)}}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for name, session in sessions.items():  # warm up
        session.run(None, feeds[name])
    for _ in range(max(1, calls // 10)):
        for name, session in sessions.items():
            for _ in range(10):
                start = time.perf_counter()
                session.run(None, feeds[name])
                times[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(values)) for name, values in times.items()}
    return {"batch": batch, "calls": len(times["gpu_step.onnx"]), "median_seconds": medians,
            "ratio_mobile_to_gpu_step": medians["mobile/step.onnx"] / medians["gpu_step.onnx"]}


def cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    return (f"{entry['verdict']:<5} {entry['partitions']:>4} part. {entry['supported_nodes']:>5}/{entry['nodes']:<5} "
            f"largest {100 * entry['coverage']:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--name", default=None, help="results name (default: the manifest's model name)")
    parser.add_argument("--time", type=int, default=0, metavar="N", help="also time N CPU calls of each step graph")
    args = parser.parse_args()
    manifest = json.loads((args.export_dir / "manifest.json").read_text())
    name = args.name or manifest["model"]["name"]
    results: dict = {}
    for pair in PAIRS:
        for relative in pair:
            path = args.export_dir / relative
            if path.is_file():
                results[relative] = figures(path)
    header = f"{'graph':<18} {'nodes':>6}  {'EP':<21} {'as is':<45} if shapes were fixed"
    print(header)
    print("-" * len(header))
    for relative, entry in results.items():
        for ep in EPS:
            print(f"{relative:<18} {entry['file_nodes']:>6}  {ep:<21} {cell(entry['as_is'].get(ep)):<45} "
                  f"{cell(entry['fixed'].get(ep))}")
    timing = time_steps(args.export_dir, args.time) if args.time else None
    if timing:
        medians = timing["median_seconds"]
        print(f"CPU EP, 1 thread, B={timing['batch']}, {timing['calls']} calls each: gpu_step.onnx "
              f"{1e3 * medians['gpu_step.onnx']:.2f} ms, mobile/step.onnx {1e3 * medians['mobile/step.onnx']:.2f} ms "
              f"(ratio {timing['ratio_mobile_to_gpu_step']:.2f})")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"mobile_usability-{name}.json"
    out.write_text(json.dumps({"export": str(args.export_dir), "model": manifest["model"]["name"], "graphs": results,
                               "cpu_timing": timing, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
