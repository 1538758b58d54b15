"""A leaner traced score network: :func:`lean_graph`, applied once before the graph family is composed.

onnxscript's optimizer (run by the trace, :mod:`.onnx_optimize`) and onnxruntime's offline basic
optimization leave most of the traced conditional instance norm++ in place: its shape arithmetic hangs
off the symbolic batch axis, so constant folding cannot remove it (2104 nodes on the default RefineNet,
1717 after onnxruntime's basic level). These passes rewrite the exact patterns the trace produces;
a pattern that does not match in every detail (ops, constant axes, single consumers) is left untouched.

* :func:`fuse_instance_norm_plus`: the 26 nodes of one ``y = gamma*(IN(x) + alpha*m~) + beta``
  (``m~``: the channel means of ``x`` standardised across channels with the unbiased variance,
  re-broadcast through a Shape/Reshape/Concat/Expand chain) become 10, all of static shape::

      means = ReduceMean(x, [2, 3], keepdims=1)                               f32[B, C, 1, 1]
      m     = InstanceNormalization(Reshape(means, [0, 1, -1]), eps=eps / k)  f32[B, 1, C]
      gamma, gamma_alpha, beta = Split(Gather(table[L, 1, 3C], level), axis=2)    3 x f32[B, 1, C]
      shift = gamma_alpha * m + beta                                          f32[B, 1, C]
      y     = Reshape(InstanceNormalization(Reshape(x, [1, -1, 0, 0]),        f32[1, B*C, H, W]
                                            scale=Reshape(gamma, [-1]), bias=Reshape(shift, [-1])), [-1, C, 0, 0])

  ``k = C / (C - 1)`` (the unbiased variance): ``d / sqrt(k*var + eps) = IN_{eps/k}(d) / sqrt(k)``, and
  ``1/sqrt(k)`` is folded into the table's ``gamma * alpha`` column. With the batch folded into the
  channels, ``IN(x)``'s own scale and bias apply the per-sample ``gamma`` and shift: no full-size ``Mul``
  or ``Add`` is left. The only differences are float32 re-association (``(gamma*alpha)*m`` for
  ``gamma*(alpha*m)``): ~1e-7 relative. Layers that normalise the same ``x`` (merged by the trace's
  common-subexpression elimination) share ``m`` and ``Reshape(x)``.
* :func:`gather_nd_to_gather`: ``Reshape(GatherND(t[L], Unsqueeze(i, -1)), [-1, 1, .., 1])`` (the
  per-level ``sigma`` lookup) becomes ``Gather(t[L, 1, .., 1], i)`` when ``i`` is 1-D (exact).
* :func:`merge_gathers`: every ``Gather(table, level)`` of constant tables with the same index and
  compatible shapes becomes one ``Gather`` of the concatenated table and one ``Split`` (exact).
* :func:`resize_sizes_to_scales`: ``Resize`` to output sizes that are whole multiples of static input sizes
  takes constant ``scales`` instead of ``Concat(Shape(x)[:2], sizes)`` (the same op; onnxruntime then upsamples
  on its NCHWc layout).
* unused nodes (the orphaned shape arithmetic) and initializers are dropped.
* :func:`uniform_level` (applied by the composer, not to ``score.onnx``): the network of the composed graphs,
  whose batch shares one level, with 6 per-step nodes per instance norm++ and the level-only lookups separable
  (:mod:`.hoist` moves them out of the samplers' step loop); each layer's output carries a ``value_info``
  naming the batch dimension (so onnxruntime can fuse the residual ``Add`` s into their ``Conv`` s).

The floor per instance norm++: 9 nodes do the math (``gamma * IN(x) + shift``, the last two as a
full-size ``Mul`` and ``Add``), but two more passes over the activation: measured side by side with today's
graph (default model, B=16, 1 thread, ``bench/bench_lean.py``), the fused sampler of a 9-node form took 0.96x
today's CPU time, this 10-node form 0.87x to 0.92x (three runs on a shared 2-core machine). Below that,
ONNX has no op that both standardises across channels and reduces over the spatial axes, nor ``a*b + c``.

CPU time is set by the kernels, not by the node count. ``bench/profile_lean.py --model mnist --batch 16 --runs 20``
(onnxruntime's profile of the network as the samplers run it, 1 thread; ``bench/results/profile_lean-mnist-
20261203T150507Z.json``): unprofiled 47.5 ms a call lean, 53.1 raw; kernel time Conv 30.4 (73 NCHWc Convs),
the Elu rewrite 8.2 (Clip 1.6, Exp 2.4, Sub 1.7, Max 2.5), InstanceNormalization 4.1, the NCHWc reorders around
the norm + Elu segments 4.2, ReduceMean 1.3, Add 1.0 (22 left of 39: 17 ride in their Conv), AveragePool 0.9,
LayerNormalization 0.7. A node costs 0.26 us outside its kernel unprofiled (500 Reshapes); the profiler adds
~5 us a node, so its totals for the small nodes (Reshape, Slice, Tile) are mostly its own, and the batch fold's
Reshapes cost next to nothing. :func:`uniform_level`'s 4-node form (``IN(x, gamma, beta) + LN(means) * ga``,
one full-size ``Add``) was no faster than the 10-node form (score graph 0.915x vs 0.903x the traced one, side
by side); its 6-node form with the step loop's lookups hoisted took the sampler from 0.906x to 0.900x.

The floor with exact rewrites on onnxruntime's CPU ops: every norm + Elu segment between two Convs needs a
ReorderOutput and a ReorderInput (the NCHWc transformer keeps only Conv, pools, Add/Sum/Mul of equal shapes,
Concat, Relu/Sigmoid/Tanh, BatchNormalization of constants, Transpose and Resize on its layout), one
InstanceNormalization, one ReduceMean for the channel means and 4 elementwise kernels for Elu (``e**x - 1``
needs its ``Exp``, a ``Sub``, a clamp and a select; the ``- 1`` cannot move into the next Conv, whose zero
padding would then see ``-1``). That is 17.8 ms of profiled kernel time next to the Convs' 30.4; what is left to
remove is about the 22 unfused Adds (1.0 ms): the network's floor is about (47.5 - 1.0) / 53.1 = 0.88x the raw
one, and so the fused sampler's, not 0.85x.
``session.set_denormal_as_zero`` changes nothing (the same samples bit for bit, 1.009x the time:
``bench/bench_lean.py --denormals-as-zero``, ``bench/results/bench_lean-mnist-20261203T145431Z.json``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

logger = logging.getLogger("ncsn_export")
_DEFAULT_DOMAINS = ("", "ai.onnx")


class _Index:
    """Producers, consumers, constants and ranks of one graph's values."""

    def __init__(self, model: onnx.ModelProto, base_dir: str | None = None) -> None:
        graph = model.graph
        self.base_dir = base_dir or ""  # where external-data initializers (weights.onnx.data) are read from
        self.graph = graph
        self.producer = {name: node for node in graph.node for name in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
            for attribute in node.attribute:  # subgraphs read outer values by name: never rewrite those
                if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    for name in _subgraph_reads(attribute):
                        self.consumers[name].append(node)
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        self.graph_outputs = {value.name for value in graph.output}
        try:
            inferred = shape_inference.infer_shapes(model).graph
        except Exception:  # ranks stay unknown: the rank-checked rewrites then do not apply
            inferred = graph
        self.ranks = {value.name: len(value.type.tensor_type.shape.dim)
                      for value in (*inferred.input, *inferred.value_info, *inferred.output)
                      if value.type.tensor_type.HasField("shape")}
        self.ranks.update({tensor.name: len(tensor.dims) for tensor in graph.initializer})
        self.elem_types = {value.name: value.type.tensor_type.elem_type
                           for value in (*inferred.input, *inferred.value_info, *inferred.output)}
        self.dims = {value.name: [dim.dim_value if dim.HasField("dim_value") else None
                                  for dim in value.type.tensor_type.shape.dim]
                     for value in (*inferred.input, *inferred.value_info, *inferred.output)
                     if value.type.tensor_type.HasField("shape")}  # static sizes, None where symbolic or unknown

    def const(self, name: str) -> np.ndarray | None:
        tensor = self.initializers.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor, self.base_dir)

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or node.domain not in _DEFAULT_DOMAINS:
            return None
        return node

    def only_read_by(self, name: str, readers: list[onnx.NodeProto]) -> bool:
        ids = {id(node) for node in readers}
        return name not in self.graph_outputs and all(id(node) in ids for node in self.consumers.get(name, []))


