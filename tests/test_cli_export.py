"""The ``ncsn-export`` command: help, exit codes, and one real export through the console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from ncsn_export.cli import build_parser, main

TESTS = Path(__file__).resolve().parent


def test_help_names_every_option_and_the_layout(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--output", "--opset", "--fp16", "--no-validate", "--force", "--batch-size",
                   "--num-inference-steps", "--num-annealed-steps", "--final-denoise", "--tolerance", "--artifacts",
                   "--full-validation-batch-size", "--quiet", "--validate", "--validation-budget", "--progress"):
        assert option in text
    for name in ("toy-gmm", "mnist", "package.module:factory", "sampler.onnx", "final_sample", "manifest.json"):
        assert name in text


def test_defaults_follow_the_registry():
    args = build_parser().parse_args(["--output", "x"])
    assert args.model == "mnist" and args.validate == "auto" and args.final_denoise is None and args.opset is None
    assert args.validation_budget == 120.0 and args.progress is None
    assert build_parser().parse_args(["--output", "x", "--no-validate"]).validate == "none"
    assert build_parser().parse_args(["--output", "x", "--validate", "full"]).validate == "full"


@pytest.mark.parametrize("budget", ["-1", "nan", "inf", "1e9"])
def test_a_bad_validation_budget_is_a_usage_error(tmp_path, capsys, budget):
    from ncsn_export.cli import main

    assert main(["--model", "toy-gmm", "--output", str(tmp_path / "out"), "--validation-budget", budget]) == 2
    assert "`validation_budget` must be" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["--model", "no-such-model"], 2, "unknown `model`"),  # the caller's mistakes exit 2 (issue 11)
        (["--model", "toy-gmm", "--opset", "11"], 2, "`opset` must be in [18,"),
        (["--model", "toy-gmm", "--batch-size", "0"], 2, "`batch_size` must be in [1,"),
        (["--model", "nosuchpackage.mod:factory"], 2, "cannot import module 'nosuchpackage.mod'"),
    ],
)
def test_errors_exit_non_zero_with_one_line(tmp_path, capsys, argv, code, message):
    assert main([*argv, "--output", str(tmp_path / "out")]) == code
    err = capsys.readouterr().err
    assert err.startswith("ncsn-export: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["--model", "toy-gmm", "--output", str(tmp_path / "out")]) == 2
    assert "--force" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("ncsn-export", path=str(Path(sys.executable).parent)) is None,
                    reason="the ncsn-export console script is not installed in this environment (pip install -e .)")
def test_console_script_exports_a_user_model_in_fp16_with_force(tmp_path):
    output = tmp_path / "export"
    output.mkdir()
    (output / "manifest.json").write_text('{"format": "ncsn-export", "files": {}}')  # an earlier export: --force may replace it
    script = shutil.which("ncsn-export", path=str(Path(sys.executable).parent))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [script, "--model", "test_export_nets:tiny_conv_spec", "--output", str(output), "--force", "--opset", "20", "--fp16",
         "--batch-size", "2", "--num-inference-steps", "2", "--num-annealed-steps", "3", "--no-final-denoise", "--quiet",
         "--artifacts", "default,pt2", "--full-validation-batch-size", "0"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sampler.onnx" in result.stdout and "FAIL" not in result.stdout and "traced" not in result.stdout + result.stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["opset"] == 20 and manifest["model"]["name"] == "tiny-conv" and manifest["model"]["final_denoise"] is False
    dynamic = manifest["validation_schedule"]["dynamic"]
    assert dynamic["timesteps"] == [0, 5] and dynamic["num_annealed_steps"] == 3 and "full" not in manifest["validation_schedule"]
    assert {row["artifact"] for row in manifest["validation"] if row["passed"]} >= {
        "sampler.onnx", "step.onnx", "score.onnx", "sampler.pt", "sampler.pt2"}
    # fp16: the network computes in half precision behind float32 I/O, validated with the relative bound
    assert manifest["model"]["compute_dtype"] == "float16" and manifest["model"]["dtype"] == "float32"
    assert manifest["validation_schedule"]["tolerance"] == 5e-2
    fused = next(row for row in manifest["validation"] if row["artifact"] == "sampler.onnx")
    assert 0 < fused["max_abs_diff"] <= 5e-2 * fused["scale"]
    model = onnx.load(str(output / "sampler.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    outer = next(node for node in model.graph.node if node.op_type == "Loop").attribute[0].g
    body = next(node for node in outer.node if node.op_type == "Loop").attribute[0].g  # the annealed-step body
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in body.initializer)  # half weights in the loop
