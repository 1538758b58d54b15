"""External-data locations named inside an ONNX model file, read without the ``onnx`` package.

onnxruntime loads a tensor whose ``data_location`` is ``EXTERNAL`` from the file named by its
``external_data`` entry ``location`` (relative to the model's folder). The runtime must check those
files against the manifest (listed, sha256, inside the export directory) before onnxruntime reads
them, so it needs the locations; :func:`external_data_locations` reads them from the protobuf wire
format directly (``ncsn_runtime`` depends on numpy + onnxruntime only).

Walked: ``ModelProto.graph`` and ``.functions``; in a graph its initializers, sparse initializers and
every node attribute holding a tensor or a subgraph (``Loop`` / ``If`` / ``Scan`` bodies), recursively.
Large ``raw_data`` fields are skipped by length, and a file is memory-mapped, so a model with embedded weights is
walked in milliseconds without reading (or holding) its weights. A malformed or too deeply nested file raises
:class:`ExternalDataError`.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["MAX_DEPTH", "ExternalDataError", "external_data_locations"]

MAX_DEPTH = 64  # nested subgraphs (a Loop in a Loop is depth 3 or so); deeper is refused, never a RecursionError

# field numbers (onnx/onnx.proto3)
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class ExternalDataError(ValueError):
    """The file is not a well-formed ONNX protobuf (or nests subgraphs deeper than :data:`MAX_DEPTH`)."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ExternalDataError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview):
    """Yield ``(field_number, wire_type, value)``; ``value`` is a memoryview for length-delimited fields, else an int."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = 0, pos + 8
        elif wire == 5:
            value, pos = 0, pos + 4
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ExternalDataError("a length-delimited field runs past the end of its message")
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ExternalDataError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ExternalDataError("a fixed-size field runs past the end of its message")
        yield number, wire, value


def _tensor(data: memoryview, found: list[str]) -> None:
    external, locations = False, []
    for number, wire, value in _fields(data):
        if number == _TENSOR_DATA_LOCATION and wire == 0:
            external = value == _EXTERNAL
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {key: item for key, wire_type, item in _fields(value) if wire_type == 2}
            if bytes(entry.get(1, b"")) == b"location":
                locations.append(bytes(entry.get(2, b"")).decode("utf-8", errors="replace"))
    if external or locations:
        if not locations:
            raise ExternalDataError("a tensor has data_location EXTERNAL but no `location`")
        found.extend(locations)


def _sparse(data: memoryview, found: list[str]) -> None:
    for number, wire, value in _fields(data):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES) and wire == 2:
            _tensor(value, found)


def _graph(data: memoryview, found: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExternalDataError(f"subgraphs nest deeper than {MAX_DEPTH} levels")
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if number == _GRAPH_INITIALIZER:
            _tensor(value, found)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            _sparse(value, found)
        elif number == _GRAPH_NODE:
            _node(value, found, depth)


def _node(data: memoryview, found: list[str], depth: int) -> None:
    for number, wire, value in _fields(data):
        if number != _NODE_ATTRIBUTE or wire != 2:
            continue
        for attr_number, attr_wire, item in _fields(value):
            if attr_wire != 2:
                continue
            if attr_number in (_ATTR_T, _ATTR_TENSORS):
                _tensor(item, found)
            elif attr_number in (_ATTR_SPARSE, _ATTR_SPARSES):
                _sparse(item, found)
            elif attr_number in (_ATTR_G, _ATTR_GRAPHS):
                _graph(item, found, depth + 1)


def external_data_locations(model: bytes | memoryview | str | os.PathLike) -> list[str]:
    """The distinct ``location`` strings of every external tensor in an ONNX model (bytes or a file path), in order.

    Raises:
        ExternalDataError: the bytes are not a well-formed ONNX protobuf.
    """
    if isinstance(model, (str, os.PathLike)):
        from .fileio import open_regular

        with open_regular(model) as handle:  # a regular file only; mapped, so only the walked pages are read
            size = os.fstat(handle.fileno()).st_size
            if not size:
                return _locations(memoryview(b""))
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    return _locations(view)
                finally:
                    view.release()  # every slice of it is gone with _locations' frames: the map can close
    return _locations(memoryview(model))


def _locations(data: memoryview) -> list[str]:
    found: list[str] = []
    for number, wire, value in _fields(data):
        if wire != 2:
            continue
        if number == _MODEL_GRAPH:
            _graph(value, found, 1)
        elif number == _MODEL_FUNCTIONS:
            for function_number, function_wire, item in _fields(value):
                if function_number == _FUNCTION_NODE and function_wire == 2:
                    _node(item, found, 1)
    return list(dict.fromkeys(found))
