"""Graph passes on the traced score network (applied before composing the graph family).

* :func:`rewrite_elu`: onnxruntime's CPU ``Elu`` kernel is 2.3x slower than the same function from
  elementwise kernels (``bench/bench_loop.py`` measures it). For ``alpha <= 1``, ``Elu(x, alpha)``
  becomes ``Max(x, alpha * (Exp(Min(x, 0)) - 1))`` (4 kernels; ``alpha * (e**x - 1) >= x`` for every
  ``x <= 0`` when ``alpha <= 1``, and the second operand is exactly 0 for ``x > 0``); otherwise
  ``Relu(x) + alpha * (Exp(Min(x, 0)) - 1)``. Both equal ``x`` exactly for ``x > 0`` and differ from
  the kernel by float32 rounding (<= 6e-8 measured) for ``x <= 0``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

_NUMPY_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.DOUBLE: np.float64}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {value.name: value.type.tensor_type.elem_type for value in (*graph.input, *graph.value_info, *graph.output)}
    types.update({initializer.name: initializer.data_type for initializer in graph.initializer})
    return types


def rewrite_elu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every top-level ``Elu`` of known float dtype rewritten; returns (model, count)."""
    types = _elem_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes: list[onnx.NodeProto] = []
    constants: dict[tuple[int, float], str] = {}

    def constant(elem_type: int, value: float) -> str:
        key = (elem_type, value)
        if key not in constants:
            name = f"elu_rewrite/const_{len(constants)}"
            graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=_NUMPY_TYPES[elem_type]), name))
            constants[key] = name
        return constants[key]

    count = 0
    for index, node in enumerate(graph.node):
        elem_type = types.get(node.input[0]) if node.op_type == "Elu" and node.domain in ("", "ai.onnx") else None
        if elem_type not in _NUMPY_TYPES:
            nodes.append(node)
            continue
        alpha = next((attribute.f for attribute in node.attribute if attribute.name == "alpha"), 1.0)
        x, y, tag = node.input[0], node.output[0], f"elu_rewrite/{index}"
        zero, one = constant(elem_type, 0.0), constant(elem_type, 1.0)
        nodes += [
            helper.make_node("Min", [x, zero], [f"{tag}/neg"], name=f"{tag}/Min"),
            helper.make_node("Exp", [f"{tag}/neg"], [f"{tag}/exp"], name=f"{tag}/Exp"),
            helper.make_node("Sub", [f"{tag}/exp", one], [f"{tag}/expm1"], name=f"{tag}/Sub"),
        ]
        negative = f"{tag}/expm1"
        if alpha != 1.0:
            nodes.append(helper.make_node("Mul", [negative, constant(elem_type, alpha)], [f"{tag}/scaled"], name=f"{tag}/Mul"))
            negative = f"{tag}/scaled"
        if alpha <= 1.0:
            nodes.append(helper.make_node("Max", [x, negative], [y], name=f"{tag}/Max"))
        else:
            nodes += [helper.make_node("Relu", [x], [f"{tag}/relu"], name=f"{tag}/Relu"),
                      helper.make_node("Add", [f"{tag}/relu", negative], [y], name=f"{tag}/Add")]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return out, count
