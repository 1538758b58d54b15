"""The one trace of the network: ``score.onnx`` through ``torch.onnx.export(dynamo=True)``.

``step.onnx``, ``sampler.onnx`` and the accelerator graphs are composed from this graph in ONNX
(:mod:`.compose`); nothing else traces the network to ONNX. :func:`export_onnx` is the generic
traced export (also used by tests for small torch modules): after export the graph is cleaned
(per-node exporter metadata, ~2 KB a node, and unused initializers are dropped; weights used only
inside a ``Loop`` move into its body, see :func:`_move_initializers_into_loops`) and checked.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx
import torch
from ncsn_runtime.contract import GRAPHS
from torch import nn

from ..step import LangevinStep
from .errors import ExportError, tracing_error
from .onnx_optimize import optimize_exported

MIN_OPSET = 18  # BitwiseAnd / BitwiseXor of the counter noise
DEFAULT_OPSET = 18  # the broadest runtime support (onnxruntime CPU/CUDA/web)

SCORE_INPUTS = GRAPHS["score"].input_names
SCORE_OUTPUTS = GRAPHS["score"].output_names
SAMPLER_INPUTS = GRAPHS["sampler"].input_names

_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64"}


def max_opset() -> int:
    """Highest opset the installed ``onnx`` defines."""
    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: object) -> int:
    """Validate ``opset`` (an int in [MIN_OPSET, max_opset()])."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"`opset` must be an int in [{MIN_OPSET}, {max_opset()}], got {opset!r}")
    if not MIN_OPSET <= opset <= max_opset():
        raise ExportError(
            f"`opset` must be in [{MIN_OPSET}, {max_opset()}], got {opset}: the counter noise needs BitwiseAnd/BitwiseXor "
            f"(opset {MIN_OPSET}) and onnx {onnx.__version__} defines opsets up to {max_opset()}"
        )
    return opset


class StepGraph(nn.Module):
    """The ``step.onnx`` module: score network + :class:`LangevinStep`.

    ``forward(sample f32[B, ...], seed i64[B], timestep i64[] (level index), step_size f32[], counter i64[])
    -> next_sample f32[B, ...]``; the scalar level is broadcast to [B] for the network.
    """

    def __init__(self, score_model: nn.Module) -> None:
        super().__init__()
        self.score_model = score_model
        self.step = LangevinStep()

    def forward(
        self, sample: torch.Tensor, seed: torch.Tensor, timestep: torch.Tensor, step_size: torch.Tensor, counter: torch.Tensor
    ) -> torch.Tensor:
        level = timestep.reshape(1).expand(sample.shape[0])
        return self.step(sample, self.score_model(sample, level), step_size, seed, counter)



@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and known-harmless warnings."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def batch_shapes(names: Sequence[str], batched: Sequence[str], levels: Sequence[str] = ()) -> tuple[Any, ...]:
    """Positional ``dynamic_shapes``: dim 0 of ``batched`` inputs is "batch", of ``levels`` is "num_levels".

    Positional (not keyed by name) because a user's network may call its arguments anything.
    """
    batch = torch.export.Dim("batch")
    num_levels = torch.export.Dim("num_levels")
    return tuple({0: batch} if name in batched else {0: num_levels} if name in levels else None for name in names)


def export_onnx(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: str | Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: tuple[Any, ...],
    opset: int,
    loop_weights_inside: bool = True,
) -> dict[str, Any]:
    """Export ``module`` to ``path`` and check it; returns ``{"file", "inputs", "outputs", "nodes"}`` for the manifest.

    ``loop_weights_inside=False`` keeps a ``Loop``'s weights as outer-scope values (the benchmark's "before").

    Raises :class:`ExportError` naming the unsupported op when the network cannot be traced.
    """
    path = Path(path)
    check_opset(opset)
    module = module.eval()
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                verbose=False,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                optimize=False,  # optimized below without the exporter's slowest rewrite rule (.onnx_optimize)
            )
            optimize_exported(program)
    except Exception as error:  # the exporter raises many types; all mean "could not trace"
        raise tracing_error(path.name, error) from error
    proto = program.model_proto
    emitted = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if emitted != opset:
        raise ExportError(f"`opset` {opset} cannot be emitted by torch {torch.__version__}'s exporter for {path.name} "
                          f"(it produced opset {emitted}); use --opset {emitted}")
    program.save(str(path))
    model = onnx.load(str(path))
    _strip_node_metadata(model.graph)
    _drop_unused_initializers(model.graph)
    if loop_weights_inside:
        _move_initializers_into_loops(model.graph)
    onnx.save(model, str(path))
    onnx.checker.check_model(model, full_check=True)
    return {
        "file": path.name,
        "inputs": [_value_info(value) for value in model.graph.input],
        "outputs": [_value_info(value) for value in model.graph.output],
        "nodes": count_nodes(model.graph),
    }



