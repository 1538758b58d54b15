"""One external-data file holds the network's weights for every ONNX graph of an export.

The traced score graph's initializers of at least :data:`SIZE_THRESHOLD` bytes are written once to
:data:`WEIGHTS_FILE` (``weights.onnx.data``) and replaced in the in-memory model by external-data
references (``data_location = EXTERNAL``, ``location`` / ``offset`` / ``length``, no bytes). The
composer (:mod:`.compose`) then copies only those small references into step, sampler, gpu_step and
gpu_sampler, so every graph points at the same offsets of the same file and composing copies no
tensor bytes. (The samplers' references sit in their inner ``Loop`` body; the JS host moves them to
the main graph when it loads from bytes, see ``runtime/js/external_data.js`` and docs/design.md.)

Offsets are aligned to :data:`ALIGNMENT` bytes (tensors of at least :data:`PAGE_ALIGN_FROM` bytes to
4096, so onnxruntime can memory-map them). Small initializers (scalars, shape constants) stay
inside each graph: onnx shape inference and onnxruntime's constant folding read them there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper, numpy_helper

__all__ = ["ALIGNMENT", "SIZE_THRESHOLD", "WEIGHTS_FILE", "SharedWeights", "detach_weights", "external_tensors"]

WEIGHTS_FILE = "weights.onnx.data"
SIZE_THRESHOLD = 256  # bytes; smaller initializers (shape constants, scalars: <= 64 bytes) stay in each graph
ALIGNMENT = 64
PAGE_ALIGN_FROM = 1 << 16  # tensors this big start on a 4096-byte boundary
PAGE = 4096


@dataclass(frozen=True)
class SharedWeights:
    """The weights file written by :func:`detach_weights`.

    Attributes:
        path: where it is now (the trace's scratch folder until :meth:`install` moves it).
        location: the relative name every graph's external-data entries use (:data:`WEIGHTS_FILE`).
        tensors: how many initializers it holds.
        weight_bytes: the tensors' bytes (without alignment padding).
    """

    path: Path
    location: str
    tensors: int
    weight_bytes: int

    def install(self, directory: str | os.PathLike) -> Path:
        """Move the file into ``directory`` (next to the graphs that name it); returns its new path."""
        target = Path(directory) / self.location
        if self.path.resolve() != target.resolve():
            shutil.move(str(self.path), str(target))  # a rename on one filesystem, else one copy
        return target


def _all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_graphs(subgraph)


def external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Every initializer of ``model`` (subgraphs included) stored as external data."""
    return [tensor for graph in _all_graphs(model.graph) for tensor in graph.initializer
            if tensor.data_location == TensorProto.EXTERNAL]


def _nbytes(tensor: TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    size = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    for dim in tensor.dims:
        size *= dim
    return size


# Only floating-point tensors are weights. Integer initializers are indices and shapes (a Split's sizes, a Reshape's
# shape): shape inference in onnx and onnxruntime must read them inline ("Cannot parse data from external tensors").
WEIGHT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE})


def detach_weights(model: onnx.ModelProto, path: str | os.PathLike, location: str = WEIGHTS_FILE,
                   size_threshold: int = SIZE_THRESHOLD) -> SharedWeights:
    """Write ``model``'s initializers of >= ``size_threshold`` bytes to ``path`` and make them external, in place.

    Args:
        model: the traced score model (its initializers carry their bytes; only :data:`WEIGHT_TYPES` are moved).
        path: the file to write (created or replaced).
        location: the name the external-data entries give (the file's name in the export directory).
        size_threshold: smaller initializers stay in the graph.

    Returns:
        :class:`SharedWeights` describing the file.
    """
    path = Path(path)
    offset = count = total = 0
    with open(path, "wb") as handle:
        for graph in _all_graphs(model.graph):
            for tensor in graph.initializer:
                if (tensor.data_location == TensorProto.EXTERNAL or tensor.data_type not in WEIGHT_TYPES
                        or _nbytes(tensor) < size_threshold):
                    continue
                if not tensor.HasField("raw_data"):  # typed fields (float_data, ...) -> raw little-endian bytes
                    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
                data = tensor.raw_data
                align = PAGE if len(data) >= PAGE_ALIGN_FROM else ALIGNMENT
                padding = -offset % align
                handle.write(b"\0" * padding)
                offset += padding
                handle.write(data)
                external_data_helper.set_external_data(tensor, location, offset, len(data))
                tensor.data_location = TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
                offset += len(data)
                count += 1
                total += len(data)
    return SharedWeights(path, location, count, total)