class _Constants:
    """De-duplicated initializers of one graph: ``constants(array, hint)`` -> the name of an initializer
    holding ``array`` (``{prefix}{hint}_{n}``, ``n`` counting this pass's distinct constants); equal arrays
    (dtype, shape, bytes) share one."""

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self.names: dict[tuple, str] = {}

    def __call__(self, array: np.ndarray, hint: str) -> str:
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.names:
            self.names[key] = f"{self.prefix}{hint}_{len(self.names)}"
            self.graph.initializer.append(numpy_helper.from_array(array, self.names[key]))
        return self.names[key]


def _subgraph_reads(attribute: onnx.AttributeProto) -> set[str]:
    graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
    names: set[str] = set()
    for graph in graphs:
        for node in graph.node:
            names.update(node.input)
            for inner in node.attribute:
                if inner.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    names |= _subgraph_reads(inner)
    return names


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _orders(node: onnx.NodeProto) -> Iterator[tuple[str, str]]:
    """Both operand orders of a commutative binary node."""
    if len(node.input) == 2:
        yield node.input[0], node.input[1]
        if node.input[0] != node.input[1]:
            yield node.input[1], node.input[0]


def _int_list(index: _Index, node: onnx.NodeProto, position: int, attribute: str) -> list[int] | None:
    """An axes-like list given as the constant input ``position`` (opset >= 13/18) or as ``attribute``."""
    if len(node.input) > position and node.input[position]:
        value = index.const(node.input[position])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    value = _attr(node, attribute)
    return None if value is None else [int(v) for v in value]


def _reduce_mean(index: _Index, name: str, axes: list[int], keepdims: int) -> onnx.NodeProto | None:
    node = index.op(name, "ReduceMean")
    if node is None or _attr(node, "keepdims", 1) != keepdims or _int_list(index, node, 1, "axes") != axes:
        return None
    return node


def _scalar(index: _Index, name: str) -> float | None:
    value = index.const(name)
    return None if value is None or value.size != 1 or value.dtype.kind != "f" else float(value.reshape(()))


@dataclass
class _CinMatch:
    """One matched instance norm++: the values the rewrite reads and the nodes it removes.

    ``chain`` (the standardised channel means ``m~``) and ``IN(x)`` may be shared by several layers
    that normalise the same ``x`` (the trace's common-subexpression elimination merges them);
    ``tail`` (embedding lookup, scale and shifts) is the layer's own.
    """

    x: str
    instance_norm: str  # IN(x)'s output (the IN node is kept)
    means: str  # m~, the chain's output
    level: str
    table: np.ndarray  # [L, 3C]
    sizes: tuple[int, int, int]
    k: float  # variance factor (C / (C - 1) for the unbiased variance)
    eps: float
    rank: int
    instance_eps: float  # IN(x)'s epsilon
    output: str  # y, the value the fused nodes write
    chain: list[onnx.NodeProto] = field(default_factory=list)
    tail: list[onnx.NodeProto] = field(default_factory=list)
    reads_means: onnx.NodeProto | None = None  # the tail node reading m~
    reads_instance_norm: onnx.NodeProto | None = None  # the tail node reading IN(x)


