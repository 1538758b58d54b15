"""NCSN CondRefineNetDilated: shapes, conditioning, NCSNv2 scaling, batch independence, legacy exporter limitation."""

from __future__ import annotations

import io

import pytest
import torch

from ncsn_export.models.refinenet import ConditionalInstanceNorm2dPlus, CondRefineNetDilated, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so the level embeddings differ (fresh ones start at gamma = alpha = 1, beta = 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 8)])
def test_score_has_input_shape(channels, size):
    model = CondRefineNetDilated(in_channels=channels, image_size=size, num_classes=5, ngf=4).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 4]))
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.sample_shape == (channels, size, size)


def test_output_depends_on_level_and_not_on_batch_neighbours():
    model = _randomise(CondRefineNetDilated(num_classes=4, ngf=4))
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        same_x = model(x[:1].expand(4, -1, -1, -1), torch.arange(4))
        batch = model(x, torch.tensor([1, 2, 3]))
        alone = torch.cat([model(x[k : k + 1], torch.tensor([k + 1])) for k in range(3)])
    assert (same_x[0] - same_x[1]).abs().max() > 1e-3  # conditioning on the level changes the score
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)  # instance norm: no coupling across the batch


def test_ncsnv2_divides_by_sigma_of_level():
    sigmas = [1.0, 0.3, 0.1, 0.01]
    plain = _randomise(CondRefineNetDilated(num_classes=4, ngf=4))
    v2 = CondRefineNetDilated(num_classes=4, ngf=4, sigmas=sigmas).eval()
    missing, unexpected = v2.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["sigmas"] and not unexpected
    assert "sigmas" in v2.state_dict() and "sigmas" not in plain.state_dict()
    x, levels = torch.rand(4, 1, 28, 28), torch.arange(4)
    with torch.no_grad():
        expected = plain(x, levels) / torch.tensor(sigmas).reshape(-1, 1, 1, 1)
        torch.testing.assert_close(v2(x, levels), expected, rtol=1e-5, atol=1e-5)


def test_conditional_instance_norm_plus_formula():
    norm = _randomise(ConditionalInstanceNorm2dPlus(3, num_classes=2))
    x, level = torch.randn(2, 3, 5, 5), torch.tensor([1, 0])
    gamma, alpha, beta = norm.embed.weight[level].chunk(3, dim=1)
    mean = x.mean(dim=(2, 3))
    standardised = (mean - mean.mean(1, keepdim=True)) / torch.sqrt(mean.var(1, keepdim=True) + 1e-5)
    h = (x - mean[..., None, None]) / torch.sqrt(x.var(dim=(2, 3), unbiased=False)[..., None, None] + 1e-5)
    expected = gamma[..., None, None] * (h + (alpha * standardised)[..., None, None]) + beta[..., None, None]
    with torch.no_grad():
        torch.testing.assert_close(norm(x, level), expected, rtol=1e-4, atol=1e-4)


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="ngf"):
        CondRefineNetDilated(ngf=0)
    with pytest.raises(ValueError, match="sigmas"):
        CondRefineNetDilated(num_classes=3, sigmas=[1.0, 0.1])


def test_default_width_is_compact():
    assert count_parameters(CondRefineNetDilated(ngf=16)) < 1_000_000


def test_legacy_torchscript_onnx_exporter_fails_on_instance_norm():
    """Documented limitation: the legacy exporter needs a static channel count for InstanceNormalization.

    (The dynamo exporter works: tests/test_default_model.py exports the shipped RefineNet and compares it.)
    """
    model = CondRefineNetDilated(image_size=8, num_classes=2, ngf=2).eval()
    with pytest.raises(Exception, match="unknown channel size"):
        torch.onnx.export(model, (torch.rand(1, 1, 8, 8), torch.tensor([0])), io.BytesIO(), dynamo=False, opset_version=18)
