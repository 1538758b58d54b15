"""The exporter's typed ``manifest.json`` builder (the layout is documented in :mod:`ncsn_runtime.manifest`).

Graph I/O comes from the contract (:meth:`ncsn_runtime.contract.GraphSpec.concrete_inputs`), never from
a second list here; the writer (:func:`ncsn_export.exporters.api.write`) checks each ONNX graph against
the same contract before the manifest names it.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncsn_runtime.contract import (
    ARTIFACTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    GRAPHS,
    ORT_CONFIG,
    ORT_PREFIX,
    SCHEDULER_CONFIG_PATH,
    ort_file,
)
from ncsn_runtime.external_data import external_data_locations
from ncsn_runtime.manifest import file_entry, write_manifest
from ncsn_runtime.mobile import MOBILE_PREFIX, mobile_file
from ncsn_runtime.ownership import MARKER_NAME

from .validate import ValidationReport


@dataclass(frozen=True)
class ModelInfo:
    """``manifest["model"]``."""

    name: str
    description: str
    sample_shape: tuple[int, ...]
    compute_dtype: str  # "float32" or "float16" (the network inside the graphs; I/O stays float32)
    is_image: bool
    init_range: tuple[float, float]
    data_range: tuple[float, float]
    final_denoise: bool
    num_train_timesteps: int  # the level count the network was exported with (checked against the scheduler config)
    dtype: str = "float32"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "sample_shape": list(self.sample_shape),
                "dtype": self.dtype, "compute_dtype": self.compute_dtype, "is_image": self.is_image,
                "init_range": [float(v) for v in self.init_range], "data_range": [float(v) for v in self.data_range],
                "final_denoise": self.final_denoise, "num_train_timesteps": int(self.num_train_timesteps)}


@dataclass(frozen=True)
class GraphEntry:
    """``manifest["graphs"][key]``: file, node count, contract I/O, and ops without kernels per execution provider."""

    key: str
    nodes: int
    unsupported_ops: dict[str, list[str]] | None = None

    def as_dict(self, sample_shape: tuple[int, ...]) -> dict[str, Any]:
        spec = GRAPHS[self.key]
        entry: dict[str, Any] = {"file": spec.file, "nodes": self.nodes, "inputs": spec.concrete_inputs(sample_shape),
                                 "outputs": spec.concrete_outputs(sample_shape)}
        if self.unsupported_ops is not None:
            entry["unsupported_ops"] = {provider: list(ops) for provider, ops in self.unsupported_ops.items()}
        return entry


@dataclass(frozen=True)
class ArtifactEntry:
    """``manifest["artifacts"][key]`` for an optional artifact (graph or torch file) that was requested.

    ``status`` is ``"written"`` or ``"skipped"`` (then ``reason`` says why); ``details`` holds per-artifact
    facts (``sampler.pt``: ``network`` "script"/"trace"; ``sampler.pt2``: ``batch_range`` [lo, hi or null];
    ``ort:KEY`` / ``ort``: see :mod:`.ort_format`).
    """

    key: str
    status: str
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def file(self) -> str:
        if self.key.startswith(ORT_PREFIX):  # ort:KEY -> ort/KEY.ort (.ort_format)
            return ort_file(self.key[len(ORT_PREFIX):])
        if self.key == "ort":
            return ORT_CONFIG
        if self.key.startswith(MOBILE_PREFIX):  # mobile:KEY -> mobile/KEY.onnx (.mobile_artifact)
            return mobile_file(self.key[len(MOBILE_PREFIX):])
        return GRAPHS[self.key].file if self.key in GRAPHS else ARTIFACTS[self.key]

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"file": self.file, "status": self.status, **self.details}
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


@dataclass
class ManifestBuilder:
    """Collects the facts of an export and writes ``manifest.json`` (atomically, with every file's sha256)."""

    model: ModelInfo
    opset: int
    graphs: list[GraphEntry] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    export_seconds: dict[str, float] = field(default_factory=dict)
    validation: ValidationReport | None = None
    validated: bool = False
    versions: dict[str, str] = field(default_factory=dict)

    def build(self, directory: Path) -> dict[str, Any]:
        """The manifest dict for ``directory`` (files listed with sha256 and size)."""
        files = sorted(path for path in Path(directory).rglob("*") if path.is_file()
                       and path.name != "manifest.json"
                       and path.relative_to(directory).as_posix() != MARKER_NAME)  # the staging marker is not exported
        report = self.validation or ValidationReport()
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model": self.model.as_dict(),
            "scheduler_config": SCHEDULER_CONFIG_PATH,
            "opset": self.opset,
            "graphs": {entry.key: _with_external_data(entry.as_dict(self.model.sample_shape), directory)
                       for entry in self.graphs},
            "artifacts": {entry.key: entry.as_dict() for entry in self.artifacts},
            "export_seconds": dict(self.export_seconds),
            "validation": [row.as_dict() for row in report.rows],
            "validation_schedule": {
                **report.schedules,
                "tolerance": report.tolerance,
                "full_tolerance": report.full_tolerance,
                "reference_seconds": {name: round(value, 3) for name, value in report.reference_seconds.items()},
                "validated": self.validated,
            },
            "versions": dict(self.versions),
            "files": {path.relative_to(directory).as_posix(): file_entry(path) for path in files},
        }

    def write(self, directory: Path) -> dict[str, Any]:
        """Build and write ``directory/manifest.json``; returns the manifest."""
        manifest = self.build(directory)
        write_manifest(directory, manifest)
        return manifest


def _with_external_data(entry: dict[str, Any], directory: Path) -> dict[str, Any]:
    """``entry`` plus ``external_data``: the files the graph reads its weights from (e.g. ``["weights.onnx.data"]``),
    read from the graph file itself; hosts that load graphs from bytes (onnxruntime-web) pass exactly these."""
    path = Path(directory) / entry["file"]
    locations = external_data_locations(path) if path.is_file() else []
    return {**entry, "external_data": locations} if locations else entry


def versions() -> dict[str, str]:
    """Versions of the tools that made the export."""
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from .. import __version__

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxscript": onnxscript.__version__, "ncsn_export": __version__, "python": platform.python_version()}