def _through_batch_reshape(index: _Index, name: str, nodes: list[onnx.NodeProto]) -> tuple[str, bool] | None:
    """Follow ``Expand(Reshape(v, Concat(Reshape(Shape(v)[0:1], [-1]), [1])), Concat(Shape(.)[0:1], [1]))``
    back to ``v``; returns (v, whether a trailing 1 was appended) and adds the chain's nodes to ``nodes``."""
    expand = index.op(name, "Expand")
    if expand is not None:
        target = index.op(expand.input[1], "Concat")
        if target is None or len(target.input) != 2 or _attr(target, "axis") != 0:
            return None
        batch = index.op(target.input[0], "Shape")
        one = index.const(target.input[1])
        if batch is None or _attr(batch, "start", 0) != 0 or _attr(batch, "end") != 1 or one is None or one.tolist() != [1]:
            return None
        nodes.append(expand)  # the target shape is [batch, 1]: the shared Shape/Concat stay, unused ones are dropped later
        name = expand.input[0]
    reshape = index.op(name, "Reshape")
    if reshape is None:
        return name, False
    shape = index.op(reshape.input[1], "Concat")
    if shape is None or len(shape.input) != 2 or _attr(shape, "axis") != 0:
        return None
    one = index.const(shape.input[1])
    leading = index.op(shape.input[0], "Reshape")
    if leading is not None:
        flat = index.const(leading.input[1])
        if flat is None or flat.tolist() != [-1]:
            return None
        size = index.op(leading.input[0], "Shape")
    else:
        size = index.op(shape.input[0], "Shape")
    value = reshape.input[0]
    if (size is None or size.input[0] != value or _attr(size, "start", 0) != 0 or _attr(size, "end") != 1
            or one is None or one.tolist() != [1] or index.ranks.get(value) != 1):
        return None
    nodes += [reshape, shape, size] + ([leading] if leading is not None else [])
    return value, True


