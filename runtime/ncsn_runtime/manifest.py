"""The export directory's ``manifest.json``: its format and its typed, checked reader.

File hashing and verification (sha256 of listed files, session I/O against the contract) live in
:mod:`ncsn_runtime.verify`; the names are re-exported here for existing callers.

Written by :mod:`ncsn_export` and read by every host. Layout (format_version 1)::

    {
      "format": "ncsn-export", "format_version": 1,
      "model": {"name": str, "description": str, "sample_shape": [C, H, W] or [D], "dtype": "float32",
                "compute_dtype": "float32" | "float16", "is_image": bool, "init_range": [lo, hi],
                "data_range": [lo, hi], "final_denoise": bool, "num_train_timesteps": int},
      "scheduler_config": "scheduler/scheduler_config.json",
      "opset": int,
      "graphs": {"score" | "step" | "sampler" | "gpu_step" | "gpu_sampler": {"file": "score.onnx", "nodes": int,
                 "inputs": [{"name", "dtype", "shape"}], "outputs": [...],      # from ncsn_runtime.contract
                 "unsupported_ops": {"cpu" | "cuda" | "webgpu": ["Op(dtype)", ...]},   # optional
                 "external_data": ["weights.onnx.data"]}},   # informative: the runtimes read it from the graph
      "artifacts": {"<key>": {"file": str, "status": "written" | "skipped", "reason": str (when skipped),
                    "validated": bool (when written and validation ran), ...}},
                               # optional artifacts that were requested: gpu_step, gpu_sampler, torchscript
                               # ("network": "script" | "trace"), torch_export ("batch_range": [lo, hi | null])
                               # "ort:KEY" ({"file": "ort/KEY.ort", "graph": KEY}) and "ort" ({"file":
                               # "ort/required_operators.config", "graphs", "operators", "weights", ...}):
                               # ORT-format graphs, read back by ncsn_runtime.ort_format
                               # "mobile:score" / "mobile:step" ({"file": "mobile/KEY.onnx", "batch": B,
                               # "inputs", "outputs" (fixed shapes), "nodes", "usability", "external_data"}):
                               # fixed-shape NNAPI / Core ML graphs, read back by ncsn_runtime.mobile
      "export_seconds": {"trace": float, "compose": float, "<file>": float, "validation": float},
      "files": {"<relative path>": {"sha256": hex, "bytes": int}},
      "validation": [{"artifact", "graph", "mode", "check": "dynamic" | "full", "reference", "max_abs_diff",
                      "tolerance", "scale", "seconds", "bytes", "passed"}],
      "validation_schedule": {"dynamic": {"batch_size", "timesteps", "num_annealed_steps", "seeds"},
                              "full": {...same keys...} (when run), "tolerance", "full_tolerance",
                              "validated"},
      "versions": {"torch", "onnx", "onnxruntime", "onnxscript", "ncsn_export", "python"}
    }

A validation row passes when ``max_abs_diff <= tolerance * scale`` (``scale = max(1, max|reference|)``).
The builder is ``ncsn_export.exporters.manifest_builder``. Keys other than those checked by
:func:`read_manifest` are informative; readers must ignore keys they do not know (including graph
keys this runtime does not know).

An export directory is untrusted input (``SECURITY.md``). :func:`read_manifest` checks, before any
graph is opened:

* every path (``scheduler_config``, ``graphs[*].file``, ``files`` keys) is relative, free of ``.`` /
  ``..`` / backslashes, and does not lead outside the directory through a symlink
  (:func:`ncsn_runtime.fileio.confined_path`); a path that is read must be listed under ``files``
  with its ``sha256`` (64 hex digits) and ``bytes``, and both must match the file;
* ``sample_shape`` has 1 to :data:`MAX_SAMPLE_RANK` positive dims and at most
  :data:`MAX_SAMPLE_ELEMENTS` elements; ranges are finite with low < high; ``num_train_timesteps``
  (when present) is in [1, :data:`~ncsn_runtime.schedule.MAX_TRAIN_TIMESTEPS`] and must equal the
  scheduler config's (checked by the pipeline);
* each known graph's ``inputs`` / ``outputs`` table equals :data:`ncsn_runtime.contract.GRAPHS`
  (names, dtypes, ranks, sample dims); :func:`check_session_io` compares an opened onnxruntime
  session with the same contract.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contract import FORMAT_NAME, FORMAT_VERSION, GRAPHS, MANIFEST_NAME, SCHEDULER_CONFIG_PATH, GraphSpec
from .errors import ExportDirectoryError
from .fileio import read_json_object, write_json_atomic
from .schedule import MAX_TRAIN_TIMESTEPS
from .verify import check_session_io, check_unchanged, confined, file_entry, sha256_file, verify_graph_files, verify_listed_file

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_FILES",
    "MAX_SAMPLE_ELEMENTS",
    "MAX_SAMPLE_RANK",
    "ExportDirectoryError",
    "FileEntry",
    "GraphInfo",
    "Manifest",
    "ModelInfo",
    "TensorInfo",
    "check_session_io",
    "file_entry",
    "load_manifest",
    "parse_manifest",
    "read_manifest",
    "sha256_file",
    "verified_graph_path",
    "verified_path",
    "write_manifest",
]

MAX_SAMPLE_RANK = 8
MAX_SAMPLE_ELEMENTS = 1 << 24  # per sample (64 MiB of float32): a 2048 x 2048 x 4 image fits
MAX_FILES = 10_000
MAX_FILE_BYTES = 1 << 40
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """``files[relative]``: the sha256 (64 lowercase hex digits) and size in bytes of one file."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output as the manifest lists it (``shape`` holds ints and symbolic names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphInfo:
    """``graphs[key]``: the file, I/O table (checked against the contract), node count, unsupported ops."""

    key: str
    file: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    nodes: int | None = None
    unsupported_ops: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def spec(self) -> GraphSpec:
        return GRAPHS[self.key]


