"""``--artifacts ort``: ORT-format models of the shipped graphs, their operator config, validation and verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from ncsn_runtime import NCSNPipeline
from ncsn_runtime.contract import GRAPHS, ORT_CONFIG, ORT_PREFIX, ort_file
from ncsn_runtime.errors import ExportDirectoryError
from ncsn_runtime.manifest import read_manifest
from ncsn_runtime.ort_format import ort_graph_files

from ncsn_export.exporters import export_model, ort_format
from ncsn_export.exporters.artifacts import select_artifacts
from ncsn_export.exporters.errors import ExportError

VALIDATION = {"batch_size": 3, "num_inference_steps": 2, "num_annealed_steps": 2, "full_batch_size": 0}


@pytest.fixture(scope="module")
def ort_export(tmp_path_factory) -> Path:
    """toy-gmm with every ONNX graph and their .ort models."""
    output = tmp_path_factory.mktemp("ort") / "toy"
    export_model("toy-gmm", output, artifacts="onnx,ort", **VALIDATION)
    return output


def config_ops(path: Path) -> set[tuple[str, str]]:
    """(domain, op) pairs listed by a required-operators config."""
    ops = set()
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            domain, _, names = line.split(";", 2)
            ops.update((domain, name.split("{", 1)[0]) for name in ort_format._split_ops(names))
    return ops


def ort_model_ops(path: Path) -> set[tuple[str, str]]:
    """(domain, op) pairs used by one .ort model (main graph and subgraphs), read by onnxruntime's own tool."""
    from onnxruntime.tools.ort_format_model.utils import _extract_ops_and_types_from_ort_models

    required, _ = _extract_ops_and_types_from_ort_models([path], False)
    return {(domain, op) for domain, by_opset in required.items() for ops in by_opset.values() for op in ops}


def test_ort_is_opt_in_and_its_core_graphs_are_required_when_named():
    assert not select_artifacts(None).ort
    selection = select_artifacts("default,ort")
    assert selection.ort and selection.is_required("ort:score") and selection.is_required("ort:sampler")
    assert not selection.is_required("ort:gpu_step")
    assert select_artifacts("all").ort


def test_every_shipped_graph_has_a_validated_ort_model_listed_and_hashed(ort_export):
    manifest = json.loads((ort_export / "manifest.json").read_text())
    for key, spec in GRAPHS.items():
        entry = manifest["artifacts"][ORT_PREFIX + key]
        assert entry["status"] == "written" and entry["file"] == ort_file(key) and entry["validated"] is True
        assert (ort_export / ort_file(key)).is_file() and ort_file(key) in manifest["files"]
        rows = [row for row in manifest["validation"] if row["graph"] == ORT_PREFIX + key]
        assert len(rows) == 1 and rows[0]["passed"] and rows[0]["artifact"] == ort_file(key)
        onnx_row = next(row for row in manifest["validation"] if row["graph"] == key and row["check"] == "dynamic")
        assert rows[0]["reference"] == onnx_row["reference"]  # the same torch eager reference
        assert rows[0]["mode"] == onnx_row["mode"]
        assert spec.file in manifest["files"]
    config = manifest["artifacts"]["ort"]
    assert config["status"] == "written" and config["file"] == ORT_CONFIG and ORT_CONFIG in manifest["files"]
    assert config["graphs"] == list(GRAPHS) and "own copy" in config["weights"]
    assert config["ort_bytes"] == sum(manifest["files"][ort_file(key)]["bytes"] for key in GRAPHS)


def test_the_config_covers_the_operators_of_every_shipped_ort_graph(ort_export):
    listed = config_ops(ort_export / ORT_CONFIG)
    assert ort_format.count_operators((ort_export / ORT_CONFIG).read_text().splitlines()) == len(listed)
    union = set()
    for key in GRAPHS:
        used = ort_model_ops(ort_export / ort_file(key))
        assert used <= listed, f"{key}: {sorted(used - listed)} missing from the config"
        union |= used
    assert union == listed  # nothing listed that no shipped graph uses
    assert ("ai.onnx", "Loop") in listed and ("ai.onnx", "BitwiseXor") in listed  # fused loop, in-graph noise
    text = (ort_export / ORT_CONFIG).read_text()
    assert "--include_ops_by_config" in text and str(ort_export.parent) not in text  # no staging paths leak
    assert '{"inputs"' in text  # type reduction: per-op types


