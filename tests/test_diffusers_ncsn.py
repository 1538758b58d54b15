"""diffusers-ncsn checkpoints: a tiny random UNet saved with the real package loads, scores and exports identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
ncsn_unet = pytest.importorskip("ncsn.unet", reason="diffusers-ncsn is not installed (pip install --no-deps diffusers-ncsn)")
ncsn_scheduler = pytest.importorskip("ncsn.scheduler", reason="diffusers-ncsn is not installed")

from ncsn_export.models.diffusers_ncsn import load_diffusers_ncsn  # noqa: E402
from ncsn_export.models.registry import load_model  # noqa: E402

SCHEDULER = {"num_train_timesteps": 4, "num_annealed_steps": 3, "sigma_min": 0.05, "sigma_max": 1.0, "sampling_eps": 1e-4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A randomly initialised 1x8x8 UNet2DModelForNCSN (with attention) saved by ncsn.NCSNPipeline."""
    from ncsn import NCSNPipeline

    torch.manual_seed(0)
    unet = ncsn_unet.UNet2DModelForNCSN(
        sigma_min=SCHEDULER["sigma_min"], sigma_max=SCHEDULER["sigma_max"], num_train_timesteps=SCHEDULER["num_train_timesteps"],
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4,
    ).eval()
    with torch.no_grad():  # a freshly initialised UNet's output conv is zero: make the score non-trivial
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    scheduler = ncsn_scheduler.AnnealedLangevinDynamicsScheduler(**SCHEDULER)
    directory = tmp_path_factory.mktemp("ckpt") / "tiny-ncsn"
    NCSNPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(directory))
    return directory, unet


def _inputs(batch: int = 3):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 1, 8, 8, generator=generator), torch.tensor([0, 2, 3][:batch], dtype=torch.int64)


def test_layout_written_by_the_real_package(checkpoint):
    directory, _ = checkpoint
    for relative in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                     "scheduler/scheduler_config.json"):
        assert (directory / relative).is_file(), relative


def test_loader_spec_and_score_equal_original(checkpoint):
    directory, unet = checkpoint
    spec = load_model(str(directory))  # a directory goes through the registry to load_diffusers_ncsn
    assert spec.name == "tiny-ncsn"
    assert spec.sample_shape == (1, 8, 8)
    assert spec.scheduler_config == SCHEDULER
    assert not spec.model.training
    sample, levels = _inputs()
    with torch.no_grad():
        expected = unet(sample, levels).sample
        got = spec.model(sample, levels)
    assert expected.abs().max() > 1e-3  # the comparison is not between two zero tensors
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_missing_files_are_named(checkpoint, tmp_path):
    directory, _ = checkpoint
    with pytest.raises(FileNotFoundError, match=r"model_index\.json"):
        load_diffusers_ncsn(tmp_path)
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text((directory / "model_index.json").read_text())
    (broken / "unet" / "config.json").write_text((directory / "unet" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        load_diffusers_ncsn(broken)


def test_inconsistent_level_count_rejected(checkpoint, tmp_path):
    import shutil

    directory, _ = checkpoint
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    config_path = copy / "unet" / "config.json"  # diffusers-ncsn 0.1.0 itself writes null here; a fixed one writes L
    config = json.loads(config_path.read_text())
    config["num_train_timesteps"] = 7
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="num_train_timesteps"):
        load_diffusers_ncsn(copy)


def test_exported_score_graph_matches_original_module(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ncsn_export.exporters.onnx_export import DEFAULT_OPSET, export_score_onnx

    directory, unet = checkpoint
    spec = load_diffusers_ncsn(directory)
    path = tmp_path / "score.onnx"
    export_score_onnx(spec.model, spec.sample_shape, path, DEFAULT_OPSET)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # dynamic batch
        sample, levels = _inputs(batch)
        (got,) = session.run(None, {"sample": sample.numpy(), "timestep": levels.numpy()})
        with torch.no_grad():
            expected = unet(sample, levels).sample.numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_attention_unet_exports_and_validates_end_to_end(checkpoint, tmp_path):
    """The checkpoint directory (Attn blocks, saved by diffusers-ncsn) through export_model, pt2 included."""
    pytest.importorskip("onnxruntime")
    from ncsn_export.exporters import export_model

    directory, _ = checkpoint
    report = export_model(str(directory), tmp_path / "out", artifacts=["default", "torch_export"], full_batch_size=4)
    manifest = report.manifest
    assert all(row["passed"] for row in manifest["validation"]), report.table
    assert {"score", "step", "sampler"} <= set(manifest["graphs"])
    checked = {row["artifact"] for row in manifest["validation"] if row["check"] == "dynamic"}
    assert checked >= {"sampler.onnx", "step.onnx", "score.onnx", "sampler.pt2"}
    dynamic = manifest["validation_schedule"]["dynamic"]
    assert dynamic["batch_size"] == 3 and len(dynamic["timesteps"]) == 4  # not the trace shapes B=2, N=3
    pt2 = manifest["artifacts"]["torch_export"]
    assert pt2["status"] == "written"
    assert pt2["batch_range"] == [1, 63]  # diffusers' Upsample2D branches on batch >= 64: recorded, not a failure
    torchscript = manifest["artifacts"]["torchscript"]
    assert torchscript["status"] == "written" or torchscript["reason"]  # optional: written, or skipped with why