@dataclass(frozen=True)
class ModelInfo:
    """``model``: what the exported network samples."""

    name: str
    sample_shape: tuple[int, ...]
    description: str = ""
    dtype: str = "float32"
    compute_dtype: str = "float32"
    is_image: bool = True
    init_range: tuple[float, float] = (0.0, 1.0)
    data_range: tuple[float, float] = (0.0, 1.0)
    final_denoise: bool = False
    num_train_timesteps: int | None = None  # None: an older export that did not record it


@dataclass(frozen=True)
class Manifest:
    """A checked ``manifest.json`` of the export directory ``root`` (see the module docstring)."""

    root: Path
    format_version: int
    model: ModelInfo
    scheduler_config: str
    graphs: Mapping[str, GraphInfo]
    files: Mapping[str, FileEntry]
    opset: int | None
    raw: dict[str, Any]
    _verified: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)  # files hashed so far
    _stamps: dict[Path, tuple[int, int, int, int]] = field(default_factory=dict, compare=False, repr=False)  # as hashed

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def verified_path(self, relative: str) -> Path:
        """Path of a listed file inside ``root`` after checking its size and sha256 against the manifest."""
        return verify_listed_file(self.root, self.files, relative)

    def graph_path(self, key: str) -> Path:
        """Verified path of graph ``key``, after also verifying every external-data file it names (e.g. the shared
        ``weights.onnx.data``; each file is hashed once per manifest, :func:`~ncsn_runtime.verify.verify_graph_files`)."""
        if key not in self.graphs:
            raise ExportDirectoryError(f"{self.root} has no {key} graph (graphs: {sorted(self.graphs)})")
        return verify_graph_files(self.root, self.files, self.graphs[key].file, self._verified, self._stamps)

    def check_unchanged(self) -> None:
        """Every graph / external-data file verified so far is still the file that was hashed (call it after
        onnxruntime opened a graph by path: a file replaced or written in between is refused)."""
        check_unchanged(self._stamps)