def test_the_runtime_samples_through_the_ort_graphs_like_the_onnx_ones(ort_export):
    onnx_pipe = NCSNPipeline.from_pretrained(ort_export, provider="cpu")
    ort_pipe = NCSNPipeline.from_pretrained(ort_export, provider="cpu", graph_format="ort")
    for graph in ("sampler", "step", "score", "gpu_step", "gpu_sampler"):
        assert ort_pipe.graph_path(graph).suffix == ".ort"
        options = {"batch_size": 2, "num_inference_steps": 3, "seed": 5, "output_type": "raw", "progress": False}
        got = ort_pipe(graph=graph, **options).images
        want = onnx_pipe(graph=graph, **options).images
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert np.isfinite(got).all() and got.std() > 0


def test_graph_format_is_checked(ort_export, tmp_path):
    with pytest.raises(ValueError, match="`graph_format` must be one of onnx, ort"):
        NCSNPipeline.from_pretrained(ort_export, provider="cpu", graph_format="tflite")
    plain = tmp_path / "plain"
    export_model("toy-gmm", plain, artifacts="onnx", validate="none")
    with pytest.raises(ExportDirectoryError, match="no ORT-format graphs"):
        NCSNPipeline.from_pretrained(plain, provider="cpu", graph_format="ort")


def _copy_with_manifest(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize("file", ["../score.ort", "ort/step.ort", "score.onnx", "/tmp/score.ort"])
def test_an_ort_entry_cannot_point_elsewhere(ort_export, tmp_path, file):
    def edit(manifest):
        manifest["artifacts"]["ort:score"]["file"] = file

    broken = _copy_with_manifest(ort_export, tmp_path / "broken", edit)
    with pytest.raises(ExportDirectoryError, match=r"artifacts.ort:score.file must be 'ort/score.ort'"):
        NCSNPipeline.from_pretrained(broken, provider="cpu", graph_format="ort")


def test_a_tampered_or_unlisted_ort_file_is_refused(ort_export, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(ort_export, tampered)
    data = bytearray((tampered / ort_file("sampler")).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tampered / ort_file("sampler")).write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match="sha256"):
        NCSNPipeline.from_pretrained(tampered, provider="cpu", graph_format="ort")
    NCSNPipeline.from_pretrained(tampered, provider="cpu")  # the ONNX graphs are untouched

    def unlist(manifest):
        del manifest["files"][ort_file("score")]

    unlisted = _copy_with_manifest(ort_export, tmp_path / "unlisted", unlist)
    with pytest.raises(ExportDirectoryError, match="not listed"):
        NCSNPipeline.from_pretrained(unlisted, provider="cpu", graph_format="ort")


def test_an_ort_key_outside_the_contract_is_refused(ort_export, tmp_path):
    def edit(manifest):
        manifest["artifacts"]["ort:evil"] = {"file": "ort/evil.ort", "status": "written"}

    broken = _copy_with_manifest(ort_export, tmp_path / "broken", edit)
    with pytest.raises(ExportDirectoryError, match="not a graph of the contract"):
        ort_graph_files(read_manifest(broken))


def _shifted_gpu_step(real_convert):
    """A converter that makes a wrong ort/gpu_step.ort (next_sample + 1): validation must catch and drop it."""
    def convert(source: Path, target: Path) -> float:
        if source.stem != "gpu_step":
            return real_convert(source, target)
        model = onnx.load(str(source))
        output = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [name + "_raw" if name == output else name for name in node.output]
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((), np.float32), "one"))
        model.graph.node.append(onnx.helper.make_node("Add", [output + "_raw", "one"], [output]))
        wrong = target.parent / "wrong" / "gpu_step.onnx"
        wrong.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(wrong))
        try:
            return real_convert(wrong, target)
        finally:
            shutil.rmtree(wrong.parent)
    return convert


