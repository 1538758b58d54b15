"""examples/toy_gmm.py: the paper's toy result through exported sampler.onnx graphs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "toy_gmm.py"


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("toy_gmm_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_annealed_recovers_mode_weights_and_plain_does_not(toy, tmp_path):
    result = toy.run(num_samples=1280, seed=0, work_dir=tmp_path)
    assert result["plain"].shape == result["annealed"].shape == (1280, 2)
    assert abs(result["annealed_share"] - 0.2) <= 0.03  # the paper: annealed Langevin recovers the 1/5 weight
    assert abs(result["plain_share"] - 0.2) > 0.15  # plain Langevin keeps the initial split (about 1/2)
    assert abs(result["plain_share"] - result["init_share"]) < 0.05
    # plain Langevin with the exact score does converge locally: every sample sits near one of the two modes
    nearest = abs(abs(result["plain"]) - 5.0).max(axis=1)
    assert (nearest < 4.0).mean() > 0.99
    png = toy.save_plot(result, tmp_path / "toy.png")
    assert png.stat().st_size > 5000
