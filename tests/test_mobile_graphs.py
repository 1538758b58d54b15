"""The ``mobile`` artifact: fixed-shape graphs that NNAPI and Core ML (MLProgram) take whole.

Each export here runs onnxruntime's own usability checker (``check_onnx_model_mobile_usability``'s function) on the
written ``mobile/`` graphs and asserts its verdict YES with one partition of >= 99 % of the nodes for NNAPI and
Core ML MLProgram, and that the runtime's host loop gives the same samples as the fused graph for the same seeds.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from ncsn_runtime import NCSNPipeline
from ncsn_runtime.errors import ExportDirectoryError
from ncsn_runtime.manifest import read_manifest
from ncsn_runtime.mobile import MobileSampler, mobile_graphs, onehot
from test_export_nets import TINY_CONFIG, tiny_conv_spec

from ncsn_export.exporters import export_model
from ncsn_export.exporters.errors import ExportInputError
from ncsn_export.exporters.mobile_usability import check_usability, parse_checker_log
from ncsn_export.models.refinenet import CondRefineNetDilated
from ncsn_export.models.registry import ModelSpec

TARGET_EPS = ("NNAPI", "CoreML MLProgram")
FORBIDDEN = {"Shape", "Expand", "Range", "Gather", "GatherND", "InstanceNormalization", "Min", "Loop", "If", "Cast"}


def _export(tmp_path, spec, batch=1, name="out"):
    return export_model(spec, tmp_path / name, artifacts="score,step,sampler,mobile", mobile_batch=batch,
                        num_annealed_steps=2, full_batch_size=0)


def _assert_accelerator_only(export_dir, batch, sample_shape, levels):
    for key in ("score", "step"):
        path = export_dir / "mobile" / f"{key}.onnx"
        model = onnx.load(str(path), load_external_data=False)
        ops = {node.op_type for node in model.graph.node}
        assert not ops & FORBIDDEN, f"{key}: {sorted(ops & FORBIDDEN)} left"
        for value in (*model.graph.input, *model.graph.output):  # every I/O dim fixed, float32 only
            dims = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
            assert all(dims) and value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, (key, value.name, dims)
        assert [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim] == [batch, *sample_shape]
        onehot_dims = [dim.dim_value for dim in model.graph.input[-1 if key == "score" else 2].type.tensor_type.shape.dim]
        assert onehot_dims == [batch if key == "score" else 1, levels]
        verdicts = check_usability(path)  # onnxruntime's checker itself, not the manifest's copy
        for ep in TARGET_EPS:
            verdict = verdicts[ep]
            assert verdict.verdict == "YES", (key, ep, verdict)
            assert verdict.partitions == 1 and verdict.coverage >= 0.99, (key, ep, verdict)


@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_mobile_export_is_accelerator_only_and_samples_like_the_fused_graph(tmp_path):
    spec = tiny_conv_spec()
    report = _export(tmp_path, spec, batch=2)
    root = report.output_dir
    _assert_accelerator_only(root, 2, spec.sample_shape, TINY_CONFIG["num_train_timesteps"])
    rows = {row["graph"]: row for row in report.manifest["validation"]}
    assert rows["mobile:step"]["passed"] and rows["mobile:score"]["passed"]
    listed = mobile_graphs(read_manifest(root))
    assert {key: graph.batch for key, graph in listed.items()} == {"score": 2, "step": 2}
    entry = report.manifest["artifacts"]["mobile:step"]
    assert entry["inputs"][1] == {"name": "noise", "dtype": "float32", "shape": [2, 1, 8, 8]}
    assert entry["usability"]["NNAPI"]["verdict"] == "YES"
    assert "mobile/weights.onnx.data" in report.manifest["files"]
    # same seeds, same samples: 3 seeds run as a padded chunk of 2 + 1, against the fused graph at B=3
    seeds = np.array([5, 6, 7])
    fused = NCSNPipeline.from_pretrained(root)(batch_size=3, seed=5, output_type="raw", progress=False).images
    mobile = MobileSampler(root, "step")(seeds)
    assert mobile.shape == fused.shape
    assert np.max(np.abs(mobile - fused)) <= 1e-4
    assert np.max(np.abs(MobileSampler(root, "score")(seeds) - fused)) <= 1e-4
    # untrusted input: a changed weights byte and a batch out of range are refused before any session runs
    weights = root / "mobile" / "weights.onnx.data"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match=r"weights\.onnx\.data"):
        MobileSampler(root, "step")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["artifacts"]["mobile:score"]["batch"] = 0
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportDirectoryError, match=r"batch must be an int in \[1, 64\]"):
        MobileSampler(root, "score")


def test_mobile_batch_is_range_checked(tmp_path):
    for bad in (0, 65):
        with pytest.raises(ExportInputError, match=r"mobile_batch.*\[1, 64\]"):
            export_model(tiny_conv_spec(), tmp_path / "x", artifacts="mobile", mobile_batch=bad)
    assert not (tmp_path / "x").exists()


def test_cli_mobile_batch_is_a_usage_error(tmp_path, capsys):
    from ncsn_export.cli import build_parser, main

    assert "--mobile-batch" in build_parser().format_help()
    assert main(["--model", "toy-gmm", "--output", str(tmp_path / "out"), "--artifacts", "mobile", "--mobile-batch", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncsn-export: error: ") and "`--mobile-batch` must be in [1, 64], got 0" in err
    assert not (tmp_path / "out").exists()


def test_onehot_rejects_levels_outside_the_trained_range():
    assert onehot([2, 0], 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        onehot([3], 3)


def test_checker_log_parsing_keeps_the_as_is_figures():
    lines = ["Checking NNAPI", "3 partitions with a total of 90/100 nodes can be handled by the NNAPI EP.",
             "\tPartition sizes: [50, 30, 10]", "\tUnsupported ops: ai.onnx:Gather,ai.onnx:Shape",
             "Model should perform well with NNAPI as is: NO", "--------",
             "1 partitions with a total of 100/100 nodes can be handled by the NNAPI EP.",
             "Model should perform well with NNAPI if modified to have fixed input shapes: YES"]
    verdict = parse_checker_log(lines)["NNAPI"]
    assert (verdict.verdict, verdict.partitions, verdict.largest_partition, verdict.nodes) == ("NO", 3, 50, 100)
    assert verdict.unsupported_ops == ("ai.onnx:Gather", "ai.onnx:Shape")


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_refinenet_mobile_graphs_keep_one_partition(tmp_path):
    """The conditional instance norm++ RefineNet (the default model's architecture, tiny): every rewrite applies."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    network = CondRefineNetDilated(image_size=8, num_classes=3, ngf=2).eval()
    config = {"num_train_timesteps": 3, "num_annealed_steps": 2, "sigma_min": 0.1, "sigma_max": 1.0, "sampling_eps": 2e-5}
    spec = ModelSpec(name="tiny-refinenet", model=network, scheduler_config=config, sample_shape=(1, 8, 8), is_image=True,
                     init_range=(0.0, 1.0), data_range=(0.0, 1.0), final_denoise=True, description="tiny RefineNet")
    report = _export(tmp_path, spec)
    _assert_accelerator_only(report.output_dir, 1, (1, 8, 8), 3)
    rewrites = report.manifest["artifacts"]["mobile:score"]["rewrites"]
    assert rewrites["instance_norms"] > 0 and rewrites["level_tables"] >= 1
    manifest = json.loads((report.output_dir / "manifest.json").read_text())
    assert all(row["passed"] for row in manifest["validation"] if row["graph"].startswith("mobile:"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_attention_unet_mobile_graphs_keep_one_partition(tmp_path):
    """diffusers-ncsn's UNet2DModelForNCSN with attention blocks: its timestep embedding MLP becomes level tables."""
    torch = pytest.importorskip("torch")
    unet_module = pytest.importorskip("ncsn.unet", reason="diffusers-ncsn is not installed")
    from ncsn_export.models.diffusers_ncsn import DiffusersUNetScore

    config = {"num_train_timesteps": 4, "num_annealed_steps": 2, "sigma_min": 0.05, "sigma_max": 1.0, "sampling_eps": 1e-4}
    torch.manual_seed(0)
    unet = unet_module.UNet2DModelForNCSN(
        sigma_min=config["sigma_min"], sigma_max=config["sigma_max"], num_train_timesteps=config["num_train_timesteps"],
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4).eval()
    with torch.no_grad():  # a fresh UNet's output conv is zero: make the score non-trivial
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    spec = ModelSpec(name="tiny-unet", model=DiffusersUNetScore(unet).eval(), scheduler_config=config, sample_shape=(1, 8, 8),
                     is_image=True, init_range=(0.0, 1.0), data_range=(0.0, 1.0), final_denoise=False,
                     description="tiny attention UNet")
    report = _export(tmp_path, spec)
    _assert_accelerator_only(report.output_dir, 1, (1, 8, 8), 4)
    assert report.manifest["artifacts"]["mobile:score"]["rewrites"]["level_tables"] >= 2  # embedding + per-block projections
