"""Graph passes on the traced score network (applied before composing the graph family).

* :func:`compact_names`: short value / node names, no per-node metadata (the graphs' own bytes, repeated by
  every graph of the family, shrink about 2x once the weights live in the shared file).

* :func:`rewrite_elu`: onnxruntime's CPU ``Elu`` kernel is 2.3x slower than the same function from
  elementwise kernels (``bench/bench_loop.py`` measures it). For ``alpha <= 1``, ``Elu(x, alpha)``
  becomes ``Max(x, alpha * (Exp(Min(x, 0)) - 1))`` (4 kernels; ``alpha * (e**x - 1) >= x`` for every
  ``x <= 0`` when ``alpha <= 1``, and the second operand is exactly 0 for ``x > 0``); otherwise
  ``Relu(x) + alpha * (Exp(Min(x, 0)) - 1)``. Both equal ``x`` exactly for ``x > 0`` and differ from
  the kernel by float32 rounding (<= 6e-8 measured) for ``x <= 0``. ``Min(x, 0)`` is written
  ``Clip(x, max=0)`` (opset >= 11; the same values): onnxruntime's unary ``Clip`` kernel is faster than the
  broadcasting ``Min`` (default model, B=16, 1 thread, ``bench/profile_lean.py``: the 61 Clips 1.40 / 1.55 ms a
  call raw / lean, the 61 Mins 1.97 / 1.79 in the run before).
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
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)

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
            helper.make_node("Clip", [x, "", zero], [f"{tag}/neg"], name=f"{tag}/Clip") if opset >= 11
            else helper.make_node("Min", [x, zero], [f"{tag}/neg"], name=f"{tag}/Min"),
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


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with short value and node names, no ``value_info`` and no per-node metadata or doc strings.

    The dynamo exporter's names (``val_1234``, ``node_convolution_12``) and each node's ``metadata_props``
    (source stack, namespace) are most of a graph's bytes once the weights are external data; every graph of
    the family repeats them. Values become ``v<base36>``, nodes ``<base36>``; the graph's inputs and outputs keep
    their names. One global mapping covers every scope, so subgraph references stay consistent. Initializer
    contents (or their external-data references) are untouched.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names: dict[str, str] = {value.name: value.name for value in (*graph.input, *graph.output)}

    def rename(name: str) -> str:
        if not name:
            return name
        if name not in names:
            names[name] = f"v{_base36(len(names))}"
        return names[name]

    counter = iter(range(1 << 62))

    def visit(g: onnx.GraphProto) -> None:
        del g.value_info[:]  # intermediate shape annotations: onnxruntime and onnx shape inference derive them again
        for values in (g.input, g.output):
            for value in values:
                value.name = rename(value.name)
        for tensor in g.initializer:
            tensor.name = rename(tensor.name)
            tensor.ClearField("doc_string")
        for sparse in g.sparse_initializer:
            sparse.values.name = rename(sparse.values.name)
        for node in g.node:
            node.input[:] = [rename(name) for name in node.input]
            node.output[:] = [rename(name) for name in node.output]
            node.name = _base36(next(counter))
            node.ClearField("doc_string")
            del node.metadata_props[:]
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g)
                for subgraph in attribute.graphs:
                    visit(subgraph)

    visit(graph)
    return out
