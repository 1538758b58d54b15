"""``sampler.pt`` (TorchScript) and ``sampler.pt2`` (``torch.export``) of the fused sampler.

``sampler.pt`` scripts the loop (a TorchScript ``for`` over the same step body) around the score
network, which is scripted when it can be and traced otherwise; ``torch.jit.load`` runs it in a
process that never imported ``ncsn_export``. ``sampler.pt2`` is the ``torch.export`` program of the
``while_loop`` form, loaded with ``torch.export.load(path).module()``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sympy
import torch
from torch import nn
from torch.utils._sympy.numbers import int_oo

from ..sampler import AnnealedLangevinSampler
from .errors import ExportError, tracing_error
from .onnx_export import SAMPLER_INPUTS, example_inputs, quiet_exporter


def _save_via_memory(save: Callable[[Any, Any], None], obj: Any, path: str | Path) -> None:
    """``save(obj, buffer)``, then the bytes to ``path``.

    torch's zip writer aborts the whole process (``terminate called after throwing an instance of 'c10::Error'``)
    when a write to a file fails (a full disk); into memory it cannot fail, and a full disk then raises an
    ordinary ``OSError`` from Python's write. Costs one copy of the file in memory.
    """
    buffer = io.BytesIO()
    save(obj, buffer)
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def script_or_trace(model: nn.Module, sample_shape: Sequence[int]) -> tuple[torch.jit.ScriptModule, str]:
    """TorchScript of the score network: ``torch.jit.script`` when it compiles, else ``torch.jit.trace``."""
    try:
        with quiet_exporter():
            return torch.jit.script(model), "script"
    except Exception as script_error:
        example = example_inputs(sample_shape)["sample"]
        args = (example, torch.zeros(example.shape[0], dtype=torch.int64))
        try:
            with quiet_exporter(), torch.no_grad():
                return torch.jit.trace(model, args, check_trace=False), "trace"
        except Exception as trace_error:
            raise tracing_error("sampler.pt", trace_error) from script_error


def export_torchscript(
    model: nn.Module, train_sigmas: torch.Tensor, final_denoise: bool, sample_shape: Sequence[int], path: str | Path
) -> dict[str, Any]:
    """Write ``sampler.pt``; returns ``{"network": "script" | "trace"}`` (how the score network was compiled)."""
    network, how = script_or_trace(model, sample_shape)
    sampler = AnnealedLangevinSampler(network, train_sigmas, final_denoise).eval()
    try:
        with quiet_exporter():
            scripted = torch.jit.script(sampler)
    except Exception as error:
        raise tracing_error(Path(path).name, error) from error
    _save_via_memory(torch.jit.save, scripted, path)
    return {"network": how}


def export_pt2(sampler: AnnealedLangevinSampler, sample_shape: Sequence[int], path: str | Path) -> dict[str, Any]:
    """Write ``sampler.pt2`` (``torch.export.save``) with dynamic batch and number of levels.

    The dims are ``Dim.DYNAMIC``: torch.export keeps whatever range the network allows instead of failing
    on a named ``Dim`` (diffusers' ``Upsample2D`` branches on ``batch >= 64``, which bounds the batch to
    [1, 63] in a diffusers UNet's program). Returns ``{"batch_range": [lo, hi or None]}`` as exported.
    """
    inputs = example_inputs(sample_shape)
    args = tuple(inputs[name] for name in SAMPLER_INPUTS)
    dynamic = torch.export.Dim.DYNAMIC
    shapes = tuple({0: dynamic} if name in ("sample", "seed", "timesteps", "step_sizes") else None for name in SAMPLER_INPUTS)
    try:
        with quiet_exporter(), torch.no_grad():
            program = torch.export.export(sampler.eval(), args, dynamic_shapes=shapes, strict=False)
    except Exception as error:
        raise tracing_error(Path(path).name, error) from error
    _drop_stack_traces(program)
    _save_via_memory(torch.export.save, program, path)
    return {"batch_range": _batch_range(program)}


def _batch_range(program: torch.export.ExportedProgram) -> list[int | None]:
    """``[lo, hi]`` of the sample's batch dim in ``program`` (hi None when unbounded; lo 1 as 0/1 are accepted)."""
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == "sample")
    size = placeholder.meta["val"].shape[0]
    if isinstance(size, int):
        return [size, size]
    bounds = program.range_constraints.get(size.node.expr)
    if bounds is None:
        return [1, None]
    lower = int(bounds.lower)
    upper = None if bounds.upper in (int_oo, sympy.oo) else int(bounds.upper)
    return [1 if lower <= 2 else lower, upper]


def _drop_stack_traces(program: torch.export.ExportedProgram) -> None:
    """Remove each node's Python stack trace: they are 98% of a RefineNet sampler.pt2 (115 of 117 MB)."""
    for module in program.graph_module.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                node.meta.pop("stack_trace", None)


def load_pt2(path: str | Path) -> nn.Module:
    """The callable module of a ``sampler.pt2``."""
    try:
        return torch.export.load(str(path)).module()
    except Exception as error:
        raise ExportError(f"cannot load {path}: {error}") from error
