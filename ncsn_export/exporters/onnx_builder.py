"""A tiny ONNX graph builder: unique value names, one node per call, constants as the graph's own initializers.

Used by :mod:`.onnx_noise` and :mod:`.compose` to write the network-free parts of the graph family
(noise, Langevin update, loops) with :mod:`onnx.helper`. Constants become initializers of the graph
being built, so inside a ``Loop`` body they are the body's own constants, which onnxruntime can fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers of one ONNX graph; every produced name carries ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []  # shape hints of intermediate values (e.g. an inlined network's)
        self._count = 0
        self._constants: dict[tuple[str, bytes, tuple[int, ...]], str] = {}

    def fresh(self, hint: str) -> str:
        """A new unique value name."""
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = None, hint: str = "c") -> str:
        """An initializer holding ``np.asarray(value, dtype)``; equal constants are shared."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.tobytes(), array.shape)
        if key not in self._constants:
            name = self.fresh(hint)
            self.initializers.append(numpy_helper.from_array(array, name))
            self._constants[key] = name
        return self._constants[key]

    def op(self, op_type: str, *inputs: str, outputs: int | Sequence[str] = 1, hint: str | None = None,
           **attributes: Any) -> Any:
        """Append one node; returns its output name (or a list of names when ``outputs`` is not 1)."""
        names = list(outputs) if not isinstance(outputs, int) else [self.fresh(hint or op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.fresh(f"n_{op_type}"), **attributes))
        return names[0] if isinstance(outputs, int) and outputs == 1 else names

    def graph(self, name: str, inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto]) -> onnx.GraphProto:
        """The built graph (nodes in insertion order, which is topological by construction)."""
        return helper.make_graph(self.nodes, name, list(inputs), list(outputs), initializer=self.initializers,
                                 value_info=self.value_info)


def tensor_info(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> onnx.ValueInfoProto:
    """A value info; ``shape=None`` leaves the rank unknown (Loop body values)."""
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))
