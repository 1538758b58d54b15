"""Fixed-shape score network for phone accelerators (Android NNAPI, Apple Core ML): :func:`mobile_score`.

NNAPI takes only static shapes, and neither NNAPI nor Core ML (MLProgram) has ``InstanceNormalization`` in
both lists, ``Gather`` (Core ML) or ``Min`` (Core ML) (``onnxruntime/tools/mobile_helpers/*.md``, read by
:mod:`.mobile_usability`). Starting from the lean traced network (:func:`.lean_graph.lean_graph`, ``Elu`` left
as ``Elu``, which both take), the passes below give a graph whose every node is in both lists:

1. **Fixed shapes.** The batch axis of ``sample`` / ``timestep`` is set to ``B`` and onnxscript's optimizer
   folds the shape arithmetic (Shape, Expand, Range, Concat of shapes) into constants.
2. **The level lookup becomes a one-hot MatMul.** Every value computed from ``timestep`` and constants alone
   (the *level cone*: the per-layer ``Gather`` of the gamma/alpha/beta tables, the sigma lookup, a UNet's
   sinusoidal embedding and its MLP) is tabulated for the ``L`` trained levels by running that cone with
   onnxruntime once per level; each value where the cone meets the sample (stopping before multi-output nodes,
   so one table feeds one ``Split``) becomes ``Reshape(MatMul(level_onehot f32[B, L], table f32[L, K]))``.
   The product of an exact one-hot row with the table is the table row bit for bit.
3. **Instance norm in elementwise ops.** ``InstanceNormalization(x, scale, bias, eps)`` becomes
   ``d = x - ReduceMean(x); y = d * (scale / Sqrt(ReduceMean(d * d) + eps)) + bias`` over the spatial axes
   (the kernel's own math; float32 rounding differs by ~1e-7 relative; :func:`decompose_instance_norm`).
4. **Uneven Split into Slices** (NNAPI's Split needs equal parts), then the optimizer again (folding the
   reshaped constants, dropping dead nodes).
5. **Resize with a named empty ``roi`` and constant ``scales``** (:func:`resize_with_scales`); ``Neg`` and
   ``ReduceSum`` in ops both EPs take (:func:`portable_ops`).

The result: ``sample f32[B, *sample_shape], level_onehot f32[B, L] -> score f32[B, *sample_shape]``.
Anything that cannot be fixed (a cone value without the batch as its first axis, rows that differ for equal
levels) raises :class:`MobileGraphError` naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper, shape_inference

logger = logging.getLogger("ncsn_export")

ONEHOT_INPUT = "level_onehot"
_DEFAULT_DOMAINS = ("", "ai.onnx")


class MobileGraphError(RuntimeError):
    """The network cannot be brought into the fixed-shape, accelerator-only form (the message says where)."""


@dataclass
class MobileRewrites:
    """What :func:`mobile_score` changed (for the log and the manifest)."""

    nodes_before: int = 0
    nodes_after: int = 0
    level_tables: int = 0  # values of the level cone replaced by a one-hot MatMul
    level_cone_nodes: int = 0  # nodes of the level cone removed
    instance_norms: int = 0
    splits: int = 0
    resizes: int = 0
    portable: int = 0  # Neg / ReduceSum rewritten (portable_ops)
    table_bytes: int = 0
    ops: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {**{name: getattr(self, name) for name in ("nodes_before", "nodes_after", "level_tables",
                                                          "level_cone_nodes", "instance_norms", "splits", "resizes",
                                                          "portable", "table_bytes")},
                "ops": dict(sorted(self.ops.items()))}


def _fix_input_dims(model: onnx.ModelProto, batch: int) -> None:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].Clear()
            dims[0].dim_value = batch
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].Clear()
            dims[0].dim_value = batch
    del model.graph.value_info[:]


def fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's optimizer (constant folding with the now fixed shapes, dead-code elimination)."""
    import onnxscript.optimizer

    return onnxscript.optimizer.optimize(model, num_iterations=2)


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {tensor.name for tensor in graph.initializer}
    names.update(node.output[0] for node in graph.node if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS)
    return names


