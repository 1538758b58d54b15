"""The torch counter noise (ncsn_export.noise, used by sampler.pt / sampler.pt2) traced through the dynamo exporter
against the numpy contract: its int64 ops stay exact under tracing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ncsn_runtime import noise as reference
from test_export_nets import ort_session
from torch import nn

from ncsn_export.exporters.onnx_export import batch_shapes, export_onnx
from ncsn_export.noise import _words, counter_normal

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EDGE_SEEDS = np.array([0, 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 123456789], dtype=np.int64)
EDGE_COUNTERS = (0, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1)
NUM_ELEMENTS = 10  # 3 Philox blocks, the last one padded


class NoiseGraph(nn.Module):
    """(Philox words int64 [B, blocks, 4], normal f32 [B, NUM_ELEMENTS]) for (seed [B], counter [])."""

    def forward(self, seed: torch.Tensor, counter: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = _words(seed, counter, (NUM_ELEMENTS + 3) // 4, reference.LANGEVIN_STREAM)
        return words, counter_normal(seed, counter, [NUM_ELEMENTS])


@pytest.fixture(scope="module")
def noise_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("noise") / "noise.onnx"
    args = (torch.from_numpy(EDGE_SEEDS[:2]), torch.tensor(3))
    shapes = batch_shapes(("seed", "counter"), ("seed",))
    export_onnx(NoiseGraph(), args, path, ("seed", "counter"), ("words", "normal"), shapes, 18)
    return ort_session(path)


@pytest.mark.parametrize("counter", EDGE_COUNTERS)
def test_traced_noise_words_are_bit_exact_and_normals_match(noise_session, counter):
    feed = {"seed": EDGE_SEEDS, "counter": np.array(counter, dtype=np.int64)}
    words, normal = noise_session.run(None, feed)
    expected_words = reference.philox_words(EDGE_SEEDS, counter, 12, reference.LANGEVIN_STREAM).reshape(len(EDGE_SEEDS), 3, 4)
    np.testing.assert_array_equal(words, expected_words.astype(np.int64))
    expected = reference.counter_normal(EDGE_SEEDS, counter, (NUM_ELEMENTS,))
    assert np.max(np.abs(normal - expected)) <= 1e-6  # libm vs onnxruntime log/cos/sin in float64
