"""Compose the graph family (step, sampler, gpu_step, gpu_sampler) from one traced ``score.onnx``.

The network is traced once (:func:`.onnx_export.export_score_onnx`); every other graph is written
around a renamed copy of its nodes with :mod:`onnx.helper` (see :mod:`.onnx_builder`):

* ``step``: noise (``bitwise`` Philox, :mod:`.onnx_noise`) + network + Langevin update.
* ``gpu_step``: network + Langevin update, the noise ``z`` is an input: no control flow, no bitwise
  op, no float64.
* ``sampler`` / ``gpu_sampler``: an outer ``Loop`` over schedule positions ``i`` draws the noise of
  all ``T`` annealed steps of the level at once (counters ``i*T + t``, float32 [T, B, ...]); an inner
  ``Loop`` over ``t`` runs network + update. With ``final_denoise`` the last position's inner loop
  runs one more iteration, the contract's denoising step: the Langevin update with
  ``step_size = 2 * sigma_last**2`` and ``z = 0`` (``x + sigma_last**2 * score``,
  ``sigma_last = train_sigmas[timesteps[-1]]``). The network thus appears once per graph, and its
  weights are initializers of the inner loop body (onnxruntime's layout optimizations, NCHWc, need
  them there: with the weights hoisted to the main graph the CPU sampler ran 1.9x slower).
  ``gpu_sampler`` uses the ``arithmetic`` noise (only ops with CUDA kernels).
* ``inpaint``: the ``sampler`` loop conditioned on ``known`` / ``mask`` (:mod:`.inpaint_graph`).

When the score graph's weights are external data (:func:`.shared_weights.detach_weights`), every
composed graph copies only the references (name, location, offset, length), never the bytes.

The Langevin update evaluates :func:`ncsn_runtime.schedule.langevin_update`'s expression in the same
float32 order: ``(x + (0.5 * alpha) * score) + sqrt(alpha) * z``. I/O names, dtypes and shapes come
from :data:`ncsn_runtime.contract.GRAPHS`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from ncsn_runtime.contract import BATCH, GRAPH_NAMES, GRAPHS, GraphSpec
from onnx import TensorProto, helper

from .graph_passes import compact_names, rewrite_elu
from .hoist import hoist_loop_invariants
from .lean_graph import lean_graph, uniform_level
from .onnx_builder import GraphBuilder, tensor_info
from .onnx_noise import counter_normal

_ELEM_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
NETWORK_PREFIX = "net/"


def compose_graphs(
    score: onnx.ModelProto,
    sample_shape: Sequence[int],
    train_sigmas: np.ndarray,
    final_denoise: bool,
    keys: Sequence[str] = GRAPH_NAMES,
    opset: int = 18,
    fast_elu: bool = True,
    external_data_dir: str | Path | None = None,
    lean: bool = True,
) -> dict[str, onnx.ModelProto]:
    """The graphs ``keys`` (contract keys) composed from ``score`` (the traced ``score.onnx`` model).

    Args:
        score: ``sample f32[B, ...], timestep i64[B] -> score f32[B, ...]`` (any I/O names, in that order).
        sample_shape: per-sample shape, e.g. ``(1, 28, 28)``.
        train_sigmas: float32 [L], the network's trained noise levels (for ``final_denoise``).
        final_denoise: append NCSNv2's denoising step to the samplers.
        keys: which graphs to return; ``"score"`` is ``score`` itself.
        opset: the default-domain opset of ``score`` and of every composed graph.
        fast_elu: rewrite the network's ``Elu`` nodes first (:func:`.graph_passes.rewrite_elu`, faster on
            onnxruntime CPU); the returned ``"score"`` is then the rewritten network too.
        external_data_dir: the folder holding the external-data file(s) that ``score``'s initializers name
            (None: the weights are inside ``score``). The checker resolves external data relative to a
            model file, so each composed graph is then checked from a temporary file in that folder.
        lean: simplify the network first (:func:`.lean_graph.lean_graph`: instance norm++ fused, shape arithmetic
            and per-layer lookups folded); the returned ``"score"`` is then the lean network too.

    Returns:
        key -> ``onnx.ModelProto`` (checked with ``onnx.checker.check_model(full_check=True)``).
    """
    unknown = [key for key in keys if key not in GRAPHS]
    if unknown:
        raise ValueError(f"`keys` must be among {', '.join(GRAPH_NAMES)}, got {', '.join(map(repr, unknown))}")
    shape = tuple(int(size) for size in sample_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"`sample_shape` must be a non-empty sequence of positive ints, got {tuple(sample_shape)}")
    sigmas = np.asarray(train_sigmas, dtype=np.float32).reshape(-1)
    if final_denoise and sigmas.size == 0:
        raise ValueError("`train_sigmas` must be non-empty float32 [L] when `final_denoise` is set")
    score_opset = next((entry.version for entry in score.opset_import if entry.domain in ("", "ai.onnx")), None)
    if score_opset != opset:
        raise ValueError(f"`opset` {opset} differs from the score graph's opset {score_opset}; "
                         "compose at the opset the network was traced at")
    if len(score.graph.input) != 2 or len(score.graph.output) != 1:
        raise ValueError(f"the score graph must have 2 inputs (sample, timestep) and 1 output, got "
                         f"{len(score.graph.input)} and {len(score.graph.output)}")
    if lean:
        base = None if external_data_dir is None else str(external_data_dir)
        score, _ = lean_graph(score, base, check=lambda model: check_composed(model, external_data_dir))
    if fast_elu:
        score, _ = rewrite_elu(score)
    score = compact_names(score)  # every graph repeats the network's names: keep them short (graph_passes)
    # the composed graphs run the batch at one level: their network looks the level up once (lean_graph.uniform_level)
    network = uniform_level(score, None if external_data_dir is None else str(external_data_dir))[0].graph
    builders: dict[str, Callable[[], onnx.GraphProto]] = {
        "step": lambda: _step_graph(network, shape, GRAPHS["step"], noise_variant="bitwise"),
        "gpu_step": lambda: _step_graph(network, shape, GRAPHS["gpu_step"], noise_variant=None),
        "sampler": lambda: _sampler_graph(network, shape, sigmas, final_denoise, GRAPHS["sampler"], "bitwise"),
        "gpu_sampler": lambda: _sampler_graph(network, shape, sigmas, final_denoise, GRAPHS["gpu_sampler"], "arithmetic"),
        "inpaint": lambda: _inpaint_graph(score.graph, shape, sigmas, final_denoise),
    }
    graphs: dict[str, onnx.ModelProto] = {}
    for key in keys:
        if key == "score":
            graphs[key] = score
            continue
        model = helper.make_model(builders[key](), opset_imports=list(score.opset_import), functions=list(score.functions),
                                  ir_version=score.ir_version, producer_name="ncsn-export compose")
        model, _ = hoist_loop_invariants(model)  # the level-only nodes run once per level, not per step
        check_composed(model, external_data_dir)
        graphs[key] = model
    return graphs


def check_composed(model: onnx.ModelProto, external_data_dir: str | Path | None = None) -> None:
    """``onnx.checker.check_model(full_check=True)``; from a temporary file in ``external_data_dir`` when given."""
    if external_data_dir is None:
        onnx.checker.check_model(model, full_check=True)
        return
    with tempfile.NamedTemporaryFile(dir=external_data_dir, prefix=".check-", suffix=".onnx") as handle:
        handle.write(model.SerializeToString())
        handle.flush()
        onnx.checker.check_model(handle.name, full_check=True)


def _io(spec: GraphSpec, shape: Sequence[int]) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    def info(tensor) -> onnx.ValueInfoProto:
        return tensor_info(tensor.name, _ELEM_TYPES[tensor.dtype], tensor.concrete_shape(shape))

    return [info(tensor) for tensor in spec.inputs], [info(tensor) for tensor in spec.outputs]


def _renamed_graph(graph: onnx.GraphProto, rename: Callable[[str], str]) -> None:
    """Rename every value of ``graph`` (and its subgraphs) in place."""
    for values in (graph.input, graph.output, graph.value_info):
        for value in values:
            value.name = rename(value.name)
    for initializer in graph.initializer:
        initializer.name = rename(initializer.name)
    for node in graph.node:
        _rename_node(node, rename)


def _rename_node(node: onnx.NodeProto, rename: Callable[[str], str]) -> None:
    node.input[:] = [rename(name) for name in node.input]
    node.output[:] = [rename(name) for name in node.output]
    node.name = NETWORK_PREFIX + node.name if node.name else ""
    del node.metadata_props[:]
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            _renamed_graph(attribute.g, rename)
        for subgraph in attribute.graphs:
            _renamed_graph(subgraph, rename)


def inline_network(b: GraphBuilder, score: onnx.GraphProto, sample: str, timestep: str) -> str:
    """Append the score network's nodes, initializers and shape hints to ``b`` reading ``sample`` / ``timestep``;
    returns the score's name.

    Every value of the network is prefixed with :data:`NETWORK_PREFIX`, so it cannot clash with the
    composed graph's own names. An external initializer is copied as its reference only (no bytes).
    """
    fixed = {score.input[0].name: sample, score.input[1].name: timestep}

    def rename(name: str) -> str:
        return fixed.get(name, NETWORK_PREFIX + name) if name else name

    for initializer in score.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(initializer)
        copy.name = rename(initializer.name)
        b.initializers.append(copy)
    for node in score.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        _rename_node(copy, rename)
        b.nodes.append(copy)
    for value in score.value_info:  # the network's shape hints (lean_graph.uniform_level's batch dimension)
        hint = onnx.ValueInfoProto()
        hint.CopyFrom(value)
        hint.name = rename(value.name)
        b.value_info.append(hint)
    return rename(score.output[0].name)


def half(b: GraphBuilder, step_size: str) -> str:
    """``0.5 * alpha`` (float32), the drift factor of the Langevin update."""
    return b.op("Mul", b.const(0.5, np.float32), step_size)


def langevin(b: GraphBuilder, sample: str, score: str, half_step_size: str, sqrt_step_size: str, noise: str, output: str) -> str:
    """``(x + (0.5 * alpha) * score) + sqrt_alpha * z``: :func:`ncsn_runtime.schedule.langevin_update`'s float32 order.

    ``half_step_size`` is ``0.5 * alpha`` (see :func:`half`), computed once per level in the samplers.
    """
    drift = b.op("Mul", half_step_size, score)
    return b.op("Add", b.op("Add", sample, drift), b.op("Mul", sqrt_step_size, noise), outputs=[output])


def _batch_levels(b: GraphBuilder, sample: str, level: str) -> str:
    """The scalar level index broadcast to int64 [B] (the network takes one level per sample)."""
    return b.op("Expand", b.op("Reshape", level, b.const([1], np.int64)), b.op("Shape", sample, start=0, end=1))


def _inpaint_graph(score: onnx.GraphProto, shape: tuple[int, ...], train_sigmas: np.ndarray,
                   final_denoise: bool) -> onnx.GraphProto:
    """``inpaint``: the sampler loop conditioned on a known image and a mask (:mod:`.inpaint_graph`)."""
    from .inpaint_graph import inpaint_graph

    return inpaint_graph(score, shape, train_sigmas, final_denoise, GRAPHS["inpaint"])


def _step_graph(score: onnx.GraphProto, shape: tuple[int, ...], spec: GraphSpec, noise_variant: str | None) -> onnx.GraphProto:
    """``step`` (noise drawn in the graph from seed + counter) or ``gpu_step`` (noise as an input)."""
    b = GraphBuilder("main/")
    if noise_variant is None:
        noise = "noise"
    else:
        counters = b.op("Reshape", "counter", b.const([1], np.int64))
        draw = counter_normal(b, "seed", counters, shape, noise_variant)  # [1, B, ...]
        noise = b.op("Squeeze", draw, b.const([0], np.int64))
    network_score = inline_network(b, score, "sample", _batch_levels(b, "sample", "timestep"))
    langevin(b, "sample", network_score, half(b, "step_size"), b.op("Sqrt", "step_size"), noise, spec.outputs[0].name)
    inputs, outputs = _io(spec, shape)
    return b.graph(spec.key, inputs, outputs)


@dataclass(frozen=True)
class LoopHooks:
    """Where a graph built on the samplers' annealed loop (:func:`annealed_loop_graph`) departs from ``sampler``.

    Every hook is optional; without hooks the loop is ``sampler`` / ``gpu_sampler`` itself. Hooks add nodes to
    the builder they are given and return the name of the value the loop continues with.

    * ``prepare(main)``: once, in the main graph, before the loops.
    * ``start_level(outer, x)``: in the level body, before its steps; returns the ``x`` the steps start from.
    * ``after_step(inner, stepped, denoising, output)``: in the step body, after each Langevin update, writes the
      next ``x`` to ``output``; ``denoising`` is the bool that is true in the final denoising iteration (``None``
      without ``final_denoise``).
    * ``finish(main, looped, output)``: in the main graph, after the loops, writes the graph's output.
    """

    level_body: str = "level"
    prepare: Callable[[GraphBuilder], None] | None = None
    start_level: Callable[[GraphBuilder, str], str] | None = None
    after_step: Callable[[GraphBuilder, str, str | None, str], None] | None = None
    finish: Callable[[GraphBuilder, str, str], None] | None = None


def _sampler_graph(score: onnx.GraphProto, shape: tuple[int, ...], train_sigmas: np.ndarray, final_denoise: bool,
                   spec: GraphSpec, noise_variant: str) -> onnx.GraphProto:
    """``sampler`` / ``gpu_sampler``: the annealed loop with no hooks."""
    return annealed_loop_graph(score, shape, train_sigmas, final_denoise, spec, noise_variant, LoopHooks())


def annealed_loop_graph(score: onnx.GraphProto, shape: tuple[int, ...], train_sigmas: np.ndarray, final_denoise: bool,
                        spec: GraphSpec, noise_variant: str, hooks: LoopHooks) -> onnx.GraphProto:
    """Outer Loop over positions (one noise draw per level), inner Loop over steps, with ``hooks`` spliced in.

    Args:
        score: the score network graph (``sample, timestep -> score``), inlined once in the step body.
        shape: per-sample shape; train_sigmas: float32 [L] (for ``final_denoise``).
        spec: the contract's spec of the graph (I/O names, dtypes, shapes); noise_variant: :mod:`.onnx_noise`'s.
    """
    sample_dims = [BATCH, *shape]
    main = GraphBuilder("main/")
    num_positions = main.op("Size", "timesteps")
    steps = main.op("Reshape", "num_annealed_steps", main.const([], np.int64))  # T, scalar
    if hooks.prepare is not None:
        hooks.prepare(main)
    if final_denoise:
        last_step = main.op("Sub", steps, main.const(1, np.int64))
        last_position = main.op("Sub", num_positions, main.const(1, np.int64))
        sigma_last = main.op("Gather", main.const(train_sigmas, np.float32, hint="train_sigmas"),
                             main.op("Gather", "timesteps", last_position))
        # the denoising step is the update with alpha = 2 * sigma_last**2: 0.5 * alpha == sigma_last**2 exactly
        denoise_half_step = main.op("Mul", sigma_last, sigma_last)

    # outer body: position i
    outer = GraphBuilder("outer/")
    level = outer.op("Gather", "timesteps", "outer/i")
    alpha = outer.op("Gather", "step_sizes", "outer/i")
    sqrt_alpha = outer.op("Sqrt", alpha)
    half_alpha = half(outer, alpha)
    start_x = hooks.start_level(outer, "outer/x") if hooks.start_level is not None else "outer/x"
    start = outer.op("Mul", "outer/i", steps)
    counters = outer.op("Add", start, outer.op("Range", outer.const(0, np.int64), steps, outer.const(1, np.int64)))
    noise_all = counter_normal(outer, "seed", counters, shape, noise_variant)  # [T, B, ...]
    levels = _batch_levels(outer, "outer/x", level)
    if final_denoise:
        is_last = outer.op("Cast", outer.op("Equal", "outer/i", last_position), to=TensorProto.INT64)
        trip_count = outer.op("Add", steps, is_last)
    else:
        trip_count = steps

    # inner body: annealed step t (t == T only in the final denoising iteration)
    inner = GraphBuilder("inner/")
    denoising = None
    if final_denoise:
        noise = inner.op("Gather", noise_all, inner.op("Min", "inner/t", last_step), axis=0)
        denoising = inner.op("Equal", "inner/t", steps)
        half_step = inner.op("Where", denoising, denoise_half_step, half_alpha)
        noise_scale = inner.op("Where", denoising, inner.const(0.0, np.float32), sqrt_alpha)
    else:
        noise = inner.op("Gather", noise_all, "inner/t", axis=0)
        half_step, noise_scale = half_alpha, sqrt_alpha
    network_score = inline_network(inner, score, "inner/x", levels)
    if hooks.after_step is None:
        langevin(inner, "inner/x", network_score, half_step, noise_scale, noise, "inner/x_next")
    else:
        stepped = inner.fresh("stepped")
        langevin(inner, "inner/x", network_score, half_step, noise_scale, noise, stepped)
        hooks.after_step(inner, stepped, denoising, "inner/x_next")
    inner.op("Identity", "inner/cond", outputs=["inner/cond_out"])
    inner_body = inner.graph(
        "annealed_step",
        [tensor_info("inner/t", TensorProto.INT64, []), tensor_info("inner/cond", TensorProto.BOOL, []),
         tensor_info("inner/x", TensorProto.FLOAT, sample_dims)],
        [tensor_info("inner/cond_out", TensorProto.BOOL, []), tensor_info("inner/x_next", TensorProto.FLOAT, sample_dims)],
    )
    outer.op("Loop", trip_count, outer.const(True, np.bool_), start_x, outputs=["outer/x_next"], body=inner_body)
    outer.op("Identity", "outer/cond", outputs=["outer/cond_out"])
    outer_body = outer.graph(
        hooks.level_body,
        [tensor_info("outer/i", TensorProto.INT64, []), tensor_info("outer/cond", TensorProto.BOOL, []),
         tensor_info("outer/x", TensorProto.FLOAT, sample_dims)],
        [tensor_info("outer/cond_out", TensorProto.BOOL, []), tensor_info("outer/x_next", TensorProto.FLOAT, sample_dims)],
    )
    if hooks.finish is None:
        main.op("Loop", num_positions, main.const(True, np.bool_), "sample", outputs=[spec.outputs[0].name], body=outer_body)
    else:
        looped = main.op("Loop", num_positions, main.const(True, np.bool_), "sample", body=outer_body)
        hooks.finish(main, looped, spec.outputs[0].name)
    inputs, outputs = _io(spec, shape)
    return main.graph(spec.key, inputs, outputs)
