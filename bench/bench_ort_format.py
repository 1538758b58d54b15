"""ORT-format artifacts: ``.ort`` sizes vs ``.onnx`` and what ``--artifacts ...,ort`` adds to the export time.

Side by side in one process: the export with the default artifacts, the same export with ``default,ort`` (same
model, same validation options), and the default one again (the two plain runs bracket the ort one, so a change of
machine load or the first run's warm-up shows as their spread). The ort cost is read two ways: the wall-time ratio
to the plain runs, and the seconds the ort run itself recorded for the ``.ort`` conversions + config
(``manifest["export_seconds"]["ort/..."]``) and for the ``.ort`` validation rows (``manifest["validation"]``).

    .venv/bin/python bench/bench_ort_format.py                  # the default MNIST RefineNet
    .venv/bin/python bench/bench_ort_format.py --model toy-gmm
    .venv/bin/python bench/bench_ort_format.py --levels EXPORT/score.onnx   # where the .ort's extra bytes are

Prints a table and saves ``bench/results/ort_format-<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from ncsn_runtime.contract import GRAPHS, ORT_DIR, ORT_PREFIX, ort_file

from ncsn_export.exporters import export_model

RESULTS = Path(__file__).resolve().parent / "results"


def timed_export(model: str | None, output: Path, artifacts: str) -> tuple[float, dict]:
    start = time.perf_counter()
    report = export_model(model, output, artifacts=artifacts)
    return time.perf_counter() - start, report.manifest


def level_sizes(graph: Path) -> None:
    """Print the ORT-format size of ``graph`` per optimization level next to onnxruntime's optimized ONNX of it
    (same level) and that ONNX's initializer bytes: what the ORT format adds beyond the weights."""
    import onnx
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    source = onnx.load(str(graph))
    print(f"{graph.name}: {graph.stat().st_size} bytes, {len(source.graph.node)} nodes, initializers "
          f"{sum(t.ByteSize() for t in source.graph.initializer)} bytes")
    with tempfile.TemporaryDirectory(prefix="bench-ort-levels-") as scratch:
        for name, level in levels.items():
            sizes = {}
            for fmt in ("ORT", "ONNX"):
                options = ort.SessionOptions()
                options.graph_optimization_level = level
                options.optimized_model_filepath = str(Path(scratch) / f"{name}.{fmt.lower()}")
                if fmt == "ORT":
                    options.add_session_config_entry("session.save_model_format", "ORT")
                ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"],
                                     disabled_optimizers=["NchwcTransformer"])
                sizes[fmt] = Path(options.optimized_model_filepath).stat().st_size
            optimized = onnx.load(str(Path(scratch) / f"{name}.onnx"))
            print(f"level {name:<8} .ort {sizes['ORT']:>10} B   optimized .onnx {sizes['ONNX']:>10} B   its initializers "
                  f"{sum(t.ByteSize() for t in optimized.graph.initializer):>10} B, {len(optimized.graph.node)} nodes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name (default: the default MNIST RefineNet)")
    parser.add_argument("--levels", type=Path, default=None, metavar="GRAPH.onnx",
                        help="only print the .ort size of GRAPH per optimization level (no export)")
    args = parser.parse_args()
    if args.levels is not None:
        level_sizes(args.levels)
        return
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-ort-") as scratch:
        first, _ = timed_export(args.model, Path(scratch) / "plain", "default")
        ort_seconds, manifest = timed_export(args.model, Path(scratch) / "ort", "default,ort")
        second, _ = timed_export(args.model, Path(scratch) / "plain2", "default")
        plain_seconds = (first + second) / 2
        root = Path(scratch) / "ort"
        sizes = {}
        for key, spec in GRAPHS.items():
            entry = manifest["artifacts"].get(ORT_PREFIX + key, {})
            if entry.get("status") == "written":
                sizes[key] = {"onnx_bytes": (root / spec.file).stat().st_size, "ort_bytes": (root / ort_file(key)).stat().st_size}
        config_bytes = (root / ORT_DIR / "required_operators.config").stat().st_size
    conversion = sum(value for name, value in manifest["export_seconds"].items() if name.startswith(ORT_DIR + "/"))
    validation = sum(row["seconds"] for row in manifest["validation"] if row["graph"].startswith(ORT_PREFIX))
    result = {
        "model": manifest["model"]["name"], "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "versions": manifest["versions"], "sizes": sizes, "config_bytes": config_bytes,
        "operators": manifest["artifacts"]["ort"].get("operators"),
        "export_seconds": {"default (before)": round(first, 1), "default,ort": round(ort_seconds, 1),
                           "default (after)": round(second, 1)},
        "ort_conversion_seconds": round(conversion, 2), "ort_validation_rows_seconds": round(validation, 2),
        "ort_export_seconds": {k: v for k, v in manifest["export_seconds"].items() if k.startswith(ORT_DIR + "/")},
        "validation_total_seconds_ort_run": manifest["export_seconds"].get("validation"),
    }
    print(f"{'graph':<12} {'onnx MiB':>9} {'ort MiB':>9} {'ort/onnx':>9}")
    for key, row in sizes.items():
        print(f"{key:<12} {row['onnx_bytes'] / 2**20:>9.3f} {row['ort_bytes'] / 2**20:>9.3f} "
              f"{row['ort_bytes'] / row['onnx_bytes']:>9.2f}")
    total_onnx = sum(row["onnx_bytes"] for row in sizes.values())
    total_ort = sum(row["ort_bytes"] for row in sizes.values())
    print(f"{'total':<12} {total_onnx / 2**20:>9.3f} {total_ort / 2**20:>9.3f} {total_ort / total_onnx:>9.2f}"
          f"   (+ required_operators.config {config_bytes} B, {result['operators']} operators)")
    print(f"export wall: default {first:.1f} s, default,ort {ort_seconds:.1f} s, default {second:.1f} s "
          f"(ort / mean plain {ort_seconds / plain_seconds:.2f}); inside the ort run: conversion + config {conversion:.2f} s, "
          f".ort validation rows {validation:.2f} s")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ort_format-{result['model']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
