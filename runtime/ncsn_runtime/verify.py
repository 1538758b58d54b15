"""File verification of an export directory: sha256 of listed files, confined paths, session I/O vs the contract.

The manifest's format and typed reader live in :mod:`ncsn_runtime.manifest`; this module checks the files
that a manifest lists (``files[relative] = {"sha256", "bytes"}``) and the onnxruntime sessions opened from
them. Every check raises :class:`~ncsn_runtime.errors.ExportDirectoryError` naming the file and the cause.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .contract import GRAPHS, MANIFEST_NAME
from .errors import ExportDirectoryError
from .external_data import ExternalDataError, external_data_locations
from .fileio import PathConfinementError, confined_path, open_regular

__all__ = ["check_session_io", "confined", "file_entry", "sha256_file", "verify_graph_files", "verify_listed_file"]

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


class ListedFile(Protocol):
    """What the manifest records of one file (:class:`ncsn_runtime.manifest.FileEntry`)."""

    sha256: str
    bytes: int


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a regular file (``ValueError`` for a FIFO / device), read in chunks (constant memory)."""
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of one file, as stored under ``manifest["files"]``."""
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def confined(root: Path, value: Any, what: str) -> Path:
    """``root / value`` when ``value`` is a relative path that stays inside ``root`` (else :class:`ExportDirectoryError`)."""
    try:
        return confined_path(root, value, what)
    except PathConfinementError as error:
        raise ExportDirectoryError(str(error)) from None


def file_stamp(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(device, inode, size, ctime in ns) of a file: any write, rename or replacement after it was taken changes it
    (a writer cannot set ctime back)."""
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_ctime_ns


def check_unchanged(stamps: Mapping[Path, tuple[int, int, int, int]]) -> None:
    """Raise :class:`ExportDirectoryError` when a verified file is no longer the one hashed (``stamps``: path ->
    :func:`file_stamp` taken before its sha256 check), e.g. after onnxruntime opened it by path."""
    for path, stamp in stamps.items():
        try:
            now = file_stamp(path)
        except OSError:
            now = None
        if now != stamp:
            raise ExportDirectoryError(f"{path} changed while it was loaded (replaced or written after its sha256 check); "
                                       "nothing was run")


def verify_listed_file(root: Path, files: Mapping[str, ListedFile], relative: str,
                       stamps: MutableMapping[Path, tuple[int, int, int, int]] | None = None) -> Path:
    """Path of ``root / relative`` after checking that it is listed, a regular file inside ``root``, and that its
    size and sha256 match the listing; with ``stamps``, the file's :func:`file_stamp` from before the hash is added."""
    entry = files.get(relative)
    if entry is None:
        raise ExportDirectoryError(f"{relative} is not listed in {MANIFEST_NAME}")
    path = confined(root, relative, "file")
    if not path.is_file():
        raise ExportDirectoryError(f"{root / relative} is listed in {MANIFEST_NAME} but missing (or not a regular file)")
    stamp = file_stamp(path)
    size = stamp[2]
    if size != entry.bytes:
        raise ExportDirectoryError(f"{path} is {size} bytes, {MANIFEST_NAME} says {entry.bytes} (truncated or replaced?)")
    try:
        digest = sha256_file(path)
    except (OSError, ValueError) as error:  # replaced by a FIFO / device meanwhile, or unreadable
        raise ExportDirectoryError(f"cannot read {path}: {error}") from None
    if digest != entry.sha256:
        raise ExportDirectoryError(f"{path} sha256 {digest[:12]}... does not match {MANIFEST_NAME} ({entry.sha256[:12]}...)")
    if stamps is not None:
        stamps[path] = stamp
    return path


def verify_graph_files(root: Path, files: Mapping[str, ListedFile], relative: str,
                       verified: MutableMapping[str, Path] | None = None,
                       stamps: MutableMapping[Path, tuple[int, int, int, int]] | None = None) -> Path:
    """Verified path of the ONNX graph ``root / relative`` and of every external-data file it names.

    The graph is verified like any listed file (:func:`verify_listed_file`); then the ``location`` of each of its
    external tensors (Loop bodies and functions included, :func:`~ncsn_runtime.external_data.external_data_locations`),
    resolved against the graph's folder as onnxruntime does, must be a confined relative path, listed in the
    manifest, and match its size and sha256. ``verified`` (relative path -> path) skips files already hashed, so a
    weights file shared by several graphs is hashed once. Raises :class:`ExportDirectoryError`.
    """
    verified = {} if verified is None else verified
    if relative not in verified:
        verified[relative] = verify_listed_file(root, files, relative, stamps)
    path = verified[relative]
    try:
        locations = external_data_locations(path)
    except (ExternalDataError, OSError) as error:
        raise ExportDirectoryError(f"{path} is not a readable ONNX model: {error}") from None
    folder = posixpath.dirname(relative)
    for location in locations:
        confined(root, location, f"external-data location of {relative}")  # no absolute paths, `..`, odd components
        data = posixpath.join(folder, location) if folder else location
        if data not in files:
            raise ExportDirectoryError(f"{relative} reads external data from {data!r}, which {MANIFEST_NAME} does not "
                                       "list; refusing to let onnxruntime read an unverified file")
        if data not in verified:
            verified[data] = verify_listed_file(root, files, data, stamps)
    return path


def check_session_io(session: Any, key: str, sample_shape: Sequence[int], path: str | os.PathLike) -> None:
    """Compare an onnxruntime session's inputs and outputs with the contract's graph ``key``.

    Names must match exactly; dtypes must match; ranks must match; every dim that both the graph and the
    contract fix (the sample dims) must be equal. Raises :class:`ExportDirectoryError`.
    """
    spec = GRAPHS[key]
    sides = (("inputs", spec.inputs, session.get_inputs()), ("outputs", spec.outputs, session.get_outputs()))
    for kind, expected, actual in sides:
        names = sorted(item.name for item in actual)
        if names != sorted(item.name for item in expected):
            raise ExportDirectoryError(f"{path} has {kind} {names}; the graph contract of `{key}` expects "
                                       f"{[item.name for item in expected]}")
        by_name = {item.name: item for item in actual}
        for tensor in expected:
            item = by_name[tensor.name]
            dtype = _ORT_DTYPES.get(item.type, item.type)
            want = tensor.concrete_shape(sample_shape)
            shape = list(item.shape) if item.shape is not None else None
            if dtype != tensor.dtype:
                raise ExportDirectoryError(f"{path}: {kind[:-1]} `{tensor.name}` is {dtype}; the contract expects {tensor.dtype}")
            fixed_differ = shape is not None and len(shape) == len(want) and any(
                isinstance(got, int) and isinstance(need, int) and got != need for got, need in zip(shape, want, strict=True))
            if shape is not None and (len(shape) != len(want) or fixed_differ):
                raise ExportDirectoryError(f"{path}: {kind[:-1]} `{tensor.name}` has shape {shape}; the contract and the "
                                           f"manifest's sample_shape {list(sample_shape)} give {want}")
