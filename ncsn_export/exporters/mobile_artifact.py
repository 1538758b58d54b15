"""The ``mobile`` artifact (``--artifacts ...,mobile [--mobile-batch B]``): ``mobile/score.onnx`` + ``mobile/step.onnx``.

The score network in its fixed-shape accelerator form (:func:`.mobile_graph.mobile_score`) and the step graph
composed around it as ``gpu_step`` is (the noise an input, :func:`.compose.langevin`'s update), with the level as a
one-hot row ``f32[1, L]`` broadcast to the batch by one ``Mul``. I/O and file layout: :mod:`ncsn_runtime.mobile`.

Weights: ``mobile/weights.onnx.data``, read by both mobile graphs. It is a second copy of the network's weights
(plus the level tables): onnx and onnxruntime refuse an external-data location that leaves the model's folder
(``../weights.onnx.data``: "points outside the directory" / "External data path escapes model directory",
onnx 1.23 and onnxruntime 1.32), and a self-contained ``mobile/`` is what an app bundles.

Each graph is checked by onnx's checker, then by onnxruntime's mobile usability checker
(:func:`.mobile_usability.check_usability`), whose figures the manifest keeps (``usability``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from ncsn_runtime.mobile import MAX_MOBILE_BATCH, MOBILE_DIR, MOBILE_PREFIX, mobile_file, mobile_io
from ncsn_runtime.schedule import check_count
from onnx import TensorProto, helper

from .compose import half, inline_network, langevin
from .errors import ExportInputError
from .graph_passes import compact_names
from .manifest_builder import ArtifactEntry
from .mobile_graph import ONEHOT_INPUT, MobileGraphError, mobile_score
from .mobile_usability import check_usability
from .onnx_builder import GraphBuilder, tensor_info
from .shared_weights import WEIGHTS_FILE, detach_weights

logger = logging.getLogger("ncsn_export")

DEFAULT_MOBILE_BATCH = 1


def check_mobile_batch(batch: Any, name: str = "mobile_batch") -> int:
    """``--mobile-batch``: an int in [1, MAX_MOBILE_BATCH]; else :class:`ExportInputError` naming ``name`` and the range."""
    try:
        return check_count(name, batch, 1, MAX_MOBILE_BATCH)
    except (TypeError, ValueError) as error:
        raise ExportInputError(str(error)) from None


def step_graph(score: onnx.ModelProto, batch: int, sample_shape: Sequence[int], num_levels: int) -> onnx.ModelProto:
    """``mobile/step.onnx`` around the mobile score model (weights as references: nothing is copied)."""
    b = GraphBuilder("main/")
    levels = ONEHOT_INPUT
    if batch > 1:  # one level for the batch: [1, L] * ones[B, 1] -> [B, L] (no Expand: neither EP has it)
        levels = b.op("Mul", b.const(np.ones((batch, 1), dtype=np.float32), hint="ones"), ONEHOT_INPUT)
    network_score = inline_network(b, score.graph, "sample", levels)
    langevin(b, "sample", network_score, half(b, "step_size"), b.op("Sqrt", "step_size"), "noise", "next_sample")
    io = mobile_io("step", batch, sample_shape, num_levels)
    inputs = [tensor_info(value["name"], TensorProto.FLOAT, value["shape"]) for value in io["inputs"]]
    outputs = [tensor_info(value["name"], TensorProto.FLOAT, value["shape"]) for value in io["outputs"]]
    return helper.make_model(b.graph("mobile_step", inputs, outputs), opset_imports=list(score.opset_import),
                             ir_version=score.ir_version, producer_name="ncsn-export mobile")


def _save_checked(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def write_mobile_graphs(staging: Path, score: onnx.ModelProto, weights_dir: Path | None, sample_shape: Sequence[int],
                        num_levels: int, batch: int) -> tuple[list[ArtifactEntry], dict[str, float]]:
    """Write ``staging/mobile/{score,step}.onnx`` + ``weights.onnx.data``; returns manifest entries and seconds per file.

    Args:
        score: the lean traced network (``Elu`` not rewritten; weights external in ``weights_dir`` or inline).
        num_levels: L. batch: the fixed B.

    Raises :class:`MobileGraphError` when the network cannot take the fixed-shape form, or onnx's checker errors.
    """
    start = time.perf_counter()
    folder = staging / MOBILE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    mobile, rewrites = mobile_score(score, batch, num_levels, weights_dir)
    mobile.producer_name = "ncsn-export mobile"
    mobile.graph.name = "mobile_score"
    _rename_output(mobile, "score")  # the traced output name -> the mobile contract's
    mobile = compact_names(mobile)  # short value names: the graph file shrinks ~3x (graph_passes)
    detach_weights(mobile, folder / WEIGHTS_FILE)
    models = {"score": mobile, "step": step_graph(mobile, batch, sample_shape, num_levels)}
    seconds: dict[str, float] = {mobile_file("score") + " (rewrite)": round(time.perf_counter() - start, 3)}
    entries: list[ArtifactEntry] = []
    for key, model in models.items():
        began = time.perf_counter()
        path = staging / mobile_file(key)
        _save_checked(model, path)
        usability = {ep: verdict.as_dict() for ep, verdict in check_usability(path).items()}
        details = {"batch": batch, **mobile_io(key, batch, sample_shape, num_levels), "nodes": len(model.graph.node),
                   "external_data": [f"{MOBILE_DIR}/{WEIGHTS_FILE}"], "usability": usability}
        if key == "score":
            details["rewrites"] = rewrites.as_dict()
        entries.append(ArtifactEntry(MOBILE_PREFIX + key, "written", details=details))
        seconds[mobile_file(key)] = round(time.perf_counter() - began, 3)
        logger.info("wrote %s (%d nodes; usability checker: %s)", mobile_file(key), len(model.graph.node),
                    ", ".join(f"{ep} {v['verdict']} {v['largest_partition']}/{v['nodes']}" for ep, v in usability.items()))
    return entries, seconds


def _rename_output(model: onnx.ModelProto, name: str) -> None:
    """Rename the model's single output to ``name`` (its producer's output too)."""
    old = model.graph.output[0].name
    if old == name:
        return
    for node in model.graph.node:
        node.output[:] = [name if value == old else value for value in node.output]
        node.input[:] = [name if value == old else value for value in node.input]
    model.graph.output[0].name = name


__all__ = ["DEFAULT_MOBILE_BATCH", "MobileGraphError", "check_mobile_batch", "step_graph", "write_mobile_graphs"]
