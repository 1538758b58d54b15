"""Export time: the full default ``export_model`` vs one plain ``torch.onnx.export(dynamo=True)`` of the same network.

Side by side in one process (plain, full, plain: the two plain runs bracket the full one, so a change of
machine load shows as their spread). The full export is everything ``ncsn-export`` does by default
(score trace, composed graphs, ``sampler.pt``, validation through the runtime incl. the full-schedule
check, manifest); its per-step seconds come from ``manifest["export_seconds"]``. Target (issue 15): full <= 1.2x plain.

    .venv/bin/python bench/bench_export_time.py                        # the default MNIST RefineNet
    .venv/bin/python bench/bench_export_time.py --model toy-gmm --artifacts default,pt2

Prints a table and saves ``bench/results/export_time-<model>.json``.
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

import torch
from ncsn_runtime.contract import GRAPHS

from ncsn_export.exporters import export_model
from ncsn_export.exporters.onnx_export import batch_shapes, example_inputs, quiet_exporter
from ncsn_export.models.registry import load_model

RESULTS = Path(__file__).resolve().parent / "results"


def plain_dynamo_export(model: torch.nn.Module, sample_shape: tuple[int, ...], path: Path) -> float:
    """Seconds of one ``torch.onnx.export(dynamo=True)`` + save of ``model`` (dynamic batch, opset 18)."""
    sample = example_inputs(sample_shape)["sample"]
    args = (sample, torch.zeros(sample.shape[0], dtype=torch.int64))
    names = GRAPHS["score"].input_names
    start = time.perf_counter()
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model, args, dynamo=True, input_names=list(names), output_names=["score"],
                                    dynamic_shapes=batch_shapes(names, batched=names), opset_version=18)
    program.save(str(path))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model reference (default: the default MNIST model)")
    parser.add_argument("--artifacts", default=None, help="--artifacts of the full export (default: ncsn-export's)")
    parser.add_argument("--full-validation-batch-size", type=int, default=None, help="default: ncsn-export's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    spec = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-export-time-") as scratch:
        root = Path(scratch)
        plain = [plain_dynamo_export(spec.model, tuple(spec.sample_shape), root / "plain0.onnx")]
        start = time.perf_counter()
        options = {} if args.full_validation_batch_size is None else {"full_batch_size": args.full_validation_batch_size}
        report = export_model(spec, root / "export", artifacts=args.artifacts, **options)
        full = time.perf_counter() - start
        plain.append(plain_dynamo_export(spec.model, tuple(spec.sample_shape), root / "plain1.onnx"))
    steps = report.manifest["export_seconds"]
    mean_plain = sum(plain) / len(plain)
    print(f"model {spec.name}, sample shape {list(spec.sample_shape)}, torch {torch.__version__}, {platform.machine()}")
    print(f"{'what':<44} {'seconds':>8}")
    print(f"{'plain torch.onnx.export(dynamo=True), before':<44} {plain[0]:>8.1f}")
    print(f"{'plain torch.onnx.export(dynamo=True), after':<44} {plain[1]:>8.1f}")
    print(f"{'full default export (ncsn-export)':<44} {full:>8.1f}")
    for name, seconds in steps.items():
        print(f"{'  ' + name:<44} {seconds:>8.1f}")
    for name, seconds in report.validation.reference_seconds.items():
        print(f"{'    torch eager reference, ' + name + ' check':<44} {seconds:>8.1f}")
    print(f"{'ratio full / mean plain':<44} {full / mean_plain:>8.2f}   (target <= 1.2)")
    artifacts = {key: entry["status"] for key, entry in report.manifest["artifacts"].items()}
    print("artifacts:", ", ".join(f"{key} {status}" for key, status in artifacts.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"export_time-{spec.name}.json"
    out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": spec.name,
        "plain_seconds": plain, "full_seconds": full, "ratio": full / mean_plain, "export_seconds": steps,
        "artifacts": artifacts, "validation": report.manifest["validation"], "torch": torch.__version__,
        "reference_seconds": report.validation.reference_seconds,
    }, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
