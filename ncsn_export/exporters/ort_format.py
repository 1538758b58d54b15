"""ORT-format models of the shipped graphs (``--artifacts ort``): ``ort/KEY.ort`` + ``ort/required_operators.config``.

onnxruntime Mobile and minimal builds read only the ORT format (a flatbuffer of the graph after onnxruntime's own
optimizations). Each written ONNX graph ``KEY.onnx`` is converted with
:func:`onnxruntime.tools.convert_onnx_models_to_ort.convert_onnx_models_to_ort` (the ``python -m
onnxruntime.tools.convert_onnx_models_to_ort`` tool: the *Fixed* optimization style at level ``all``, with the
x86-only ``NchwcTransformer`` left out, so the file runs on ARM too), then one
``required_operators.config`` is made from all the converted graphs with
:func:`onnxruntime.tools.ort_format_model.create_config_from_models` (operators *and* their types: it feeds
``build.sh --minimal_build --include_ops_by_config ... --enable_reduced_operator_type_support``). The config is
remade (:func:`write_required_operators`) when validation drops a ``.ort`` file, so it lists exactly the shipped ones.

Weights: the converter serializes every initializer into the flatbuffer and has no option to write external data,
so each ``.ort`` file holds its own copy of the network's weights (it cannot share the ONNX graphs' weights file).
The manifest's ``artifacts["ort"]`` says so (``weights``).

Manifest (``artifacts``): ``"ort:KEY": {"file": "ort/KEY.ort", "status", "graph": KEY, "onnx_bytes"}`` per graph
(read back by :mod:`ncsn_runtime.ort_format`) and ``"ort": {"file": "ort/required_operators.config", "graphs": [...],
"operators": N, "weights", "optimization", "ort_bytes", "onnx_bytes"}``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ncsn_runtime.contract import GRAPHS, ORT_CONFIG, ORT_DIR, ORT_PREFIX, ort_file
from ncsn_runtime.fileio import atomic_write

from .artifacts import ORT_KEY
from .manifest_builder import ArtifactEntry

logger = logging.getLogger("ncsn_export")

OPTIMIZATION = "Fixed style, level all, NchwcTransformer off (portable to ARM)"
WEIGHTS_NOTE = ("each .ort holds its own copy of the weights: the ORT-format converter embeds every initializer "
                "and cannot point at the ONNX graphs' weights file")
BUILD_COMMAND = ("./build.sh --config MinSizeRel --minimal_build --include_ops_by_config "
                 "<export>/ort/required_operators.config --enable_reduced_operator_type_support")


@contextlib.contextmanager
def quiet_tool() -> Iterator[None]:
    """Silence the converter's prints and its ``ort_format_model.utils`` INFO log (one line per model) for a while."""
    tool_logger = logging.getLogger("ort_format_model.utils")
    level = tool_logger.level
    tool_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tool_logger.setLevel(level)


def convert_graph(source: Path, target: Path) -> float:
    """Convert one ONNX graph ``source`` (``KEY.onnx``, external data beside it) to the ORT-format file ``target``.

    The converter's own output goes to a scratch directory beside ``target`` (its per-file config is dropped) and
    the ``.ort`` file is renamed into place, so ``target`` is either complete or absent. Returns the seconds taken.
    Raises whatever onnxruntime raises for a graph it cannot load or save.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ort-", dir=target.parent) as scratch:
        with quiet_tool():
            convert_onnx_models_to_ort(source, output_dir=Path(scratch), optimization_styles=[OptimizationStyle.Fixed],
                                       enable_type_reduction=True)
        os.replace(Path(scratch) / f"{source.stem}.ort", target)
    return time.perf_counter() - start


def write_required_operators(staging: Path, keys: Sequence[str]) -> int:
    """(Re)write ``staging/ort/required_operators.config`` from the ``.ort`` files of ``keys``; returns the number of
    operators it lists (an entry ``domain;opset;Op{types},...`` per line). The header names the graphs relative to
    the export directory, not the staging path."""
    from onnxruntime.tools.ort_format_model import create_config_from_models

    models = [staging / ort_file(key) for key in keys]
    with tempfile.TemporaryDirectory(prefix=".ort-config-", dir=staging / ORT_DIR) as scratch:
        made = Path(scratch) / "required_operators.config"
        with quiet_tool():
            create_config_from_models(models, made, True)
        body = [line for line in made.read_text().splitlines() if not line.startswith("#")]
    header = ["# Operators and types needed by the ORT-format graphs of this export (onnxruntime.tools",
              f"# create_config_from_models, type reduction on). Build: {BUILD_COMMAND}",
              *(f"# - {ort_file(key)}" for key in keys)]
    atomic_write(staging / ORT_CONFIG, ("\n".join([*header, *body]) + "\n").encode())
    return count_operators(body)


def count_operators(lines: Sequence[str]) -> int:
    """Operators listed by config ``lines`` (``domain;opset;Op1{...},Op2``), counted by parsing each entry's op list."""
    count = 0
    for line in lines:
        parts = line.strip().split(";", 2)
        if len(parts) == 3 and parts[2]:
            count += len(_split_ops(parts[2]))
    return count


def _split_ops(ops: str) -> list[str]:
    """Split ``Op1{"inputs": {...}},Op2`` at the commas outside braces."""
    names, depth, start = [], 0, 0
    for index, char in enumerate(ops):
        depth += (char == "{") - (char == "}")
        if char == "," and depth == 0:
            names.append(ops[start:index])
            start = index + 1
    names.append(ops[start:])
    return [name for name in names if name]