def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    tensor = value.type.tensor_type
    shape = [dim.dim_param if dim.dim_param else int(dim.dim_value) for dim in tensor.shape.dim]
    return {"name": value.name, "dtype": _ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)), "shape": shape}


def _strip_node_metadata(graph: onnx.GraphProto) -> None:
    """Drop the exporter's per-node stack traces and FX names (about 2 KB per node, 20x the graph itself)."""
    for node in graph.node:
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _strip_node_metadata(attribute.g)


def _used_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _used_names(attribute.g)  # subgraphs read outer-scope values by name
    return names


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove initializers no node reads (the exporter leaves a few; onnxruntime warns about them)."""
    used = _used_names(graph)
    keep = [initializer for initializer in graph.initializer if initializer.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _move_initializers_into_loops(graph: onnx.GraphProto) -> int:
    """Make weights read only inside a ``Loop`` body initializers of that body; returns how many moved.

    As outer-scope values they are implicit inputs of every iteration, which onnxruntime cannot
    treat as constants (no weight pre-packing, no constant folding in the body); as the body's own
    initializers they are. Measured on the 3-conv benchmark network: about 12% less time per step.
    """
    moved = 0
    for loop in (node for node in graph.node if node.op_type == "Loop"):
        body = next(attribute.g for attribute in loop.attribute if attribute.name == "body")
        elsewhere: set[str] = {value.name for value in graph.output}
        for node in graph.node:
            if node is not loop:
                elsewhere.update(node.input)
                for attribute in node.attribute:
                    if attribute.type == onnx.AttributeProto.GRAPH:
                        elsewhere |= _used_names(attribute.g)
        inside = _used_names(body) - {value.name for value in body.input}
        stay = []
        for initializer in graph.initializer:
            if initializer.name in inside and initializer.name not in elsewhere and initializer.name not in loop.input:
                body.initializer.append(initializer)
                moved += 1
            else:
                stay.append(initializer)
        del graph.initializer[:]
        graph.initializer.extend(stay)
    return moved


def count_nodes(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        count += 1
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                count += count_nodes(attribute.g)
    return count


def example_inputs(sample_shape: Sequence[int], batch_size: int = 2, num_levels: int = 3) -> dict[str, torch.Tensor]:
    """Placeholder inputs of every graph input name (values only matter for tracing)."""
    return {
        "sample": torch.zeros((batch_size, *sample_shape), dtype=torch.float32),
        "seed": torch.arange(batch_size, dtype=torch.int64),
        "timestep": torch.zeros((), dtype=torch.int64),
        "step_size": torch.full((), 0.01, dtype=torch.float32),
        "counter": torch.zeros((), dtype=torch.int64),
        "timesteps": torch.arange(num_levels, dtype=torch.int64),
        "step_sizes": torch.full((num_levels,), 0.01, dtype=torch.float32),
        "num_annealed_steps": torch.tensor(2, dtype=torch.int64),
    }


def export_score_onnx(model: nn.Module, sample_shape: Sequence[int], path: str | Path, opset: int) -> dict:
    """``score.onnx``, the one trace of the network: sample f32[B, ...], timestep i64[B] -> score f32[B, ...]."""
    inputs = example_inputs(sample_shape)
    args = (inputs["sample"], torch.zeros(inputs["sample"].shape[0], dtype=torch.int64))
    shapes = batch_shapes(SCORE_INPUTS, batched=SCORE_INPUTS)
    return export_onnx(model, args, path, SCORE_INPUTS, SCORE_OUTPUTS, shapes, opset)


TRACE_SECONDS_PER_MODULE = 0.1  # default RefineNet: 394 modules, ~27-41 s; 73 M UNet: 317 modules, ~19-30 s
TRACE_SECONDS_FIXED = 5.0


def estimate_trace_seconds(model: nn.Module) -> float:
    """A rough ETA of :func:`export_score_onnx` for the progress bar: it grows with the number of submodules."""
    return TRACE_SECONDS_FIXED + TRACE_SECONDS_PER_MODULE * sum(1 for _ in model.modules())
