"""Probe: can several onnxruntime sessions of one export share the weights through SessionOptions.add_external_initializers?

Opens GRAPHS of EXPORT_DIR (comma-separated keys) in one process; with SHARE=1 every external initializer is handed
to each session as an OrtValue over one numpy memmap of weights.onnx.data (no copy on our side). Prints the RSS as
JSON. Measured on the 73 M UNet (docs/design.md, "Runtime memory"): it does not help on the CPU EP, and a Loop-body
initializer cannot be injected at all ("Failed to find existing initializer").

    .venv/bin/python bench/probe_shared_initializers.py EXPORT_DIR step,score 0|1 [noprepack]
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024


def external_initializers(graph: onnx.GraphProto, found: dict[str, Any]) -> dict[str, Any]:
    """name -> (tensor, offset, length) of every external initializer, subgraphs included."""
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {entry.key: entry.value for entry in tensor.external_data}
            found[tensor.name] = (tensor, int(info.get("offset", 0)), int(info["length"]))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                external_initializers(attribute.g, found)
    return found


def main() -> None:
    root, graphs, share = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1"
    data = np.memmap(f"{root}/weights.onnx.data", dtype=np.uint8, mode="r")
    keep, sessions = [], []
    for key in graphs:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        if len(sys.argv) > 4:
            options.add_session_config_entry("session.disable_prepacking", "1")
        if share:
            model = onnx.load(f"{root}/{key}.onnx", load_external_data=False)
            names, values = [], []
            for name, (tensor, offset, length) in external_initializers(model.graph, {}).items():
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
                array = np.frombuffer(data, dtype=dtype, count=length // dtype.itemsize, offset=offset)
                value = ort.OrtValue.ortvalue_from_numpy(array.reshape(tuple(tensor.dims)))
                keep.append(value)
                names.append(name)
                values.append(value)
            options.add_external_initializers(names, values)
        sessions.append(ort.InferenceSession(f"{root}/{key}.onnx", options, providers=["CPUExecutionProvider"]))
    print(json.dumps({"graphs": graphs, "share": share, "rss_mib": round(rss_mib(), 1)}))


if __name__ == "__main__":
    main()
