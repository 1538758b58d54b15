"""ORT-format graphs of an export (``ort/KEY.ort``, written by ``ncsn-export --artifacts ort``).

The manifest lists each one under ``artifacts["ort:KEY"]`` (``{"file": "ort/KEY.ort", "status": "written", ...}``)
and hashes it under ``files`` like every file. :func:`ort_graph_files` reads and checks those entries;
:func:`ort_manifest` gives a view of a checked :class:`~ncsn_runtime.manifest.Manifest` whose graphs *are* the
``.ort`` files, so the pipeline opens, verifies (sha256, confined paths) and drives them exactly like the ONNX graphs
(``NCSNPipeline.from_pretrained(dir, graph_format="ort")``). onnxruntime loads a ``.ort`` file by its extension.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .contract import GRAPHS, ORT_PREFIX, ort_file
from .errors import ExportDirectoryError
from .manifest import Manifest
from .verify import confined, verify_listed_file

__all__ = ["GRAPH_FORMATS", "OrtManifest", "check_graph_format", "ort_graph_files", "ort_manifest"]

GRAPH_FORMATS = ("onnx", "ort")


def check_graph_format(graph_format: Any) -> str:
    """``"onnx"`` or ``"ort"``; else ``ValueError`` naming the argument and the accepted values."""
    if graph_format not in GRAPH_FORMATS:
        raise ValueError(f"`graph_format` must be one of {', '.join(GRAPH_FORMATS)}, got {graph_format!r}")
    return str(graph_format)


def ort_graph_files(info: Manifest) -> dict[str, str]:
    """Contract key -> relative ``.ort`` path of every written ORT-format graph whose ONNX graph the manifest lists.

    Raises :class:`ExportDirectoryError` for a malformed entry: a file that is not ``ort/KEY.ort`` (so an entry can
    neither leave the directory nor point the ORT view at another file) or an ``ort:`` key the contract does not know.
    """
    artifacts = info.raw.get("artifacts", {})
    if not isinstance(artifacts, dict):
        raise ExportDirectoryError(f"{info.path}: `artifacts` must be an object, got {type(artifacts).__name__}")
    found: dict[str, str] = {}
    for name, entry in artifacts.items():
        if not isinstance(name, str) or not name.startswith(ORT_PREFIX):
            continue
        key = name[len(ORT_PREFIX):]
        what = f"{info.path}: artifacts.{name}"
        if not isinstance(entry, dict):
            raise ExportDirectoryError(f"{what} must be an object, got {entry!r}")
        if entry.get("status") != "written":
            continue
        if key not in GRAPHS:
            raise ExportDirectoryError(f"{what}: {key!r} is not a graph of the contract ({', '.join(GRAPHS)})")
        if entry.get("file") != ort_file(key):
            raise ExportDirectoryError(f"{what}.file must be {ort_file(key)!r}, got {entry.get('file')!r}")
        confined(info.root, entry["file"], f"{what}.file")
        if key in info.graphs:  # the I/O table comes from the ONNX graph's entry (same inputs and outputs)
            found[key] = entry["file"]
    return found


@dataclasses.dataclass(frozen=True)
class OrtManifest(Manifest):
    """A :class:`Manifest` whose graphs are ``.ort`` files. An ORT-format file carries its weights inside (the
    format has no external data), so verifying a graph is verifying that one file: listed, confined, size and
    sha256. (An ONNX graph's path also verifies the external-data files it names; a ``.ort`` is not a protobuf.)"""

    def graph_path(self, key: str) -> Path:
        if key not in self.graphs:
            raise ExportDirectoryError(f"{self.root} has no ORT-format {key} graph (ORT graphs: {sorted(self.graphs)})")
        return verify_listed_file(self.root, self.files, self.graphs[key].file, self._stamps)  # stamped: check_unchanged


def ort_manifest(info: Manifest) -> OrtManifest:
    """The manifest as seen through its ORT-format graphs: ``graphs`` keeps only the keys with a ``.ort`` file,
    each pointing at it. Raises :class:`ExportDirectoryError` when the export has none (exported without ``ort``)."""
    files = ort_graph_files(info)
    if not files:
        raise ExportDirectoryError(f"{info.root} has no ORT-format graphs (export it with `--artifacts ...,ort`)")
    graphs = {key: dataclasses.replace(info.graphs[key], file=relative) for key, relative in files.items()}
    raw = {**info.raw, "graphs": {key: {**info.raw["graphs"][key], "file": relative} for key, relative in files.items()}}
    fields = {field.name: getattr(info, field.name) for field in dataclasses.fields(info) if field.init}
    return OrtManifest(**{**fields, "graphs": graphs, "raw": raw})