def write_manifest(export_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``export_dir/manifest.json`` atomically (strict JSON: NaN / inf raise ``ValueError``)."""
    return write_json_atomic(Path(export_dir) / MANIFEST_NAME, manifest)


def read_manifest(export_dir: str | os.PathLike) -> Manifest:
    """Read and check ``export_dir/manifest.json``; raises :class:`ExportDirectoryError` naming the problem."""
    root = Path(export_dir)
    if not root.is_dir():
        raise ExportDirectoryError(f"export directory not found: {root}")
    path = root / MANIFEST_NAME
    if path.is_symlink() or not path.is_file():
        raise ExportDirectoryError(f"{path} is missing (or a symlink): {root} is not an ncsn-export directory")
    try:
        raw = read_json_object(path)
    except (OSError, ValueError) as error:
        raise ExportDirectoryError(str(error)) from None
    return parse_manifest(root, raw)


def parse_manifest(export_dir: str | os.PathLike, raw: Any) -> Manifest:
    """Check an already parsed ``manifest.json`` of ``export_dir`` (see :func:`read_manifest`)."""
    root = Path(export_dir)
    where = str(root / MANIFEST_NAME)
    if not isinstance(raw, dict):
        raise ExportDirectoryError(f"{where} must hold a JSON object, got {type(raw).__name__}")
    if raw.get("format") != FORMAT_NAME:
        raise ExportDirectoryError(f"{where} is not an ncsn-export manifest (format={raw.get('format')!r})")
    version = raw.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ExportDirectoryError(f"{where} has format_version {version!r}; this runtime reads {FORMAT_VERSION}")
    for key in ("model", "graphs", "files"):
        if not isinstance(raw.get(key), dict):
            raise ExportDirectoryError(f"{where} lacks the `{key}` section (an object)")
    files = _files(root, raw["files"], where)
    model = _model(raw["model"], where)
    graphs = {key: _graph(root, key, entry, model.sample_shape, where) for key, entry in raw["graphs"].items() if key in GRAPHS}
    config = raw.get("scheduler_config", SCHEDULER_CONFIG_PATH)
    _relative(root, config, f"{where}: scheduler_config")
    opset = raw.get("opset")
    if opset is not None and not _is_int(opset, 1, 1000):
        raise ExportDirectoryError(f"{where}: opset must be an int in [1, 1000], got {opset!r}")
    return Manifest(root, version, model, config, graphs, files, opset, raw)


def load_manifest(export_dir: str | os.PathLike) -> dict[str, Any]:
    """:func:`read_manifest`'s checks, returning the plain parsed dict (for callers that index it)."""
    return read_manifest(export_dir).raw


def verified_path(export_dir: str | os.PathLike, manifest: dict[str, Any] | Manifest, relative: str) -> Path:
    """Path of a listed file inside ``export_dir`` after checking its size and sha256 against the manifest."""
    if isinstance(manifest, Manifest):
        return manifest.verified_path(relative)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise ExportDirectoryError(f"{MANIFEST_NAME} lacks the `files` section")
    return verify_listed_file(Path(export_dir), _files(Path(export_dir), files, MANIFEST_NAME), relative)


def verified_graph_path(export_dir: str | os.PathLike, manifest: dict[str, Any] | Manifest, relative: str) -> Path:
    """Like :func:`verified_path` for an ONNX graph: also verifies every external-data file it names
    (:func:`~ncsn_runtime.verify.verify_graph_files`)."""
    if isinstance(manifest, Manifest):
        return verify_graph_files(manifest.root, manifest.files, relative, manifest._verified)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise ExportDirectoryError(f"{MANIFEST_NAME} lacks the `files` section")
    return verify_graph_files(Path(export_dir), _files(Path(export_dir), files, MANIFEST_NAME), relative)


# -- checks of each section ------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    """A JSON number that is a finite float64 (huge ints are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _relative(root: Path, value: Any, what: str) -> str:
    confined(root, value, what)
    return value


def _files(root: Path, files: dict[str, Any], where: str) -> dict[str, FileEntry]:
    if len(files) > MAX_FILES:
        raise ExportDirectoryError(f"{where}: `files` lists {len(files)} entries; at most {MAX_FILES}")
    out = {}
    for relative, entry in files.items():
        _relative(root, relative, f"{where}: files entry")
        if not isinstance(entry, dict):
            raise ExportDirectoryError(f"{where}: files[{relative!r}] must be an object with sha256 and bytes, got {entry!r}")
        digest, size = entry.get("sha256"), entry.get("bytes")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ExportDirectoryError(f"{where}: files[{relative!r}].sha256 must be 64 lowercase hex digits, got {digest!r}")
        if not _is_int(size, 0, MAX_FILE_BYTES):
            raise ExportDirectoryError(f"{where}: files[{relative!r}].bytes must be an int in [0, 2**40], got {size!r}")
        out[relative] = FileEntry(digest, size)
    return out


def _range(model: dict[str, Any], key: str, where: str) -> tuple[float, float]:
    value = model.get(key, [0.0, 1.0])
    ok = isinstance(value, list) and len(value) == 2 and all(_finite(v) for v in value) and float(value[0]) < float(value[1])
    if not ok:
        raise ExportDirectoryError(f"{where}: model.{key} must be [low, high], finite, low < high, got {value!r}")
    return float(value[0]), float(value[1])


def _bool(model: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = model.get(key, default)
    if not isinstance(value, bool):
        raise ExportDirectoryError(f"{where}: model.{key} must be true or false, got {value!r}")
    return value


def _model(model: dict[str, Any], where: str) -> ModelInfo:
    shape = model.get("sample_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= MAX_SAMPLE_RANK
            or not all(_is_int(size, 1, MAX_SAMPLE_ELEMENTS) for size in shape) or math.prod(shape) > MAX_SAMPLE_ELEMENTS):
        raise ExportDirectoryError(f"{where}: model.sample_shape must be 1 to {MAX_SAMPLE_RANK} positive ints with at most "
                                   f"{MAX_SAMPLE_ELEMENTS} elements in all, got {shape!r}")
    dtype = model.get("dtype", "float32")
    if dtype != "float32":
        raise ExportDirectoryError(f"{where}: model.dtype {dtype!r} is not supported; this runtime reads float32 exports")
    compute = model.get("compute_dtype", "float32")
    if compute not in ("float32", "float16"):
        raise ExportDirectoryError(f"{where}: model.compute_dtype must be float32 or float16, got {compute!r}")
    levels = model.get("num_train_timesteps")
    if levels is not None and not _is_int(levels, 1, MAX_TRAIN_TIMESTEPS):
        raise ExportDirectoryError(f"{where}: model.num_train_timesteps must be an int in [1, {MAX_TRAIN_TIMESTEPS}], "
                                   f"got {levels!r}")
    name, description = model.get("name", ""), model.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ExportDirectoryError(f"{where}: model.name and model.description must be strings")
    return ModelInfo(name=name, sample_shape=tuple(shape), description=description, dtype=dtype, compute_dtype=compute,
                     is_image=_bool(model, "is_image", len(shape) == 3, where),
                     init_range=_range(model, "init_range", where), data_range=_range(model, "data_range", where),
                     final_denoise=_bool(model, "final_denoise", False, where), num_train_timesteps=levels)


def _tensors(entries: Any, expected: tuple, sample_shape: Sequence[int], what: str) -> tuple[TensorInfo, ...]:
    if entries is None:  # an older manifest without the table: the contract's
        return tuple(TensorInfo(t.name, t.dtype, tuple(t.concrete_shape(sample_shape))) for t in expected)
    if not isinstance(entries, list) or not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in entries):
        raise ExportDirectoryError(f"{what} must be a list of {{name, dtype, shape}} objects")
    listed = {item["name"]: item for item in entries}
    names = [t.name for t in expected]
    if sorted(map(str, listed)) != sorted(names) or len(entries) != len(names):
        raise ExportDirectoryError(f"{what} lists {[item.get('name') for item in entries]}; the graph contract has {names}")
    out = []
    for tensor in expected:
        item = listed[tensor.name]
        want = tensor.concrete_shape(sample_shape)
        shape = item.get("shape")
        if item.get("dtype") != tensor.dtype:
            raise ExportDirectoryError(f"{what}: `{tensor.name}` has dtype {item.get('dtype')!r}; "
                                       f"the contract says {tensor.dtype}")
        if (not isinstance(shape, list) or len(shape) != len(want)
                or any(not (isinstance(got, str) or _is_int(got, 0, 2**62)) for got in shape)
                or any(isinstance(need, int) and got != need for got, need in zip(shape, want, strict=True))):
            raise ExportDirectoryError(f"{what}: `{tensor.name}` has shape {shape!r}; the contract and model.sample_shape "
                                       f"give {want}")
        out.append(TensorInfo(tensor.name, tensor.dtype, tuple(shape)))
    return tuple(out)


def _graph(root: Path, key: str, entry: Any, sample_shape: Sequence[int], where: str) -> GraphInfo:
    what = f"{where}: graphs.{key}"
    if not isinstance(entry, dict):
        raise ExportDirectoryError(f"{what} must be an object, got {entry!r}")
    relative = _relative(root, entry.get("file"), f"{what}.file")
    spec = GRAPHS[key]
    inputs = _tensors(entry.get("inputs"), spec.inputs, sample_shape, f"{what}.inputs")
    outputs = _tensors(entry.get("outputs"), spec.outputs, sample_shape, f"{what}.outputs")
    nodes = entry.get("nodes")
    if nodes is not None and not _is_int(nodes, 0, 2**40):
        raise ExportDirectoryError(f"{what}.nodes must be a non-negative int, got {nodes!r}")
    unsupported = entry.get("unsupported_ops", {})
    if not isinstance(unsupported, dict) or not all(
            isinstance(ops, list) and all(isinstance(op, str) for op in ops) for ops in unsupported.values()):
        raise ExportDirectoryError(f"{what}.unsupported_ops must map provider names to lists of op names")
    return GraphInfo(key, relative, inputs, outputs, nodes, {name: tuple(ops) for name, ops in unsupported.items()})
