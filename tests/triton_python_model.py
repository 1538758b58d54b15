"""Triton python-backend model used by tests/test_triton.py in place of the onnxruntime backend.

The only Triton server on the package registries (the ``tritonserver`` binary inside PyPI's
``nvidia-pytriton`` wheel) ships the python backend alone, so the test serves ``ncsn-triton``'s
``model.onnx`` through this file: Triton's dynamic batcher hands ``execute`` the grouped requests, which
are concatenated along dim 0 into ONE onnxruntime run (what the onnxruntime backend does) and split back.
Tensors cross through DLPack: the 2.51 stub's ``as_numpy`` / ``Tensor(name, array)`` are built for
numpy 1 and return garbage under numpy 2. ``SYS_PATH`` is filled in by the test.
"""

import sys

SYS_PATH: list = []
sys.path[:0] = SYS_PATH

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.session = ort.InferenceSession(str(Path(__file__).with_name("model.onnx")), providers=["CPUExecutionProvider"])
        self.batches = []

    def execute(self, requests):
        samples = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "sample")) for r in requests]
        seeds = [np.from_dlpack(pb_utils.get_input_tensor_by_name(r, "seed")) for r in requests]
        print(f"ncsn-test batch of {len(requests)} requests, seed shapes {[s.shape for s in seeds]}", flush=True)
        out = self.session.run(["final_sample"], {"sample": np.concatenate(samples), "seed": np.concatenate(seeds)})[0]
        responses, start = [], 0
        for sample in samples:
            part = np.ascontiguousarray(out[start : start + len(sample)])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack("final_sample", part)]))
            start += len(sample)
        return responses
