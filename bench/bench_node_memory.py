"""Peak RSS of the Node host loading a big graph: hashing + session creation, this checkout vs another (issue 18).

Builds a toy-gmm export whose score.onnx carries a ``--mb`` MB float32 initializer, once embedded in the graph and
once as external data (``score.onnx`` + ``big.onnx.data``), then runs ``node RUNTIME/js/cli.mjs EXPORT --graph score``
under ``/usr/bin/time -v`` for each runtime given (``--runtime NAME=DIR``, the repository root holding runtime/js;
default: this checkout only) and prints max RSS, wall time and the ratio to the graph's size.

    python bench/bench_node_memory.py --mb 400 --runtime before=/work/main --runtime after=.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "runtime"), str(ROOT / "tests")]


def big_score_graph(target: Path, megabytes: int, external: bool) -> int:
    """score = sample * W[0] with W = ones(megabytes MB) (float32); returns the bytes the graph's files hold."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    count = megabytes * (1 << 20) // 4
    weight = numpy_helper.from_array(np.ones(count, np.float32), "W")
    sample = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 2])
    timestep = helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 2])
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    nodes = [helper.make_node("Gather", ["W", "zero"], ["w0"]), helper.make_node("Mul", ["sample", "w0"], ["score"])]
    graph = helper.make_graph(nodes, "big_score", [sample, timestep], [score], initializer=[weight, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = target / "score.onnx"
    path.unlink(missing_ok=True)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data",
                  size_threshold=1024)
    else:
        onnx.save(model, str(path))
    return sum(p.stat().st_size for p in (path, target / "big.onnx.data") if p.exists())


def build(base: Path, megabytes: int, external: bool) -> tuple[Path, int]:
    from host_exports import build_export
    from untrusted import copy_export, rehash

    target = base / ("external" if external else "embedded")
    copy_export(build_export("toy-gmm"), target)
    size = big_score_graph(target, megabytes, external)
    rehash(target, "score.onnx", *(["big.onnx.data"] if external else []))
    return target, size


def run(runtime: Path, export: Path, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", "node", str(runtime / "runtime" / "js" / "cli.mjs"), str(export), "--graph", "score",
               "-n", "2", "--steps", "1", "-o", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=runtime)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr).group(1)
    minutes, seconds = wall.rsplit(":", 1)
    ok = proc.returncode == 0
    return {"exit": proc.returncode, "max_rss_mb": rss / 1024, "wall_s": float(minutes.split(":")[-1]) * 60 + float(seconds),
            "error": None if ok else proc.stderr.splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=400, help="size of the big initializer in MB")
    parser.add_argument("--runtime", action="append", default=None, help="NAME=DIR (a checkout root); repeatable")
    args = parser.parse_args()
    runtimes = dict(item.split("=", 1) for item in (args.runtime or [f"this={ROOT}"]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-node-memory-") as tmp:
        base = Path(tmp)
        for external in (False, True):
            export, size = build(base, args.mb, external)
            for name, directory in runtimes.items():
                result = run(Path(directory).resolve(), export, base / "out.npy")
                rows.append({"layout": "external data" if external else "embedded", "runtime": name, "graph_mb": size / 2**20,
                             **result, "rss_per_graph": result["max_rss_mb"] / (size / 2**20)})
            shutil.rmtree(export)
    print(f"{'layout':14} {'runtime':8} {'graph MB':>9} {'max RSS MB':>11} {'RSS/graph':>10} {'wall s':>7}  exit")
    for row in rows:
        print(f"{row['layout']:14} {row['runtime']:8} {row['graph_mb']:9.1f} {row['max_rss_mb']:11.1f} "
              f"{row['rss_per_graph']:10.2f} {row['wall_s']:7.2f}  {row['exit']} {row['error'] or ''}")
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "node_memory.json").write_text(json.dumps({"mb": args.mb, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
