"""export_model's failure modes: clear errors, and never a partial output directory."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
import torch
from ncsn_runtime.manifest import MANIFEST_NAME, file_entry
from test_export_nets import TINY_CONFIG, ort_session, tiny_conv_spec
from torch import nn

from ncsn_export.exporters import ExportError, api, export_model
from ncsn_export.exporters.directory import atomic_directory
from ncsn_export.exporters.onnx_export import export_score_onnx
from ncsn_export.exporters.torchscript_export import script_or_trace
from ncsn_export.models.registry import ModelSpec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def leftovers(parent):
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


def spec_with(model: nn.Module, sample_shape=(2,)) -> ModelSpec:
    return ModelSpec(name="custom", model=model, scheduler_config=dict(TINY_CONFIG), sample_shape=sample_shape, is_image=False)


class EighScore(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigh(x[:, :, None] * x[:, None, :])[0]


class ItemScore(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -x if x.sum().item() > 0 else x


class SummingScore(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.sum(1)


class ShiftingScore(nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * (t >> 1).to(x.dtype)[:, None]


class GeneratorScore(nn.Module):
    """Not scriptable (a generator expression), traceable."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    def forward(self, x, t):
        return sum(layer(x) for layer in self.layers)


def test_unknown_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ExportError, match="unknown `model` 'no-such-model'"):
        export_model("no-such-model", tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_sample_shape_the_network_rejects(tmp_path):
    spec = tiny_conv_spec()
    spec.sample_shape = (3, 8, 8)  # the net takes 1 channel
    with pytest.raises(ExportError, match=r"rejects sample shape \[B, 3, 8, 8\]"):
        export_model(spec, tmp_path / "out")
    with pytest.raises(ExportError, match="must return a float32 score shaped like its input"):
        export_model(spec_with(SummingScore()), tmp_path / "out")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("opset", [12, 17, 99])
def test_an_opset_outside_the_range_is_refused(tmp_path, opset):
    with pytest.raises(ExportError, match=r"`opset` must be in \[18, "):
        export_model("toy-gmm", tmp_path / "out", opset=opset)


def test_an_untraceable_network_names_the_op_and_leaves_nothing(tmp_path):
    with pytest.raises(ExportError, match=r"at op `aten\._linalg_eigh` .*make forward\(sample, timestep\) use tensor ops only"):
        export_model(spec_with(EighScore()), tmp_path / "out")
    with pytest.raises(ExportError, match=r"data-dependent"):
        export_model(spec_with(ItemScore()), tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_non_empty_output_is_refused_and_force_replaces_only_an_export(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty; pass --force"):
        export_model("toy-gmm", output)
    with pytest.raises(ExportError, match="not an ncsn-export directory"):
        export_model("toy-gmm", output, force=True)
    assert (output / "notes.txt").read_text() == "mine"


def test_atomic_directory_replaces_an_export_and_keeps_it_on_failure(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.onnx").write_text("old")
    listed = {"old.onnx": file_entry(output / "old.onnx")}
    (output / MANIFEST_NAME).write_text(json.dumps({"format": "ncsn-export", "files": listed}))
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(output, force=True) as staging:
        (staging / "new.onnx").write_text("new")
        raise RuntimeError("boom")
    assert sorted(path.name for path in output.iterdir()) == [MANIFEST_NAME, "old.onnx"]
    with atomic_directory(output, force=True) as staging:
        (staging / "new.onnx").write_text("new")
    assert sorted(path.name for path in output.iterdir()) == ["new.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o777 & ~umask and (output / "new.onnx").stat().st_mode & 0o777 == 0o666 & ~umask
    assert leftovers(tmp_path) == []


def test_ctrl_c_during_export_leaves_no_directory(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "compose_graphs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model("toy-gmm", tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_failed_validation_exits_with_the_table_and_leaves_no_directory(tmp_path):
    spec = tiny_conv_spec(final_denoise=False)
    with pytest.raises(ExportError, match=r"(?s)validation failed for .*sampler\.onnx.*FAIL") as info:
        export_model(spec, tmp_path / "out", tolerance=1e-12, num_inference_steps=2, num_annealed_steps=2)
    assert "max abs diff" in str(info.value)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_network_that_shifts_right_keeps_the_exact_signed_shift(tmp_path):
    export_score_onnx(ShiftingScore(), (2,), tmp_path / "score.onnx", 18)
    graph = onnx.load(str(tmp_path / "score.onnx")).graph
    assert "BitShift" in [node.op_type for node in graph.node] and "Div" not in [node.op_type for node in graph.node]
    session = ort_session(tmp_path / "score.onnx")
    levels = np.array([-5, 7], dtype=np.int64)  # a negative level: the signed shift must floor (-5 >> 1 == -3)
    result = session.run(None, {"sample": np.ones((2, 2), dtype=np.float32), "timestep": levels})[0]
    np.testing.assert_array_equal(result[:, 0], [-3.0, 3.0])


def test_an_unscriptable_network_is_traced_for_torchscript():
    model = GeneratorScore()
    scripted, how = script_or_trace(model, (2,))
    assert how == "trace"
    x, t = torch.randn(5, 2), torch.zeros(5, dtype=torch.int64)  # another batch size than the trace's
    assert torch.allclose(scripted(x, t), model(x, t))


@pytest.mark.parametrize("name,value", [("batch_size", 0), ("num_annealed_steps", 0), ("num_inference_steps", 7)])
def test_validation_schedule_arguments_are_checked(tmp_path, name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be in"):
        export_model(tiny_conv_spec(), tmp_path / "out", **{name: value})


def test_an_optional_artifact_that_fails_is_skipped_and_an_explicit_one_fails(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript today")

    monkeypatch.setattr(api, "export_torchscript", broken)
    report = export_model("toy-gmm", tmp_path / "out", num_annealed_steps=2, full_batch_size=0)
    entry = report.manifest["artifacts"]["torchscript"]
    assert entry["status"] == "skipped" and "no TorchScript today" in entry["reason"]
    assert not (tmp_path / "out" / "sampler.pt").exists() and (tmp_path / "out" / "sampler.onnx").is_file()
    assert "sampler.pt " in report.table and "skipped: RuntimeError: no TorchScript today" in report.table
    assert all(row["passed"] for row in report.manifest["validation"])
    with pytest.raises(ExportError, match=r"sampler\.pt was requested but could not be made: RuntimeError"):
        export_model("toy-gmm", tmp_path / "explicit", artifacts="sampler,pt", num_annealed_steps=2, full_batch_size=0)
    assert not (tmp_path / "explicit").exists() and leftovers(tmp_path) == []


def test_artifact_names_are_checked_before_tracing(tmp_path):
    from ncsn_export.exporters.artifacts import select_artifacts

    assert select_artifacts(None).keys == ("score", "step", "sampler", "gpu_step", "gpu_sampler", "inpaint", "torchscript")
    assert not select_artifacts(None).is_required("torchscript") and select_artifacts(None).is_required("sampler")
    chosen = select_artifacts("score,pt2")
    assert chosen.keys == ("score", "step", "sampler", "torch_export") and chosen.is_required("torch_export")
    with pytest.raises(ExportError, match=r"`artifacts`: unknown entry 'sampler\.pt3'"):
        export_model("toy-gmm", tmp_path / "out", artifacts="sampler.pt3")