def _match_embedding(index: _Index, gamma: str, alpha: str, beta: str, nodes: list[onnx.NodeProto]) -> tuple | None:
    """gamma, alpha, beta = Split(Gather(table[L, 3C], level), axis=1): (level, table, sizes)."""
    split = index.op(gamma, "Split")
    if split is None or list(split.output) != [gamma, alpha, beta] or _attr(split, "axis", 0) != 1:
        return None
    gather = index.op(split.input[0], "Gather")
    if gather is None or _attr(gather, "axis", 0) != 0:
        return None
    table = index.const(gather.input[0])
    if table is None or table.ndim != 2 or table.dtype.kind != "f" or index.ranks.get(gather.input[1]) != 1:
        return None
    if len(split.input) > 1 and split.input[1]:
        sizes_array = index.const(split.input[1])
        if sizes_array is None:
            return None
        sizes = tuple(int(v) for v in sizes_array)
    elif _attr(split, "num_outputs") == 3 and table.shape[1] % 3 == 0:
        sizes = (table.shape[1] // 3,) * 3
    else:
        return None
    if len(set(sizes)) != 1 or sum(sizes) != table.shape[1]:
        return None
    nodes += [split, gather]
    return gather.input[1], table, sizes


def _match_cin(index: _Index, y_add: onnx.NodeProto) -> _CinMatch | None:
    """Match ``y = Add(Mul(Unsqueeze(gamma), Add(IN(x), Unsqueeze(Mul(m~, alpha)))), Unsqueeze(beta))``."""
    for h2_name, bu_name in _orders(y_add):
        h2, bu = index.op(h2_name, "Mul"), index.op(bu_name, "Unsqueeze")
        if h2 is None or bu is None:
            continue
        for gu_name, h_name in _orders(h2):
            gu, h = index.op(gu_name, "Unsqueeze"), index.op(h_name, "Add")
            if gu is None or h is None:
                continue
            for inx_name, tu_name in _orders(h):
                inx, tu = index.op(inx_name, "InstanceNormalization"), index.op(tu_name, "Unsqueeze")
                if inx is None or tu is None:
                    continue
                x = inx.input[0]
                rank = index.ranks.get(x)
                scale, bias = (index.const(name) for name in (*inx.input[1:3], "", "")[:2])
                if (rank is None or rank < 3 or scale is None or bias is None or not np.all(scale == 1)
                        or not np.all(bias == 0)):
                    continue  # an affine IN(x) would need its scale and bias folded too: not the traced pattern
                spatial = list(range(2, rank))
                if any(_int_list(index, node, 1, "axes") != spatial for node in (bu, gu, tu)):
                    continue
                t = index.op(tu.input[0], "Mul")
                if t is None:
                    continue
                for m_name, alpha in _orders(t):
                    found = _match_standardised_means(index, m_name, x, spatial)
                    if found is None:
                        continue
                    k, eps, chain = found
                    tail: list[onnx.NodeProto] = []
                    embedding = _match_embedding(index, gu.input[0], alpha, bu.input[0], tail)
                    if embedding is None:
                        continue
                    level, table, sizes = embedding
                    if index.elem_types.get(x) != helper.np_dtype_to_tensor_dtype(table.dtype):
                        continue  # IN(x) takes its scale and bias in x's dtype
                    tail += [y_add, h2, bu, gu, h, tu, t]
                    match = _CinMatch(x, inx_name, m_name, level, table, sizes, k, eps, rank,
                                      float(_attr(inx, "epsilon", 1e-5)), y_add.output[0],
                                      chain, tail, t, h)
                    if all(name == match.output or index.only_read_by(name, tail)
                           for node in tail for name in node.output):
                        return match
    return None


def _match_standardised_means(index: _Index, m_name: str, x: str, spatial: list[int]) -> tuple | None:
    """``m~ = d / sqrt(k * mean(d*d) + eps)``, ``d = means - mean_c(means)``, ``means = mean_hw(x)``: (k, eps, nodes)."""
    m = index.op(m_name, "Div")
    if m is None:
        return None
    d_name = m.input[0]
    r = index.op(m.input[1], "Sqrt")
    a = None if r is None else index.op(r.input[0], "Add")
    if a is None:
        return None
    for v_name, eps_name in _orders(a):
        eps = _scalar(index, eps_name)
        nodes: list[onnx.NodeProto] = [m, r, a]
        followed = None if eps is None or eps < 0 else _through_batch_reshape(index, v_name, nodes)
        if followed is None:
            continue
        var, appended = followed
        k, value = 1.0, var
        for _ in range(2):  # var = s2 * C / (C - 1): a Mul and/or a Div by scalar constants
            node = index.op(value, "Mul") or index.op(value, "Div")
            if node is None:
                break
            scalars = [(other, _scalar(index, constant)) for other, constant in _orders(node)] if node.op_type == "Mul" \
                else [(node.input[0], _scalar(index, node.input[1]))]
            other, factor = next(((o, f) for o, f in scalars if f is not None and f > 0), (None, None))
            if other is None:
                break
            k = k * factor if node.op_type == "Mul" else k / factor
            nodes.append(node)
            value = other
        s2 = _reduce_mean(index, value, [1], 0 if appended else 1)
        sq = None if s2 is None else index.op(s2.input[0], "Mul")
        d = index.op(d_name, "Sub")
        if sq is None or d is None or list(sq.input) != [d_name, d_name]:
            continue
        mu = _reduce_mean(index, d.input[1], [1], 1)
        means = _reduce_mean(index, d.input[0], spatial, 0)
        if mu is None or means is None or mu.input[0] != d.input[0] or means.input[0] != x:
            continue
        nodes += [s2, sq, d, mu, means]
        return k, eps, nodes
    return None


def _shared_parts_private(index: _Index, matches: list[_CinMatch]) -> bool:
    """The layers ``matches`` share one ``m~`` chain and ``IN(x)``: no value of those is read outside them."""
    chain = matches[0].chain
    if any(match.instance_norm != matches[0].instance_norm or match.k != matches[0].k or match.eps != matches[0].eps
           for match in matches):
        return False
    readers = [match.reads_means for match in matches]
    if not all(index.only_read_by(name, chain) for node in chain for name in node.output if name != matches[0].means):
        return False
    return (index.only_read_by(matches[0].means, readers)
            and index.only_read_by(matches[0].instance_norm, [match.reads_instance_norm for match in matches]))


def fuse_instance_norm_plus(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every matched conditional instance norm++ in 9 nodes; returns (model, count)."""
    index = _Index(model, base_dir)
    groups: dict[str, list[_CinMatch]] = defaultdict(list)
    for node in index.graph.node:
        if node.op_type == "Add" and node.domain in _DEFAULT_DOMAINS:
            match = _match_cin(index, node)
            if match is not None:
                groups[match.means].append(match)
    groups = {key: matches for key, matches in groups.items() if _shared_parts_private(index, matches)}
    if not groups:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constant = _Constants(graph, "lean/")

    removed = {id(node) for matches in groups.values() for match in matches
               for node in (*match.chain, *match.tail, index.producer[match.instance_norm])}
    tails = {id(index.producer[match.output]): match for matches in groups.values() for match in matches}
    stds: dict[str, str] = {}  # m~ -> its lean value, f32[B, 1, C]
    flat_inputs: dict[str, str] = {}  # x -> x as f32[1, B*C, H, W]
    nodes: list[onnx.NodeProto] = []
    for position, node in enumerate(model.graph.node):
        if id(node) not in removed:
            nodes.append(node)
            continue
        match = tails.get(id(node))
        if match is None:
            continue
        tag = f"lean/cin_{position}"
        keep = [0] * (match.rank - 2)  # Reshape's "copy this dim"
        dtype = match.table.dtype
        if match.means not in stds:  # the first layer of a group writes the shared m~ (before any reader)
            stds[match.means] = f"{tag}/std"
            nodes += [
                helper.make_node("ReduceMean", [match.x, constant(np.arange(2, match.rank, dtype=np.int64), "axes")],
                                 [f"{tag}/means"], name=f"{tag}/ReduceMean", keepdims=1),
                helper.make_node("Reshape", [f"{tag}/means", constant(np.array([0, 1, -1], np.int64), "row")],
                                 [f"{tag}/row"], name=f"{tag}/Reshape_row"),
                helper.make_node("InstanceNormalization", [f"{tag}/row", constant(np.ones(1, dtype), "one"),
                                                           constant(np.zeros(1, dtype), "zero")], [f"{tag}/std"],
                                 name=f"{tag}/InstanceNormalization_means", epsilon=float(match.eps / match.k)),
            ]
        if match.x not in flat_inputs:
            flat_inputs[match.x] = f"{tag}/x_flat"
            nodes.append(helper.make_node("Reshape", [match.x, constant(np.array([1, -1, *keep], np.int64), "flat")],
                                          [f"{tag}/x_flat"], name=f"{tag}/Reshape_x"))
        table = match.table.astype(np.float64)
        size = match.sizes[0]
        gamma, alpha, beta = table[:, :size], table[:, size:2 * size], table[:, 2 * size:]
        lean_table = np.concatenate([gamma, gamma * alpha / np.sqrt(match.k), beta], axis=1).astype(dtype)
        embedding = [f"{tag}/gamma", f"{tag}/gamma_alpha", f"{tag}/beta"]
        flat = constant(np.array([-1], np.int64), "vector")
        nodes += [
            helper.make_node("Gather", [constant(lean_table[:, None, :], "cin_table"), match.level], [f"{tag}/embedding"],
                             name=f"{tag}/Gather", axis=0),
            helper.make_node("Split", [f"{tag}/embedding", constant(np.array(match.sizes, np.int64), "sizes")], embedding,
                             name=f"{tag}/Split", axis=2),
            helper.make_node("Mul", [stds[match.means], f"{tag}/gamma_alpha"], [f"{tag}/shift_scaled"],
                             name=f"{tag}/Mul_shift"),
            helper.make_node("Add", [f"{tag}/shift_scaled", f"{tag}/beta"], [f"{tag}/shift"], name=f"{tag}/Add_shift"),
            helper.make_node("Reshape", [f"{tag}/gamma", flat], [f"{tag}/scale_flat"], name=f"{tag}/Reshape_scale"),
            helper.make_node("Reshape", [f"{tag}/shift", flat], [f"{tag}/shift_flat"], name=f"{tag}/Reshape_shift"),
            helper.make_node("InstanceNormalization", [flat_inputs[match.x], f"{tag}/scale_flat", f"{tag}/shift_flat"],
                             [f"{tag}/y_flat"], name=f"{tag}/InstanceNormalization", epsilon=match.instance_eps),
            helper.make_node("Reshape", [f"{tag}/y_flat", constant(np.array([-1, size, *keep], np.int64), f"unflat{size}")],
                             [match.output], name=f"{tag}/Reshape_y"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return out, sum(len(matches) for matches in groups.values())


def gather_nd_to_gather(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """``Reshape(GatherND(t[L], Unsqueeze(i, [-1])), [-1, 1, ...])`` -> ``Gather(t[L, 1, ...], i)`` for 1-D ``i``."""
    index = _Index(model, base_dir)
    rewrites: dict[int, tuple[onnx.NodeProto, list[onnx.NodeProto]]] = {}
    for reshape in (node for node in index.graph.node if node.op_type == "Reshape" and node.domain in _DEFAULT_DOMAINS):
        shape = index.const(reshape.input[1])
        gather = index.op(reshape.input[0], "GatherND")
        if shape is None or gather is None or _attr(gather, "batch_dims", 0) != 0:
            continue
        if shape.ndim != 1 or shape.size < 1 or shape[0] != -1 or any(int(v) != 1 for v in shape[1:]):
            continue
        table = index.const(gather.input[0])
        unsqueeze = index.op(gather.input[1], "Unsqueeze")
        if table is None or table.ndim != 1 or unsqueeze is None or _int_list(index, unsqueeze, 1, "axes") not in ([-1], [1]):
            continue
        level = unsqueeze.input[0]
        if index.ranks.get(level) != 1:
            continue
        if not (index.only_read_by(gather.output[0], [reshape]) and index.only_read_by(unsqueeze.output[0], [gather])):
            continue
        rewrites[id(reshape)] = (reshape, [gather, unsqueeze])
    if not rewrites:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    removed = {id(node) for _, others in rewrites.values() for node in others}
    nodes: list[onnx.NodeProto] = []
    for position, node in enumerate(model.graph.node):
        if id(node) in removed:
            continue
        if id(node) not in rewrites:
            nodes.append(node)
            continue
        gather, unsqueeze = rewrites[id(node)][1]
        shape = index.const(node.input[1])
        table = index.const(gather.input[0])
        name = f"lean/lookup_{position}"
        graph.initializer.append(numpy_helper.from_array(table.reshape(table.shape[0], *([1] * (shape.size - 1))), name))
        nodes.append(helper.make_node("Gather", [name, unsqueeze.input[0]], list(node.output), name=f"{name}/Gather", axis=0))
    del graph.node[:]
    graph.node.extend(nodes)
    return out, len(rewrites)


def merge_gathers(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """All ``Gather(const table, i, axis=0)`` with one index ``i``, one dtype, one ``L`` and one ``shape[1:-1]``
    become one ``Gather`` of the tables concatenated on their last axis + one ``Split`` on that axis; a member read
    only by a constant-size ``Split`` on that axis hands its pieces
    to the merged ``Split``. Returns (model, number of Gathers removed)."""
    index = _Index(model, base_dir)
    groups: dict[tuple, list[onnx.NodeProto]] = defaultdict(list)
    for node in index.graph.node:
        if node.op_type != "Gather" or node.domain not in _DEFAULT_DOMAINS or _attr(node, "axis", 0) != 0:
            continue
        table = index.const(node.input[0])
        if table is None or table.ndim < 2 or index.ranks.get(node.input[1]) != 1:
            continue
        groups[(node.input[1], table.dtype.str, table.shape[0], table.shape[1:-1])].append(node)
    groups = {key: members for key, members in groups.items() if len(members) > 1}
    if not groups:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    first: dict[int, list[onnx.NodeProto]] = {}
    removed: set[int] = set()
    for members in groups.values():
        nodes: list[onnx.NodeProto] = []
        tables, outputs, sizes = [], [], []
        for member in members:
            table = index.const(member.input[0])
            tables.append(table)
            split = _constant_split(index, member.output[0], table.ndim - 1, table.shape[-1])
            if split is None:
                outputs.append(member.output[0])
                sizes.append(table.shape[-1])
            else:
                outputs += list(split[0].output)
                sizes += split[1]
                removed.add(id(split[0]))
            removed.add(id(member))
        position = len(first)
        name = f"lean/tables_{position}"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(tables, axis=-1), name))
        graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), f"{name}/sizes"))
        nodes += [helper.make_node("Gather", [name, members[0].input[1]], [f"{name}/rows"], name=f"{name}/Gather", axis=0),
                  helper.make_node("Split", [f"{name}/rows", f"{name}/sizes"], outputs, name=f"{name}/Split",
                                   axis=tables[0].ndim - 1)]
        first[id(members[0])] = nodes
    kept: list[onnx.NodeProto] = []
    for node in model.graph.node:
        kept += first.get(id(node), [])
        if id(node) not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return out, sum(len(members) - 1 for members in groups.values())


def _constant_split(index: _Index, name: str, axis: int, width: int) -> tuple[onnx.NodeProto, list[int]] | None:
    """The one ``Split`` on ``axis`` (the last) reading ``name``, its sizes constant summing to ``width``: (node, sizes)."""
    readers = index.consumers.get(name, [])
    if len(readers) != 1 or name in index.graph_outputs:
        return None
    split = readers[0]
    if (split.op_type != "Split" or split.domain not in _DEFAULT_DOMAINS or _attr(split, "axis", 0) not in (axis, -1)
            or split.input[0] != name):
        return None
    if len(split.input) > 1 and split.input[1]:
        sizes_array = index.const(split.input[1])
        sizes = None if sizes_array is None else [int(v) for v in sizes_array]
    else:
        count = _attr(split, "num_outputs") or len(split.output)
        sizes = [width // count] * count if width % count == 0 else None
    if sizes is None or sum(sizes) != width or len(sizes) != len(split.output):
        return None
    return split, sizes


def resize_sizes_to_scales(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """``Resize(x, roi, "", Concat(Shape(x)[0:2], [H', W']))`` -> ``Resize(x, roi, [1, 1, H'/H, W'/W])`` when ``x``'s
    spatial sizes are static and divide ``H', W'``; returns (model, count).

    The same op (output sizes ``floor(H * H'/H) = H'``; the coordinate transforms read the same sizes or the same
    exact scales), but onnxruntime's NCHWc transformer only takes a ``Resize`` with constant integer scales: the
    upsampling then runs on the blocked layout next to the ``Conv`` s (the RefineNet's bilinear ``align_corners``
    upsample: ``Resize`` 0.41 ms a call raw, ``Upsample`` 0.11 ms lean, default model, B=16, 1 thread,
    ``bench/profile_lean.py``), without reorders around it.
    """
    index = _Index(model, base_dir)
    rewrites: dict[int, np.ndarray] = {}
    for node in index.graph.node:
        if node.op_type != "Resize" or node.domain not in _DEFAULT_DOMAINS or len(node.input) != 4 or node.input[2]:
            continue
        if _attr(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch") or _attr(node, "axes"):
            continue
        x, concat = node.input[0], index.op(node.input[3], "Concat")
        dims = index.dims.get(x)
        if concat is None or _attr(concat, "axis") != 0 or len(concat.input) != 2 or not dims or len(dims) < 3:
            continue
        shape, tail = index.op(concat.input[0], "Shape"), _const_list(index, concat.input[1])
        if (shape is None or shape.input[0] != x or _attr(shape, "start", 0) != 0 or _attr(shape, "end") != 2
                or tail is None or len(tail) != len(dims) - 2 or any(size is None or size < 1 for size in dims[2:])):
            continue
        if any(out < 1 or out % size for out, size in zip(tail, dims[2:], strict=True)):
            continue
        rewrites[id(node)] = np.array([1, 1] + [out // size for out, size in zip(tail, dims[2:], strict=True)], np.float32)
    if not rewrites:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constant = _Constants(out.graph, "lean/")
    for node, original in zip(out.graph.node, model.graph.node, strict=True):
        if id(original) in rewrites:
            node.input[:] = [node.input[0], node.input[1], constant(rewrites[id(original)], "resize_scales")]
    return out, len(rewrites)


def drop_unused(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` without nodes whose outputs nothing reads, and without unread initializers."""
    graph = model.graph
    needed = {value.name for value in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output if name):
            keep.append(node)
            needed.update(node.input)
            for attribute in node.attribute:
                if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    needed |= _subgraph_reads(attribute)
    dropped = len(graph.node) - len(keep)
    unread = [tensor for tensor in graph.initializer if tensor.name not in needed]
    if not dropped and not unread:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(reversed(keep))
    initializers = [tensor for tensor in out.graph.initializer if tensor.name in needed]
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers)
    kept_values = {name for node in keep for name in node.output} | {value.name for value in graph.input} | needed
    value_info = [value for value in out.graph.value_info if value.name in kept_values]
    del out.graph.value_info[:]
    out.graph.value_info.extend(value_info)
    return out, dropped


def lean_graph(model: onnx.ModelProto, base_dir: str | None = None,
               check: Callable[[onnx.ModelProto], None] | None = None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` with :func:`fuse_instance_norm_plus`, :func:`gather_nd_to_gather`, :func:`merge_gathers`,
    :func:`resize_sizes_to_scales` and :func:`drop_unused` applied (the same object when nothing matched); returns
    (model, rewrites per pass).

    ``base_dir``: the folder of the external-data file the initializers name (the shared ``weights.onnx.data``);
    ``check``: how to check the result (default ``onnx.checker.check_model(full_check=True)``, which needs the
    model's external data next to the current directory, so pass the composer's file-based check)."""
    counts: dict[str, int] = {}
    out = model
    for name, rewrite in (("instance_norm_plus", fuse_instance_norm_plus), ("gather_nd", gather_nd_to_gather),
                          ("merged_gathers", merge_gathers), ("resize_scales", resize_sizes_to_scales)):
        out, counts[name] = rewrite(out, base_dir)
    if out is not model:  # dead code is only ours to drop when a rewrite orphaned it
        out, counts["unused_nodes"] = drop_unused(out, base_dir)
        try:
            (check or (lambda m: onnx.checker.check_model(m, full_check=True)))(out)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:  # a bug here: keep the trace
            logger.warning("lean_graph: the rewritten score graph does not check (%s); keeping the traced graph", error)
            return model, dict.fromkeys(counts, 0)
    return out, counts


@dataclass
class _LeanCin:
    """One instance norm++ in :func:`fuse_instance_norm_plus`'s form, as :func:`uniform_level` reads it."""

    x: str
    means_axes: str  # ReduceMean's axes input (the spatial axes)
    rank: int
    eps: float  # IN(x)'s epsilon
    means_eps: float  # the channel-means IN's epsilon (eps / k)
    gamma: str  # Split pieces f32[B, 1, C] of Gather(table[L, 1, W], timestep)
    gamma_alpha: str
    beta: str
    output: str
    tail: onnx.NodeProto  # Reshape(y_flat) -> output, the node the rewrite replaces


def _lean_cin(index: _Index, unflat: onnx.NodeProto, pieces: dict[str, tuple[onnx.NodeProto, int]]) -> _LeanCin | None:
    """Match ``Reshape(IN(Reshape(x, [1, -1, 0..]), Reshape(g, [-1]), Reshape(Add(Mul(std, ga), b), [-1])), [-1, C, 0..])``
    with ``std = IN(Reshape(ReduceMean(x, spatial, keepdims=1), [0, 1, -1]))`` and ``g, ga, b`` level-lookup pieces."""
    shape = index.const(unflat.input[1])
    inorm = index.op(unflat.input[0], "InstanceNormalization")
    if shape is None or inorm is None or len(inorm.input) != 3 or shape.ndim != 1 or shape.size < 3:
        return None
    rank = int(shape.size)
    if shape[0] != -1 or any(int(v) != 0 for v in shape[2:]):
        return None
    flat_x, flat_scale, flat_shift = (index.op(name, "Reshape") for name in inorm.input)
    if flat_x is None or flat_scale is None or flat_shift is None:
        return None
    if (_const_list(index, flat_x.input[1]) != [1, -1] + [0] * (rank - 2)
            or _const_list(index, flat_scale.input[1]) != [-1] or _const_list(index, flat_shift.input[1]) != [-1]):
        return None
    x, gamma = flat_x.input[0], flat_scale.input[0]
    add = index.op(flat_shift.input[0], "Add")
    mul = None if add is None else index.op(add.input[0], "Mul")
    if mul is None or len(mul.input) != 2:
        return None
    beta, (std_name, gamma_alpha) = add.input[1], mul.input
    std = index.op(std_name, "InstanceNormalization")
    row = None if std is None else index.op(std.input[0], "Reshape")
    means = None if row is None else _reduce_mean(index, row.input[0], list(range(2, rank)), 1)
    if means is None or means.input[0] != x or _const_list(index, row.input[1]) != [0, 1, -1]:
        return None
    one, zero = (index.const(name) for name in (*std.input[1:3], "", "")[:2])
    if one is None or zero is None or not np.all(one == 1) or not np.all(zero == 0):
        return None
    if any(name not in pieces for name in (gamma, gamma_alpha, beta)):
        return None
    if len({pieces[name][0].output[0] for name in (gamma, gamma_alpha, beta)}) != 1:
        return None  # one lookup (the same level) for the three
    return _LeanCin(x, means.input[1], rank, float(_attr(inorm, "epsilon", 1e-5)), float(_attr(std, "epsilon", 1e-5)),
                    gamma, gamma_alpha, beta, unflat.output[0], unflat)


def _const_list(index: _Index, name: str) -> list[int] | None:
    value = index.const(name)
    return None if value is None or value.dtype.kind not in "iu" else [int(v) for v in value.reshape(-1)]


def _level_lookups(index: _Index, level: str) -> dict[str, tuple[onnx.NodeProto, int]]:
    """Pieces of ``Split(Gather(table[L, 1, W], level), sizes, axis=2)``: piece -> (that Split, position)."""
    pieces: dict[str, tuple[onnx.NodeProto, int]] = {}
    for node in index.graph.node:
        if node.op_type != "Split" or node.domain not in _DEFAULT_DOMAINS or _attr(node, "axis", 0) not in (2, -1):
            continue
        gather = index.op(node.input[0], "Gather")
        table = None if gather is None else index.initializers.get(gather.input[0])
        if (table is None or gather.input[1] != level or _attr(gather, "axis", 0) != 0 or len(table.dims) != 3
                or table.dims[1] != 1 or len(node.input) < 2 or _const_list(index, node.input[1]) is None):
            continue
        for position, name in enumerate(node.output):
            pieces[name] = (node, position)
    return pieces


def uniform_level(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """The network for graphs that run the whole batch at one level (every composed graph: its scalar ``timestep``
    is broadcast to the network's i64[B]); returns (model, number of instance norm++ rewritten).

    Each instance norm++ of :func:`fuse_instance_norm_plus`'s form (10 nodes) becomes 6 per-step nodes (the
    ReduceMean and the Reshape of ``x`` shared by layers that read the same ``x``) plus 4 level-only ones::

        shift = LayerNormalization(ReduceMean(x, spatial, keepdims=0), gamma_alpha[C], beta[C],
                                   axis=-1, epsilon=eps / k)                        f32[B, C]
        y = Reshape(InstanceNormalization(Reshape(x, [1, -1, 0..]), Tile(gamma, [B]),
                                          Reshape(shift, [-1])), [-1, C, 0..])      f32[B, C, H, W]

    ``gamma``, ``beta``, ``gamma_alpha`` are ``Slice`` s of the lean table's row at ``timestep[0]`` (one ``Gather``
    per table; Slices, not one ``Split`` of W / c outputs: onnxruntime-web's WebGPU EP allows 10 storage buffers
    a shader). They depend on the level only, so in the samplers :func:`.hoist.hoist_loop_invariants` moves them
    (and ``Tile``) out of the step loop. The per-level ``sigma`` lookup (``Gather(t[L, 1, .., 1], timestep)``, read
    by broadcasting ops) reads ``timestep[:1]`` too. The tables are the lean graph's own (no new weights). The
    math is the lean form's (LayerNormalization standardises the channel means as the IN on [B, 1, C] did).
    Wrong for a batch with mixed levels: never for ``score.onnx``.
    """
    index = _Index(model, base_dir)
    if len(index.graph.input) != 2:
        return model, 0
    level = index.graph.input[1].name
    pieces = _level_lookups(index, level)
    matches = [match for node in index.graph.node
               if node.op_type == "Reshape" and node.domain in _DEFAULT_DOMAINS
               for match in [_lean_cin(index, node, pieces)] if match is not None]
    sigma_lookups = [node for node in index.graph.node if _broadcast_lookup(index, node, level)]
    if not matches and not sigma_lookups:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constant = _Constants(graph, "uniform/")

    head = [helper.make_node("Gather", [level, constant(np.array([0], np.int64), "first")], ["uniform/level"],
                             name="uniform/level", axis=0)]  # i64[1]
    rows: dict[int, tuple[str, list[int]]] = {}  # id(original Split) -> (its row at the one level f32[W], offsets)
    for split, _ in {id(pieces[name][0]): pieces[name] for match in matches
                     for name in (match.gamma, match.gamma_alpha, match.beta)}.values():
        tag = f"uniform/rows_{len(rows)}"
        table = index.producer[split.input[0]].input[0]
        head += [helper.make_node("Gather", [table, "uniform/level"], [f"{tag}/row"], name=f"{tag}/Gather", axis=0),
                 helper.make_node("Reshape", [f"{tag}/row", constant(np.array([-1], np.int64), "vector")],
                                  [f"{tag}/flat"], name=f"{tag}/Reshape")]  # [1, 1, W] -> [W]
        sizes = _const_list(index, split.input[1]) or []
        rows[id(split)] = (f"{tag}/flat", [int(v) for v in np.cumsum([0, *sizes])])

    def piece(name: str, tag: str) -> str:
        """One Slice per piece, f32[c]: not a Split of W / c outputs (WebGPU allows 10 storage buffers a shader)."""
        split, position = pieces[name]
        row, offsets = rows[id(split)]
        head.append(helper.make_node("Slice", [row, constant(np.array(offsets[position:position + 1], np.int64), "start"),
                                               constant(np.array(offsets[position + 1:position + 2], np.int64), "end")],
                                     [tag], name=tag))
        return tag

    replaced: dict[int, list[onnx.NodeProto]] = {}
    means: dict[str, str] = {}
    flat: dict[str, str] = {}
    batch = "uniform/batch"  # i64[1] = [B]: Tile's repeats for the scale
    head.append(helper.make_node("Shape", [level], [batch], name=batch))
    for position, match in enumerate(matches):
        tag = f"uniform/cin_{position}"
        keep = [0] * (match.rank - 2)
        gamma = piece(match.gamma, f"{tag}/gamma")
        head.append(helper.make_node("Tile", [gamma, batch], [f"{tag}/scale"], name=f"{tag}/Tile"))  # f32[B*C]
        beta = piece(match.beta, f"{tag}/beta")
        gamma_alpha = piece(match.gamma_alpha, f"{tag}/gamma_alpha")
        nodes = []
        if match.x not in means:
            means[match.x], flat[match.x] = f"{tag}/means", f"{tag}/x_flat"
            nodes += [helper.make_node("ReduceMean", [match.x, match.means_axes], [f"{tag}/means"],
                                       name=f"{tag}/ReduceMean", keepdims=0),
                      helper.make_node("Reshape", [match.x, constant(np.array([1, -1, *keep], np.int64), "flat")],
                                       [f"{tag}/x_flat"], name=f"{tag}/Reshape_x")]
        nodes += [
            helper.make_node("LayerNormalization", [means[match.x], gamma_alpha, beta], [f"{tag}/shift"],
                             name=f"{tag}/LayerNormalization", axis=-1, epsilon=match.means_eps),  # f32[B, C]
            helper.make_node("Reshape", [f"{tag}/shift", constant(np.array([-1], np.int64), "vector")],
                             [f"{tag}/shift_flat"], name=f"{tag}/Reshape_shift"),
            helper.make_node("InstanceNormalization", [flat[match.x], f"{tag}/scale", f"{tag}/shift_flat"],
                             [f"{tag}/y_flat"], name=f"{tag}/InstanceNormalization", epsilon=match.eps),
            helper.make_node("Reshape", [f"{tag}/y_flat", match.tail.input[1]], [match.output], name=f"{tag}/Reshape_y"),
        ]
        replaced[id(match.tail)] = nodes
    for node in sigma_lookups:
        replaced[id(node)] = [helper.make_node("Gather", [node.input[0], "uniform/level"], list(node.output),
                                               name=node.name or "uniform/sigma", axis=0)]
    nodes = list(head)
    for node in model.graph.node:
        nodes += replaced.get(id(node), [node])
    del graph.node[:]
    graph.node.extend(nodes)
    hints = _batch_hints(index, matches)
    hinted = {hint.name for hint in hints}
    value_info = [value for value in graph.value_info if value.name not in hinted] + hints  # one entry a value
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    out, _ = drop_unused(out, base_dir)
    return out, len(matches)


def _batch_hints(index: _Index, matches: list[_LeanCin]) -> list[onnx.ValueInfoProto]:
    """``y: [batch, C, ?..]`` for every rewritten instance norm++ output (``batch``: the network input's symbolic
    batch dimension; none when it has no name).

    Shape inference cannot see through ``Reshape(y_flat[1, B*C, ..], [-1, C, 0..])``: each ``y`` would get a
    batch dimension of its own, and onnxruntime's NCHWc transformer then cannot prove a residual ``Add``'s
    operands the same shape, so it runs the ``Add`` on its own (between Reshapes) instead of accumulating it
    into the ``Conv`` that writes one operand. The hint is true by construction (``y`` has ``x``'s batch). On the
    default model 17 of the 39 ``Add`` s then ride in their ``Conv`` (``bench/profile_lean.py``: 22 left)."""
    dims = index.graph.input[0].type.tensor_type.shape.dim
    batch = dims[0].dim_param if len(dims) else ""
    hints = []
    for match in matches:
        shape = index.const(match.tail.input[1])
        elem_type = index.elem_types.get(match.x)
        if batch and shape is not None and elem_type:
            hints.append(helper.make_tensor_value_info(match.output, elem_type,
                                                       [batch, int(shape[1])] + [None] * (match.rank - 2)))
    return hints


_BROADCASTING = {"Add", "Sub", "Mul", "Div"}


def _broadcast_lookup(index: _Index, node: onnx.NodeProto, level: str) -> bool:
    """``Gather(t[L, 1, .., 1], level)`` read only by elementwise ops whose other operand has the full rank:
    with the level shared by the batch, ``t[level[:1]]`` (f32[1, 1, .., 1]) broadcasts to the same result."""
    if node.op_type != "Gather" or node.domain not in _DEFAULT_DOMAINS or node.input[1] != level or _attr(node, "axis", 0):
        return False
    table = index.initializers.get(node.input[0])
    if table is None or len(table.dims) < 2 or any(size != 1 for size in table.dims[1:]):
        return False
    name, rank = node.output[0], len(table.dims)
    readers = index.consumers.get(name, [])
    return bool(readers) and name not in index.graph_outputs and all(
        reader.op_type in _BROADCASTING and reader.domain in _DEFAULT_DOMAINS and len(reader.input) == 2
        and all(index.ranks.get(other) == rank for other in reader.input if other != name)
        for reader in readers)