def level_cone(graph: onnx.GraphProto, source: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """The nodes computed from ``source`` and constants alone (in graph order) and the cone's values read by
    nodes outside it (or by the graph's outputs): the *frontier*. Nodes with more than one output end the cone
    (their input is then on the frontier), so a table feeding a ``Split`` stays one table."""
    inside = {source} | _constant_names(graph)
    depends = {source}
    cone: list[onnx.NodeProto] = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if (len(node.output) == 1 and inputs and all(name in inside for name in inputs)
                and any(name in depends for name in inputs) and not any(a.type == a.GRAPH for a in node.attribute)):
            cone.append(node)
            inside.add(node.output[0])
            depends.add(node.output[0])
    produced = {node.output[0] for node in cone}
    members = {id(node) for node in cone}
    frontier: list[str] = []
    for node in graph.node:
        if id(node) in members:
            continue
        for name in node.input:
            if name in produced and name not in frontier:
                frontier.append(name)
    for value in graph.output:
        if value.name in produced and value.name not in frontier:
            frontier.append(value.name)
    return cone, frontier


def tabulate_levels(model: onnx.ModelProto, source: str, batch: int, num_levels: int,
                    rewrites: MobileRewrites) -> onnx.ModelProto:
    """Replace the level cone of input ``source`` (int64 [B]) by one-hot MatMuls (see the module docstring)."""
    import onnxruntime as ort

    graph = model.graph
    cone, frontier = level_cone(graph, source)
    if not frontier:
        raise MobileGraphError(f"the network never reads `{source}`: nothing to tabulate")
    cone_ids = {id(node) for node in cone}
    direct = [node.op_type for node in graph.node if id(node) not in cone_ids and source in node.input]
    if direct:
        raise MobileGraphError(f"`{source}` is read directly by {', '.join(sorted(set(direct)))} next to the sample: "
                               "only values computed from the level alone can become one-hot lookups")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    read = {name for node in cone for name in node.input}
    constants = [node for node in graph.node if node.op_type == "Constant" and node.output[0] in read]
    del probe.graph.node[:]
    probe.graph.node.extend([*constants, *cone])
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in frontier)
    kept = [value for value in probe.graph.input if value.name == source]
    del probe.graph.input[:]
    probe.graph.input.extend(kept)
    used = [tensor for tensor in probe.graph.initializer if tensor.name in read]  # not the network's weights
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(used)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the kernels the network runs
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    per_level = [session.run(frontier, {source: np.full(batch, level, dtype=np.int64)}) for level in range(num_levels)]
    tables: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}
    for index, name in enumerate(frontier):
        values = [outputs[index] for outputs in per_level]
        shape = values[0].shape
        if not shape or shape[0] != batch:
            raise MobileGraphError(f"level-dependent value {name!r} has shape {list(shape)}, not [B={batch}, ...]: "
                                   "it cannot become a per-sample one-hot lookup")
        rows = np.stack([value[0] for value in values])  # [L, ...]
        for level, value in enumerate(values):
            if not np.array_equal(value, np.broadcast_to(value[0], value.shape)):
                raise MobileGraphError(f"level-dependent value {name!r} differs across samples of equal level {level}")
        tables[name] = (rows.reshape(num_levels, -1).astype(values[0].dtype), tuple(shape[1:]))
    replacement: list[onnx.NodeProto] = []
    onehots = {np.dtype(np.float32): ONEHOT_INPUT}  # a float16 network (--fp16) reads a cast one-hot (exact)
    for name, (table, rest) in tables.items():
        if table.dtype not in (np.float32, np.float16):
            raise MobileGraphError(f"level-dependent value {name!r} is {table.dtype}, not float32 or float16")
        if table.dtype not in onehots:
            onehots[table.dtype] = f"{ONEHOT_INPUT}/{table.dtype}"
            replacement.append(helper.make_node("Cast", [ONEHOT_INPUT], [onehots[table.dtype]],
                                                to=helper.np_dtype_to_tensor_dtype(table.dtype)))
        table_name, product, shape_name = f"mobile/table/{name}", f"mobile/onehot_mm/{name}", f"mobile/shape/{name}"
        graph.initializer.append(numpy_helper.from_array(table, table_name))
        graph.initializer.append(numpy_helper.from_array(np.asarray([batch, *rest], dtype=np.int64), shape_name))
        replacement.append(helper.make_node("MatMul", [onehots[table.dtype], table_name], [product],
                                            name=f"mobile/MatMul/{name}"))
        replacement.append(helper.make_node("Reshape", [product, shape_name], [name], name=f"mobile/Reshape/{name}"))
        rewrites.table_bytes += table.nbytes
    nodes = replacement + [node for node in graph.node if id(node) not in cone_ids]
    del graph.node[:]
    graph.node.extend(nodes)
    for value in graph.input:
        if value.name == source:
            value.name = ONEHOT_INPUT
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            dims = value.type.tensor_type.shape
            dims.Clear()
            dims.dim.add().dim_value = batch
            dims.dim.add().dim_value = num_levels
    rewrites.level_tables += len(tables)
    rewrites.level_cone_nodes += len(cone)
    return model


