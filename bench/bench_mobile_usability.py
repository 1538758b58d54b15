"""onnxruntime's mobile usability checker on an export's graphs, before (``score.onnx``, ``gpu_step.onnx``: dynamic
batch) and after (``mobile/score.onnx``, ``mobile/step.onnx``: ``--artifacts ...,mobile``), per execution provider.

For the dynamic graphs the checker also reports what it would give "if the shapes were fixed" (``--fixed``
column); the mobile graphs are fixed already. Coverage = nodes of the largest partition / all nodes (after the
checker's own onnxruntime basic-level optimization, hence other node counts than the file's).

    .venv/bin/ncsn-export --output exports/mnist --artifacts default,mobile --force
    .venv/bin/python bench/bench_mobile_usability.py exports/mnist            # -> bench/results/mobile_usability-mnist.json
    .venv/bin/python bench/bench_mobile_usability.py exports/unet --name unet-tiny

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


def cell(entry: dict | None) -> str:
    if not entry:
        return "-"
    return (f"{entry['verdict']:<5} {entry['partitions']:>4} part. {entry['supported_nodes']:>5}/{entry['nodes']:<5} "
            f"largest {100 * entry['coverage']:5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--name", default=None, help="results name (default: the manifest's model name)")
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
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"mobile_usability-{name}.json"
    out.write_text(json.dumps({"export": str(args.export_dir), "model": manifest["model"]["name"], "graphs": results,
                               "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
