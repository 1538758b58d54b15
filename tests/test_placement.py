"""Placement audit (ncsn_export.exporters.placement): op/dtype pairs without an onnxruntime kernel per EP."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ncsn_export.exporters.placement import PROVIDERS, format_placement, kernel_table, unsupported_ops


def _binary_model(op: str, dtype: int, opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["c"])], "g",
        [helper.make_tensor_value_info("a", dtype, [4]), helper.make_tensor_value_info("b", dtype, [4])],
        [helper.make_tensor_value_info("c", dtype, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _loop_model(body_op: str, dtype: int) -> onnx.ModelProto:
    """A Loop whose body applies ``body_op`` to an int state: the audit must see inside the body."""
    body = helper.make_graph(
        [helper.make_node(body_op, ["x_in", "x_in"], ["x_out"]), helper.make_node("Not", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), helper.make_tensor_value_info("x_in", dtype, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", dtype, [4])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "cond", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("n", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", dtype, [4])],
        [helper.make_tensor_value_info("y", dtype, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_bitwise_and_int64_has_no_cuda_kernel():
    report = unsupported_ops(_binary_model("BitwiseAnd", TensorProto.INT64))
    assert set(report) == set(PROVIDERS)
    assert report["cuda"] == ["BitwiseAnd(int64)"]
    assert report["cpu"] == []
    assert report["webgpu"] == ["BitwiseAnd(int64)"]


def test_dtype_matters_not_only_the_op():
    assert unsupported_ops(_binary_model("Add", TensorProto.FLOAT)) == {"cpu": [], "cuda": [], "webgpu": []}
    report = unsupported_ops(_binary_model("Add", TensorProto.INT64))
    assert report["cuda"] == [] and report["webgpu"] == ["Add(int64)"]  # WebGPU: no int64 arithmetic
    assert unsupported_ops(_binary_model("Mul", TensorProto.DOUBLE))["webgpu"] == ["Mul(double)"]


def test_loop_bodies_are_walked():
    report = unsupported_ops(_loop_model("BitwiseXor", TensorProto.INT64))
    assert report["cuda"] == ["BitwiseXor(int64)"]
    assert report["cpu"] == []
    assert report["webgpu"] == ["BitwiseXor(int64)", "Loop"]


def test_kernel_table_names_its_sources():
    table = kernel_table()
    assert set(table["providers"]) == set(PROVIDERS)
    assert "onnxruntime" in table["sources"]["cpu"] and "OperatorKernels.md" in table["sources"]["cuda"]
    assert "BitwiseAnd" in table["providers"]["cpu"] and "BitwiseAnd" not in table["providers"]["cuda"]
    assert "Loop" not in table["providers"]["webgpu"]


def test_format_placement_table():
    text = format_placement({"step": {"cpu": [], "cuda": ["BitwiseAnd(int64)", "BitwiseXor(int64)"], "webgpu": ["Loop"]},
                             "gpu_step": {"cpu": [], "cuda": [], "webgpu": []}})
    lines = text.splitlines()
    assert lines[0].split()[0] == "graph" and "no kernel on cuda" in lines[0]
    step = next(line for line in lines if line.startswith("step "))
    assert "BitwiseAnd(int64), BitwiseXor(int64)" in step and "Loop" in step
    gpu_step = next(line for line in lines if line.startswith("gpu_step"))
    assert gpu_step.split()[1:] == ["-", "-", "-"]
    assert "kernel table:" in lines[-1]


# -- the composed GPU graphs (A1's compose) must stay on CUDA ---------------------------------------------------------
@pytest.fixture(scope="module", params=["toy-gmm", "tiny-conv"])
def composed(request):
    """gpu_step / gpu_sampler / step / sampler composed from an exported score graph."""
    compose = pytest.importorskip("ncsn_export.exporters.compose", reason="the graph composer is not merged yet")
    from host_exports import build_export
    from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler

    export = build_export(request.param)
    manifest = json.loads((export / "manifest.json").read_text())
    scheduler = AnnealedLangevinDynamicsScheduler.from_pretrained(export / "scheduler" / "scheduler_config.json")
    graphs = compose.compose_graphs(
        onnx.load(export / "score.onnx"), manifest["model"]["sample_shape"], np.asarray(scheduler.train_sigmas, np.float32),
        bool(manifest["model"].get("final_denoise", False)), keys=("score", "step", "sampler", "gpu_step", "gpu_sampler"))
    return request.param, graphs


def test_gpu_graphs_have_a_cuda_kernel_for_every_node(composed):
    name, graphs = composed
    for key in ("gpu_step", "gpu_sampler"):
        report = unsupported_ops(graphs[key])
        assert report["cuda"] == [], f"{name} {key}.onnx gained ops without a CUDA kernel: {report['cuda']}"
        assert report["cpu"] == []
    # the audit does see the CPU-only noise of the bitwise graphs, so an empty list above means something
    assert any(label.startswith("BitwiseAnd(") for label in unsupported_ops(graphs["step"])["cuda"])


def test_gpu_step_has_no_control_flow_bitwise_or_float64(composed):
    name, graphs = composed
    report = unsupported_ops(graphs["gpu_step"])
    assert not [label for label in report["webgpu"] if label.startswith(("Loop", "If", "Bitwise")) or "double" in label], \
        f"{name} gpu_step.onnx: {report['webgpu']}"


def test_cli_prints_the_table_of_an_export(capsys):
    from host_exports import build_export

    from ncsn_export.exporters.placement import main

    assert main([str(build_export("toy-gmm"))]) == 0
    lines = capsys.readouterr().out.splitlines()
    step = next(line for line in lines if line.startswith("step "))
    assert "BitwiseAnd(" in step and "BitwiseXor(" in step
    score = next(line for line in lines if line.startswith("score "))
    assert score.split()[1:3] == ["-", "-"]