def _value_types(model: onnx.ModelProto) -> tuple[dict[str, list[int]], dict[str, np.dtype]]:
    """Static shapes and numpy dtypes of ``model``'s values (onnx shape inference)."""
    inferred = shape_inference.infer_shapes(model).graph
    values = [value for value in (*inferred.input, *inferred.value_info, *inferred.output)
              if value.type.tensor_type.HasField("shape")]
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim] for value in values}
    dtypes = {value.name: helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type) for value in values
              if value.type.tensor_type.elem_type}
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
        dtypes[tensor.name] = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    return shapes, dtypes


def _attribute(node: onnx.NodeProto, name: str, default: float) -> float:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def decompose_instance_norm(model: onnx.ModelProto, rewrites: MobileRewrites) -> onnx.ModelProto:
    """Every ``InstanceNormalization`` as ReduceMean / Sub / Mul / Add / Sqrt / Div (needs ranks: shapes fixed).

    ``y = d * (scale / Sqrt(ReduceMean(d * d) + eps)) + bias`` with ``d = x - ReduceMean(x)``: the per-channel factor
    is computed on the small ``[.., C, 1, 1]`` tensors, so four full-size ops remain (Sub, Mul, Mul, Add). A constant
    all-ones scale becomes one ``Div(d, std)``, a constant all-zeros bias no ``Add``; a scale or bias made by a
    ``Reshape`` read only here is reshaped from its source directly (the flattening Reshape then dies).
    """
    graph = model.graph
    shapes, dtypes = _value_types(model)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    def constant(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(constants[name]) if name in constants else None

    def source(name: str) -> str:
        producer = producers.get(name)
        if producer is not None and producer.op_type == "Reshape" and readers.get(name) == 1:
            return producer.input[0]
        return name

    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if node.op_type != "InstanceNormalization" or node.domain not in _DEFAULT_DOMAINS:
            nodes.append(node)
            continue
        x, scale, bias = node.input
        rank = len(shapes[x]) if x in shapes else None
        if rank is None or rank < 3:
            raise MobileGraphError(f"InstanceNormalization {node.name!r}: input {x!r} has unknown rank {rank}")
        tag = f"mobile/in_{index}"
        axes, param_shape, eps = f"{tag}/axes", f"{tag}/param_shape", f"{tag}/eps"
        graph.initializer.extend([
            numpy_helper.from_array(np.arange(2, rank, dtype=np.int64), axes),
            numpy_helper.from_array(np.asarray([-1] + [1] * (rank - 2), dtype=np.int64), param_shape),
            numpy_helper.from_array(np.asarray(_attribute(node, "epsilon", 1e-5), dtype=dtypes.get(x, np.float32)), eps),
        ])
        nodes += [
            helper.make_node("ReduceMean", [x, axes], [f"{tag}/mean"], keepdims=1),
            helper.make_node("Sub", [x, f"{tag}/mean"], [f"{tag}/d"]),
            helper.make_node("Mul", [f"{tag}/d", f"{tag}/d"], [f"{tag}/d2"]),
            helper.make_node("ReduceMean", [f"{tag}/d2", axes], [f"{tag}/var"], keepdims=1),
            helper.make_node("Add", [f"{tag}/var", eps], [f"{tag}/var_eps"]),
            helper.make_node("Sqrt", [f"{tag}/var_eps"], [f"{tag}/std"]),
        ]
        scale_value, bias_value = constant(scale), constant(bias)
        zero_bias = bias_value is not None and not np.any(bias_value)
        scaled = node.output[0] if zero_bias else f"{tag}/scaled"
        if scale_value is not None and np.all(scale_value == 1):
            nodes.append(helper.make_node("Div", [f"{tag}/d", f"{tag}/std"], [scaled]))
        else:
            nodes += [helper.make_node("Reshape", [source(scale), param_shape], [f"{tag}/scale"]),
                      helper.make_node("Div", [f"{tag}/scale", f"{tag}/std"], [f"{tag}/factor"]),
                      helper.make_node("Mul", [f"{tag}/d", f"{tag}/factor"], [scaled])]
        if not zero_bias:
            nodes += [helper.make_node("Reshape", [source(bias), param_shape], [f"{tag}/bias"]),
                      helper.make_node("Add", [scaled, f"{tag}/bias"], [node.output[0]])]
        rewrites.instance_norms += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def split_to_slices(model: onnx.ModelProto, rewrites: MobileRewrites) -> onnx.ModelProto:
    """``Split`` with constant, unequal sizes -> one ``Slice`` per output (NNAPI's Split takes only equal parts)."""
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        sizes = (numpy_helper.to_array(constants[node.input[1]]).tolist()
                 if node.op_type == "Split" and node.domain in _DEFAULT_DOMAINS and len(node.input) > 1
                 and node.input[1] in constants else None)
        if sizes is None or len(set(sizes)) <= 1:
            nodes.append(node)
            continue
        axis = int(_attribute(node, "axis", 0))
        tag = f"mobile/split_{index}"
        graph.initializer.append(numpy_helper.from_array(np.asarray([axis], dtype=np.int64), f"{tag}/axis"))
        start = 0
        for part, (size, output) in enumerate(zip(sizes, node.output, strict=True)):
            starts, ends = f"{tag}/start_{part}", f"{tag}/end_{part}"
            graph.initializer.extend([numpy_helper.from_array(np.asarray([start], dtype=np.int64), starts),
                                      numpy_helper.from_array(np.asarray([start + size], dtype=np.int64), ends)])
            if output:
                nodes.append(helper.make_node("Slice", [node.input[0], starts, ends, f"{tag}/axis"], [output]))
            start += size
        rewrites.splits += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def resize_with_scales(model: onnx.ModelProto, rewrites: MobileRewrites) -> onnx.ModelProto:
    """``Resize`` with an empty optional input (``roi``; ``scales`` when ``sizes`` is given) -> ``Resize(x, roi=f32[0],
    scales)``. ``sizes`` becomes ``scales`` when every output size is an integer multiple of the input size (then
    ``floor(in * scale)`` is exact); ``scales`` given as a constant stays. The result is the same; an empty optional
    input reads as a dynamic shape to onnxruntime's usability checker, and Core ML's Resize builder takes ``scales``
    only when ``sizes`` is absent."""
    graph = model.graph
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim]
              for value in (*inferred.input, *inferred.value_info, *inferred.output)
              if value.type.tensor_type.HasField("shape")}
    constants = {tensor.name: tensor for tensor in graph.initializer}
    for index, node in enumerate(graph.node):
        if node.op_type != "Resize" or node.domain not in _DEFAULT_DOMAINS or node.input[1:2] != [""]:
            continue
        inputs = list(node.input) + [""] * (4 - len(node.input))
        roi, scales = f"mobile/resize_{index}/roi", f"mobile/resize_{index}/scales"
        if inputs[2] in constants and not inputs[3]:
            scales = inputs[2]
        elif not inputs[2] and inputs[3] in constants:
            sizes = numpy_helper.to_array(constants[inputs[3]]).tolist()
            before = shapes.get(inputs[0], [])
            if (len(before) != len(sizes) or not all(before)
                    or any(out % size for out, size in zip(sizes, before, strict=True))):
                continue
            graph.initializer.append(numpy_helper.from_array(
                np.asarray([out // size for out, size in zip(sizes, before, strict=True)], dtype=np.float32), scales))
        else:
            continue
        graph.initializer.append(numpy_helper.from_array(np.zeros(0, dtype=np.float32), roi))
        node.input[:] = [inputs[0], roi, scales]
        rewrites.resizes += 1
    return model


def portable_ops(model: onnx.ModelProto, rewrites: MobileRewrites) -> onnx.ModelProto:
    """Ops one of the two EPs lacks, in ops both take: ``Neg(x)`` -> ``Mul(x, -1)`` (exact; Core ML has no Neg) and
    ``ReduceSum(x, axes)`` -> ``Mul(ReduceMean(x, axes), n)`` with ``n`` the static count of reduced elements (NNAPI
    has no ReduceSum; float32 rounding ~1e-7 relative). A ReduceSum whose axes or shape are not constant stays."""
    graph = model.graph
    shapes, dtypes = _value_types(model)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        tag = f"mobile/portable_{index}"
        dtype = dtypes.get(node.input[0], np.float32) if node.input else np.float32
        if node.op_type == "Neg" and node.domain in _DEFAULT_DOMAINS:
            graph.initializer.append(numpy_helper.from_array(np.asarray(-1.0, dtype=dtype), f"{tag}/minus_one"))
            nodes.append(helper.make_node("Mul", [node.input[0], f"{tag}/minus_one"], list(node.output)))
            rewrites.portable += 1
            continue
        shape = shapes.get(node.input[0]) if node.input else None
        if (node.op_type == "ReduceSum" and node.domain in _DEFAULT_DOMAINS and shape and all(shape)
                and not _attribute(node, "noop_with_empty_axes", 0)
                and (len(node.input) == 1 or node.input[1] in constants)):
            axes = (numpy_helper.to_array(constants[node.input[1]]).tolist() if len(node.input) > 1
                    else list(range(len(shape))))
            count = int(np.prod([shape[axis] for axis in axes])) if axes else int(np.prod(shape))
            graph.initializer.append(numpy_helper.from_array(np.asarray(float(count), dtype=dtype), f"{tag}/count"))
            keepdims = int(_attribute(node, "keepdims", 1))
            nodes += [helper.make_node("ReduceMean", list(node.input), [f"{tag}/mean"], keepdims=keepdims),
                      helper.make_node("Mul", [f"{tag}/mean", f"{tag}/count"], list(node.output))]
            rewrites.portable += 1
            continue
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def load_inline(model: onnx.ModelProto, base_dir: str | os.PathLike | None) -> onnx.ModelProto:
    """A copy of ``model`` with its external-data initializers read into memory from ``base_dir``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if base_dir is not None:
        external_data_helper.load_external_data_for_model(out, os.fspath(base_dir))
    return out


def mobile_score(score: onnx.ModelProto, batch: int, num_levels: int,
                 base_dir: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, MobileRewrites]:
    """The fixed-shape accelerator form of the lean score network (see the module docstring).

    Args:
        score: ``sample f32[B, ...], timestep i64[B] -> score f32[B, ...]`` (the lean traced network, ``Elu`` kept).
        batch: the fixed batch ``B``.
        num_levels: ``L``, the trained levels (the one-hot width).
        base_dir: the folder of ``score``'s external-data weights (None: inline). The result holds every weight inline.

    Returns:
        ``(model, rewrites)``: ``sample f32[B, ...], level_onehot f32[B, L] -> score f32[B, ...]``, weights inline.
    """
    rewrites = MobileRewrites(nodes_before=len(score.graph.node))
    model = load_inline(score, base_dir)
    if len(model.graph.input) != 2:
        raise MobileGraphError(f"the score graph must have 2 inputs (sample, timestep), got {len(model.graph.input)}")
    _fix_input_dims(model, batch)
    model = fold(model)
    timestep = model.graph.input[1].name
    model = tabulate_levels(model, timestep, batch, num_levels, rewrites)
    model = decompose_instance_norm(model, rewrites)
    model = split_to_slices(model, rewrites)
    model = fold(model)
    model = resize_with_scales(model, rewrites)
    model = portable_ops(model, rewrites)
    rewrites.nodes_after = len(model.graph.node)
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    rewrites.ops = counts
    check_static(model)
    return model, rewrites


def check_static(model: onnx.ModelProto) -> None:
    """Raise :class:`MobileGraphError` unless onnx shape inference gives every value a fully static shape."""
    inferred = shape_inference.infer_shapes(model, strict_mode=True).graph
    known = {value.name: value for value in (*inferred.input, *inferred.value_info, *inferred.output)}
    for node in model.graph.node:
        for name in node.output:
            value = known.get(name)
            dims = value.type.tensor_type.shape.dim if value is not None and value.type.tensor_type.HasField("shape") else None
            if dims is None or any(not dim.HasField("dim_value") for dim in dims):
                raise MobileGraphError(f"{node.op_type} node {node.name!r}: output {name!r} has no static shape")


def used_ops(model: onnx.ModelProto) -> Sequence[str]:
    """The distinct ``domain:op`` names of ``model``'s main graph, sorted."""
    return sorted({f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in model.graph.node})
