"""The export directory's ``manifest.json``: its format, reading, hashing and verification.

Written by :mod:`ncsn_export` and read by every host. Layout (format_version 1)::

    {
      "format": "ncsn-export", "format_version": 1,
      "model": {"name": str, "description": str, "sample_shape": [C, H, W] or [D], "dtype": "float32",
                "compute_dtype": "float32" | "float16", "is_image": bool, "init_range": [lo, hi],
                "data_range": [lo, hi], "final_denoise": bool},
      "scheduler_config": "scheduler/scheduler_config.json",
      "opset": int,
      "graphs": {"score" | "step" | "sampler" | "gpu_step" | "gpu_sampler": {"file": "score.onnx", "nodes": int,
                 "inputs": [{"name", "dtype", "shape"}], "outputs": [...],      # from ncsn_runtime.contract
                 "unsupported_ops": {"cpu" | "cuda" | "webgpu": ["Op(dtype)", ...]}}},   # optional
      "artifacts": {"<key>": {"file": str, "status": "written" | "skipped", "reason": str (when skipped),
                    "validated": bool (when written and validation ran), ...}},
                               # optional artifacts that were requested: gpu_step, gpu_sampler, torchscript
                               # ("network": "script" | "trace"), torch_export ("batch_range": [lo, hi | null])
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
:func:`load_manifest` are informative; readers must ignore keys they do not know.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .config import write_json_atomic
from .contract import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "ExportDirectoryError", "load_manifest", "verified_path"]


class ExportDirectoryError(ValueError):
    """An export directory is missing, incomplete, corrupt or of an unknown format."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of one file, as stored under ``manifest["files"]``."""
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def write_manifest(export_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``export_dir/manifest.json`` atomically."""
    return write_json_atomic(Path(export_dir) / MANIFEST_NAME, manifest)


def load_manifest(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``manifest.json``; raises :class:`ExportDirectoryError` naming the problem."""
    root = Path(export_dir)
    if not root.is_dir():
        raise ExportDirectoryError(f"export directory not found: {root}")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ExportDirectoryError(f"{path} is missing: {root} is not an ncsn-export directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportDirectoryError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ExportDirectoryError(f"{path} is not an ncsn-export manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ExportDirectoryError(f"{path} has format_version {version!r}; this runtime reads {FORMAT_VERSION}")
    for key in ("model", "graphs", "files"):
        if not isinstance(manifest.get(key), dict):
            raise ExportDirectoryError(f"{path} lacks the `{key}` section")
    return manifest


def verified_path(export_dir: str | os.PathLike, manifest: dict[str, Any], relative: str) -> Path:
    """Path of a listed file after checking it exists and its sha256 matches the manifest."""
    entry = manifest["files"].get(relative)
    if entry is None:
        raise ExportDirectoryError(f"{relative} is not listed in {MANIFEST_NAME}")
    path = Path(export_dir) / relative
    if not path.is_file():
        raise ExportDirectoryError(f"{path} is listed in {MANIFEST_NAME} but missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ExportDirectoryError(f"{path} is {size} bytes, {MANIFEST_NAME} says {entry['bytes']} (truncated or replaced?)")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ExportDirectoryError(f"{path} sha256 {digest[:12]}... does not match {MANIFEST_NAME} ({entry['sha256'][:12]}...)")
    return path
