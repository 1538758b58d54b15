"""Python's side of issue 18 part 3: the external-data walk holds no weights (a graph file is memory-mapped and only its
protobuf structure is read: it read the whole file, 440 MB peak RSS for a 400 MB graph; now 31 MB) and opens only
regular files; a file changed between its sha256 check and onnxruntime's read by path is refused."""

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


def test_a_graph_changed_after_its_check_is_refused_when_its_session_opens(tmp_path, monkeypatch):
    """Python verifies a graph (and its weights) by sha256, then onnxruntime opens it by path: a file written in between
    (its ctime moves) is refused once the session is open, as on the Node host (tests/test_node_loading.py)."""
    from host_exports import build_export
    from ncsn_runtime import sessions
    from ncsn_runtime.manifest import ExportDirectoryError
    from ncsn_runtime.pipeline import NCSNPipeline
    from untrusted import copy_export

    export = copy_export(build_export("tiny-conv"), tmp_path / "export")
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")  # every graph and weights.onnx.data hashed here
    real_open = sessions.open_session

    def open_then_touch(path, *args, **kwargs):
        session = real_open(path, *args, **kwargs)
        os.utime(export / "weights.onnx.data")  # a writer between the check and the read
        return session

    monkeypatch.setattr(sessions, "open_session", open_then_touch)
    with pytest.raises(ExportDirectoryError, match=r"weights\.onnx\.data changed while it was loaded"):
        pipe(batch_size=1, seed=0, num_inference_steps=1, mode="fused", output_type="raw", progress=False)
    monkeypatch.setattr(sessions, "open_session", real_open)
    fresh = NCSNPipeline.from_pretrained(export, provider="cpu")  # hashed again: the same bytes, so accepted
    output = fresh(batch_size=1, seed=0, num_inference_steps=1, mode="fused", output_type="raw", progress=False)
    assert output.images.shape[0] == 1