def write_ort_models(staging: Path, keys: Sequence[str]) -> tuple[list[ArtifactEntry], dict[str, float]]:
    """Step 3 (``write``), with ``ort`` requested: ``ort/KEY.ort`` for each written graph ``keys`` + the config.

    Returns the manifest entries (``ort:KEY`` per graph, written or skipped with its reason, and ``ort``) and the
    seconds per file. A graph that cannot be converted is skipped here; whether that fails the export is the
    caller's rule (:meth:`~ncsn_export.exporters.artifacts.ArtifactSelection.is_required`).
    """
    entries: list[ArtifactEntry] = []
    seconds: dict[str, float] = {}
    converted: list[str] = []
    for key in keys:
        source = staging / GRAPHS[key].file
        try:
            seconds[ort_file(key)] = round(convert_graph(source, staging / ort_file(key)), 3)
        except Exception as error:  # onnxruntime's Fail / NotImplemented for a graph it cannot optimize or save
            reason = f"{type(error).__name__}: {str(error).strip()[:500]}"
            logger.warning("could not make %s: %s", ort_file(key), reason)
            entries.append(ArtifactEntry(ORT_PREFIX + key, "skipped", reason))
            continue
        converted.append(key)
        entries.append(ArtifactEntry(ORT_PREFIX + key, "written", details={"graph": key, "onnx_bytes": source.stat().st_size}))
        logger.info("wrote %s", ort_file(key))
    if not converted:
        entries.append(ArtifactEntry(ORT_KEY, "skipped", "no graph could be converted to the ORT format"))
        return entries, seconds
    start = time.perf_counter()
    operators = write_required_operators(staging, converted)
    seconds[ORT_CONFIG] = round(time.perf_counter() - start, 3)
    entries.append(ArtifactEntry(ORT_KEY, "written", details=ort_details(staging, converted, operators)))
    logger.info("wrote %s (%d operators for %d graphs)", ORT_CONFIG, operators, len(converted))
    return entries, seconds


def ort_details(staging: Path, keys: Sequence[str], operators: int) -> dict[str, Any]:
    """``artifacts["ort"]`` facts: the graphs, operator count, sizes, and how the weights are stored.

    ``onnx_bytes``: the same graphs' ``.onnx`` files; ``onnx_external_bytes``: the external-data files they name
    (a shared weights file counted once), so ``ort_bytes`` compares with their sum.
    """
    locations = sorted({location for key in keys for location in external_data_files(staging / GRAPHS[key].file)})
    return {"graphs": list(keys), "operators": operators, "optimization": OPTIMIZATION, "type_reduction": True,
            "weights": WEIGHTS_NOTE, "build": BUILD_COMMAND,
            "ort_bytes": sum((staging / ort_file(key)).stat().st_size for key in keys),
            "onnx_bytes": sum((staging / GRAPHS[key].file).stat().st_size for key in keys),
            "onnx_external_bytes": sum((staging / name).stat().st_size for name in locations if (staging / name).is_file())}


def external_data_files(path: Path) -> set[str]:
    """The external-data ``location`` of every tensor of the ONNX file ``path`` (main graph, subgraphs, functions),
    without loading the data (the exporter wrote these files; the runtime confines them on its side)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    found: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        tensors = list(graph.initializer) + [attr.t for node in graph.node for attr in node.attribute if attr.HasField("t")]
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                found.update(entry.value for entry in tensor.external_data if entry.key == "location")
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    for function in model.functions:
        visit(onnx.helper.make_graph(list(function.node), function.name, [], []))
    return found


def refresh_after_validation(staging: Path, artifacts: list[ArtifactEntry]) -> list[ArtifactEntry]:
    """After validation removed failing ``.ort`` files: remake the config (and the ``ort`` entry) from the ones left,
    or drop the config when none is left. Returns the updated entries (unchanged when ``ort`` was not made)."""
    entry = next((item for item in artifacts if item.key == ORT_KEY and item.status == "written"), None)
    if entry is None:
        return artifacts
    keys = [item.key[len(ORT_PREFIX):] for item in artifacts if item.key.startswith(ORT_PREFIX) and item.status == "written"]
    if keys == entry.details.get("graphs"):
        return artifacts
    if not keys:
        (staging / ORT_CONFIG).unlink(missing_ok=True)
        replacement = ArtifactEntry(ORT_KEY, "skipped", "every ORT-format graph failed validation")
    else:
        operators = write_required_operators(staging, keys)
        replacement = ArtifactEntry(ORT_KEY, "written", details=ort_details(staging, keys, operators))
    return [replacement if item is entry else item for item in artifacts]


def table_line(entry: dict[str, Any]) -> str:
    """The export table's line for the manifest's ``artifacts["ort"]`` entry (written): graphs, operators, weights."""
    onnx_bytes = entry.get("onnx_bytes", 0) + entry.get("onnx_external_bytes", 0)
    ratio = entry.get("ort_bytes", 0) / max(1, onnx_bytes)
    shared = " + their external data" if entry.get("onnx_external_bytes") else ""
    return (f"{entry['file']}: {entry.get('operators', '?')} operators for {len(entry.get('graphs', []))} .ort graphs "
            f"({entry.get('ort_bytes', 0) / (1 << 20):.2f} MiB, {ratio:.2f}x the same .onnx graphs{shared}); "
            f"{entry.get('weights', '')}")