def test_an_ort_graph_that_fails_validation_is_skipped_and_the_config_remade(tmp_path, monkeypatch):
    monkeypatch.setattr(ort_format, "convert_graph", _shifted_gpu_step(ort_format.convert_graph))
    output = tmp_path / "out"
    report = export_model("toy-gmm", output, artifacts="onnx,ort", **VALIDATION)
    manifest = report.manifest
    entry = manifest["artifacts"]["ort:gpu_step"]
    assert entry["status"] == "skipped" and "validation failed" in entry["reason"]
    assert not (output / ort_file("gpu_step")).exists() and ort_file("gpu_step") not in manifest["files"]
    assert manifest["artifacts"]["gpu_step"]["status"] == "written"  # the ONNX graph stays
    assert manifest["artifacts"]["ort"]["graphs"] == ["score", "step", "sampler", "gpu_sampler", "inpaint"]
    text = (output / ORT_CONFIG).read_text()
    assert ort_file("gpu_step") not in text and ort_file("gpu_sampler") in text
    assert manifest["files"][ORT_CONFIG]["bytes"] == (output / ORT_CONFIG).stat().st_size
    assert "ort/gpu_step.ort  skipped: validation failed" in report.table
    pipe = NCSNPipeline.from_pretrained(output, provider="cpu", graph_format="ort")  # the rest still verifies
    assert sorted(pipe.graphs.names) == ["gpu_sampler", "inpaint", "sampler", "score", "step"]


def test_a_required_ort_graph_that_cannot_be_made_fails_the_export(tmp_path, monkeypatch):
    real = ort_format.convert_graph

    def failing(source: Path, target: Path) -> float:
        if source.stem in ("score", "gpu_sampler"):
            raise RuntimeError(f"cannot convert {source.name}")
        return real(source, target)

    monkeypatch.setattr(ort_format, "convert_graph", failing)
    with pytest.raises(ExportError, match=r"ort/score.ort was requested but could not be made: RuntimeError"):
        export_model("toy-gmm", tmp_path / "required", artifacts="onnx,ort", validate="none")
    assert not (tmp_path / "required").exists()
    monkeypatch.setattr(ort_format, "convert_graph", lambda s, t: failing(s, t) if s.stem != "score" else real(s, t))
    report = export_model("toy-gmm", tmp_path / "optional", artifacts="onnx,ort", validate="none")
    skipped = report.manifest["artifacts"]["ort:gpu_sampler"]
    assert skipped["status"] == "skipped" and "cannot convert gpu_sampler.onnx" in skipped["reason"]
    assert "gpu_sampler" not in report.manifest["artifacts"]["ort"]["graphs"]


def test_ncsn_sample_runs_the_ort_graphs(ort_export, tmp_path, capsys):
    from ncsn_runtime.cli import main

    outputs = {}
    for graph_format in ("onnx", "ort"):
        outputs[graph_format] = tmp_path / f"{graph_format}.npy"
        assert main([str(ort_export), "-n", "5", "-s", "3", "--steps", "3", "--graph-format", graph_format,
                     "-o", str(outputs[graph_format]), "--no-progress"]) == 0
        printed = capsys.readouterr().out
        assert ("ort/sampler.ort (fused Loop)" in printed) == (graph_format == "ort")
    np.testing.assert_allclose(np.load(outputs["ort"]), np.load(outputs["onnx"]), atol=1e-4, rtol=0)


def test_the_size_comparison_counts_the_external_data_the_onnx_graphs_name(ort_export, tmp_path):
    """A shared weights file (ONNX external data, Loop bodies included) is counted once next to the .ort bytes."""
    for key in ("score", "sampler"):
        model = onnx.load(str(ort_export / GRAPHS[key].file))
        onnx.save(model, str(tmp_path / GRAPHS[key].file), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights.data", size_threshold=0, convert_attribute=True)
        assert ort_format.external_data_files(tmp_path / GRAPHS[key].file) == {"weights.data"}
        assert ort_format.external_data_files(ort_export / GRAPHS[key].file) == set()
    manifest = json.loads((ort_export / "manifest.json").read_text())
    entry = manifest["artifacts"]["ort"]
    assert entry["onnx_external_bytes"] == 0
    line = ort_format.table_line({**entry, "onnx_external_bytes": 1000})
    assert line.startswith(f"{ORT_CONFIG}: {entry['operators']} operators for {len(GRAPHS)} .ort graphs")
    assert "external data" in line
