"""Where the CPU time of the network goes (not a test): onnxruntime's profile, kernel time per op type.

The network is traced once (or ``--traced``) and composed as the samplers run it (``lean_graph`` when lean,
``rewrite_elu``, ``compact_names``, ``uniform_level``: the step loop's network, one level for the batch), for
the ``raw`` (``lean=False``) and ``lean`` variants. Each runs ``--runs`` times at ``--batch``, one intra-op thread,
with ``enable_profiling``; the table gives per run: kernel milliseconds and node count per op type (of the
graph onnxruntime optimised: NCHWc ``Conv``, ``ReorderInput`` / ``ReorderOutput``, fused ``Add`` s...), the
kernel total and the unprofiled CPU time of a run. The level-only nodes (``Slice``, ``Tile``, ``Gather``) run
here every call; the samplers run them once per level.

It also times a chain of 500 ``Reshape`` nodes on a 16-float tensor, unprofiled: onnxruntime's cost of a node
outside its kernel (the profile's own per-node cost is far larger, so profiled totals overstate small nodes).

Run::

    .venv/bin/python bench/profile_lean.py --model mnist --batch 16 --runs 20 [--traced T.onnx]

Results are printed and saved to ``bench/results/profile_lean-<model>-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from ncsn_runtime.schedule import geometric_sigmas
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loop import save_stamped_result

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.lean_graph import uniform_level
from ncsn_export.exporters.onnx_export import export_score_onnx
from ncsn_export.models.registry import load_model


def profile(model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int, prefix: Path) -> dict:
    """Per run: kernel ms and node count per op type, kernel total ms, unprofiled CPU ms."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    plain = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        plain.run(None, feed)
    start = time.process_time()
    for _ in range(runs):
        plain.run(None, feed)
    cpu_ms = 1e3 * (time.process_time() - start) / runs
    options.enable_profiling, options.profile_file_prefix = True, str(prefix)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    kernel_us: dict[str, float] = collections.defaultdict(float)
    nodes: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            kernel_us[op] += event["dur"]
            nodes[op] += 1
    ops = {op: {"ms": kernel_us[op] / runs / 1e3, "nodes": nodes[op] // runs}
           for op in sorted(kernel_us, key=kernel_us.get, reverse=True)}
    return {"ops": ops, "kernel_ms": sum(kernel_us.values()) / runs / 1e3, "nodes": sum(nodes.values()) // runs,
            "cpu_ms_unprofiled": cpu_ms}


def node_overhead_us(count: int = 500, repeats: int = 200) -> float:
    """Unprofiled CPU microseconds per node of a chain of ``count`` Reshapes of a 16-float tensor."""
    nodes = [helper.make_node("Reshape", ["x" if i == 0 else f"v{i - 1}", "shape"], [f"v{i}" if i < count - 1 else "y"])
             for i in range(count)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])],
                              [numpy_helper.from_array(np.array([16], np.int64), "shape")])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the chain
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
                                   .SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros(16, np.float32)}
    for _ in range(10):
        session.run(None, feed)
    start = time.process_time()
    for _ in range(repeats):
        session.run(None, feed)
    return 1e6 * (time.process_time() - start) / repeats / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist", help="built-in model name (default: mnist)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--runs", type=int, default=20, help="profiled (and unprofiled) runs per variant (default 20)")
    parser.add_argument("--traced", type=Path, default=None, help="an already traced score.onnx of --model")
    args = parser.parse_args()
    for value, flag in ((args.batch, "--batch"), (args.runs, "--runs")):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    spec = load_model(args.model)
    config = spec.scheduler_config
    shape = tuple(spec.sample_shape)
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], int(config["num_train_timesteps"]))
    rng = np.random.default_rng(0)
    feed = {"sample": rng.standard_normal((args.batch, *shape)).astype(np.float32),
            "timestep": np.full(args.batch, len(sigmas) // 2, np.int64)}
    result: dict = {"model": args.model, "batch": args.batch, "runs": args.runs, "variants": {}}
    with tempfile.TemporaryDirectory() as workdir:
        traced_path = args.traced or Path(workdir) / "score.onnx"
        if args.traced is None:
            export_score_onnx(spec.model, shape, traced_path, 18)
        traced = onnx.load(str(traced_path))
        for label in ("raw", "lean"):
            score = compose_graphs(traced, shape, sigmas, spec.final_denoise, keys=("score",), lean=label == "lean")["score"]
            network, _ = uniform_level(score)
            names = [value.name for value in network.graph.input]
            result["variants"][label] = profile(network, dict(zip(names, feed.values(), strict=True)), args.runs,
                                                Path(workdir) / label)
    result["node_overhead_us"] = node_overhead_us()
    print(f"{args.model}: network as the samplers run it, batch {args.batch}, 1 thread, {args.runs} runs (ms per run)")
    for label, row in result["variants"].items():
        print(f"  {label}: kernels {row['kernel_ms']:.1f} ms over {row['nodes']} nodes (profiled); "
              f"unprofiled run {row['cpu_ms_unprofiled']:.1f} ms CPU")
        for op, cell in row["ops"].items():
            print(f"    {op:<24} {cell['ms']:8.2f} ms  {cell['nodes']:5d} nodes")
    print(f"  a node outside its kernel (500 Reshapes, unprofiled): {result['node_overhead_us']:.2f} us")
    print(f"saved {save_stamped_result(f'profile_lean-{args.model}', 'profile_lean.py', {'result': result})}")


if __name__ == "__main__":
    main()
