"""Loop-invariant code motion for ONNX ``Loop`` bodies: :func:`hoist_loop_invariants`.

onnxruntime runs every node of a ``Loop`` body on every iteration. In the samplers the network's level-only
nodes (the per-level lookups of :func:`.lean_graph.uniform_level`: ``Gather`` / ``Split`` / ``Reshape`` of the
level tables) read only values of the enclosing graph, which do not change while the inner (step) loop runs.
This pass moves such nodes in front of their ``Loop``, into the enclosing graph, innermost loop first, so
nested loops lift them as far as they go. The result is the same computation, done once per entry of the loop.

A node moves when it has no subgraph, is deterministic (no ``Random*``), every input is an outer value, a
moved node's output or a body initializer, and at least one input is not a constant (constant-only nodes are
left for onnxruntime's constant folding). Body initializers it reads move with it (or are copied out, when
nodes that stay read them too). Conv weights never move: their readers depend on the loop state (and
onnxruntime's NCHWc layout needs them inside the body, see :mod:`.compose`).
"""

from __future__ import annotations

import onnx

_UNMOVABLE = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attribute in node.attribute)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs: list[onnx.GraphProto] = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        graphs.extend(attribute.graphs)
    return graphs


def _reads(graph: onnx.GraphProto) -> list[str]:
    """Every name the nodes of ``graph`` (and their subgraphs) read."""
    return [name for node in graph.node for name in _node_reads(node)]


def _invariant(body: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes of ``body`` that read only outer values, initializers and moved nodes' outputs (not only constants)."""
    local = {value.name for value in body.input} | {name for node in body.node for name in node.output}
    initializers = {tensor.name for tensor in body.initializer}
    constant = set(initializers)
    moved: list[onnx.NodeProto] = []
    moved_values: set[str] = set()
    for node in body.node:
        if _has_subgraph(node) or node.op_type in _UNMOVABLE or node.domain not in ("", "ai.onnx"):
            continue
        inputs = [name for name in node.input if name]
        if all(name in constant for name in inputs):
            constant.update(node.output)  # constant-only: left to onnxruntime's constant folding
            continue
        if all(name in moved_values or name in initializers or name not in local for name in inputs):
            moved.append(node)
            moved_values.update(node.output)
    return moved


def _hoist_body(body: onnx.GraphProto) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Remove the invariant nodes of ``body``; return them, in order, with the initializers they read.

    An initializer read only by moved nodes moves; one also read by a node that stays is copied out under
    the name ``NAME/hoisted`` (small: shapes and axes, never a Conv weight, whose reader stays)."""
    moved = _invariant(body)
    if not moved:
        return [], []
    moved_ids = {id(node) for node in moved}
    staying_reads = {name for node in body.node if id(node) not in moved_ids for name in _node_reads(node)}
    staying_reads |= {value.name for value in body.output}
    wanted = {name for node in moved for name in node.input}
    outer: list[onnx.TensorProto] = []
    renamed: dict[str, str] = {}
    for tensor in body.initializer:
        if tensor.name in wanted:
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            if tensor.name in staying_reads:
                copy.name = renamed[tensor.name] = f"{tensor.name}/hoisted"
            outer.append(copy)
    for node in moved:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    remaining = [node for node in body.node if id(node) not in moved_ids]
    del body.node[:]
    body.node.extend(remaining)
    kept = [tensor for tensor in body.initializer if tensor.name not in wanted or tensor.name in renamed]
    del body.initializer[:]
    body.initializer.extend(kept)
    moved_outputs = {name for node in moved for name in node.output}
    value_info = [value for value in body.value_info if value.name not in moved_outputs]
    del body.value_info[:]
    body.value_info.extend(value_info)
    return moved, outer


def _node_reads(node: onnx.NodeProto) -> list[str]:
    """The names ``node`` reads, its subgraphs' reads included."""
    names = list(node.input)
    for subgraph in _subgraphs(node):
        names.extend(_reads(subgraph))
    return names


def _hoist_graph(graph: onnx.GraphProto) -> int:
    """Hoist out of every ``Loop`` of ``graph`` (innermost first); returns the number of nodes moved."""
    count = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for subgraph in _subgraphs(node):
            count += _hoist_graph(subgraph)
        if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
            body = _subgraphs(node)[0]
            moved, initializers = _hoist_body(body)
            nodes.extend(moved)
            graph.initializer.extend(initializers)
            count += len(moved)
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def hoist_loop_invariants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with loop-invariant nodes moved out of its ``Loop`` bodies; returns (model, nodes moved)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    count = _hoist_graph(out.graph)
    return (out, count) if count else (model, 0)
