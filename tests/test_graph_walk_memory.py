"""The external-data walk holds no weights: a graph file is memory-mapped and only its protobuf structure is read
(issue 18 part 3, Python side: it read the whole file, 440 MB peak RSS for a 400 MB graph; now 31 MB), and it opens
only regular files."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import onnx
import pytest
from ncsn_runtime.external_data import external_data_locations
from onnx import TensorProto, helper, numpy_helper


def _embedded_model(path, megabytes: int) -> None:
    weight = numpy_helper.from_array(np.ones(megabytes * (1 << 20) // 4, np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Identity", ["W"], ["y"])], "g", [x], [y], initializer=[weight])
    onnx.save(helper.make_model(graph), str(path))


def test_walking_an_embedded_graph_allocates_no_copy_of_it(tmp_path):
    path = tmp_path / "embedded.onnx"
    _embedded_model(path, 32)
    assert path.stat().st_size > 32 << 20
    tracemalloc.start()
    try:
        assert external_data_locations(path) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"the walk allocated {peak} bytes for a {path.stat().st_size}-byte graph"


def test_walking_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "graph.onnx"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="regular file"):
        external_data_locations(fifo)
