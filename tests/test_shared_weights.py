"""One weights file per export directory: every graph reads the network's weights from ``weights.onnx.data``.

A small conv net (148 k parameters, 0.59 MB of float32) is big enough that five embedded copies (the layout
before) break the size bound ``ONNX part <= 1.10 x weight bytes + 1 MiB``, and small enough to export in seconds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from host_exports import ROOT, TINY_CONFIG, node_ready
from ncsn_runtime.contract import GRAPHS
from ncsn_runtime.external_data import ExternalDataError, external_data_locations
from ncsn_runtime.manifest import ExportDirectoryError, read_manifest
from ncsn_runtime.pipeline import NCSNPipeline
from onnx import TensorProto, helper, numpy_helper
from untrusted import copy_export, read_manifest_json, rehash, write_manifest_json

from ncsn_export.exporters.shared_weights import SIZE_THRESHOLD, WEIGHTS_FILE, external_tensors

MiB = 1 << 20


def wide_conv_spec():
    """A random conv score network on 1x8x8 samples with 148 k parameters (deterministic weights)."""
    import torch
    from ncsn_runtime.schedule import geometric_sigmas
    from torch import nn

    from ncsn_export.models.registry import ModelSpec

    class WideConvScore(nn.Module):
        def __init__(self, sigmas: torch.Tensor) -> None:
            super().__init__()
            self.conv_in = nn.Conv2d(1, 128, 3, padding=1)
            self.embed = nn.Embedding(len(sigmas), 128)
            self.conv_mid = nn.Conv2d(128, 128, 3, padding=1)
            self.conv_out = nn.Conv2d(128, 1, 3, padding=1)
            self.register_buffer("sigmas", sigmas)

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            hidden = torch.tanh(self.conv_in(sample) + self.embed(timestep)[:, :, None, None])
            hidden = torch.tanh(self.conv_mid(hidden)) * 0.1
            return self.conv_out(hidden) / self.sigmas[timestep][:, None, None, None]

    torch.manual_seed(0)
    sigmas = torch.from_numpy(geometric_sigmas(TINY_CONFIG["sigma_max"], TINY_CONFIG["sigma_min"],
                                               TINY_CONFIG["num_train_timesteps"]))
    return ModelSpec(name="wide-conv", model=WideConvScore(sigmas).eval(), scheduler_config=dict(TINY_CONFIG),
                     sample_shape=(1, 8, 8), is_image=True, init_range=(0.0, 1.0), data_range=(0.0, 1.0),
                     final_denoise=True, description="test-only random conv net")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, int]:
    """(export directory with every default artifact, validated at the dynamic check; the network's weight bytes)."""
    import torch

    from ncsn_export.exporters import export_model

    torch.set_num_threads(1)
    spec = wide_conv_spec()
    weight_bytes = sum(t.numel() * t.element_size() for t in spec.model.state_dict().values())
    output = tmp_path_factory.mktemp("shared") / "wide"
    export_model(spec, output, full_batch_size=0)
    return output, weight_bytes


def _graph_tensors(model: onnx.ModelProto) -> dict[tuple[int, int], str]:
    """(offset, length) -> location of every external tensor."""
    out = {}
    for tensor in external_tensors(model):
        info = {entry.key: entry.value for entry in tensor.external_data}
        out[(int(info.get("offset", 0)), int(info["length"]))] = info["location"]
    return out


def _loop_bodies(graph: onnx.GraphProto):
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield attribute.g
                yield from _loop_bodies(attribute.g)


def test_every_graph_reads_one_shared_weights_file(exported):
    export_dir, _ = exported
    manifest = read_manifest_json(export_dir)
    assert sorted(manifest["graphs"]) == sorted(GRAPHS)
    data_files = sorted(path.name for path in export_dir.rglob("*.data"))
    assert data_files == [WEIGHTS_FILE]
    references = {}
    for key, entry in manifest["graphs"].items():
        assert entry["external_data"] == [WEIGHTS_FILE], key
        model = onnx.load(str(export_dir / entry["file"]), load_external_data=False)
        assert model.ir_version <= 10, f"{key}: onnxruntime-node 1.30 reads IR <= 13; the tracer writes 10"
        references[key] = _graph_tensors(model)
        assert set(references[key].values()) == {WEIGHTS_FILE}
        # the samplers keep the network's weights in the inner Loop body (onnxruntime's NCHWc layout pass needs them
        # there); the JS host moves them to the main graph when it loads from bytes (runtime/js/external_data.js)
        scopes = [model.graph, *_loop_bodies(model.graph)]
        holder = scopes[-1] if key in ("sampler", "gpu_sampler", "inpaint") else model.graph
        assert len(scopes) == (3 if key in ("sampler", "gpu_sampler", "inpaint") else 1)
        # (the level tables, read by level-only lookups, are hoisted out of the step loop: exporters/hoist.py)
        external = {t.name: index for index, scope in enumerate(scopes) for t in scope.initializer
                    if t.data_location == TensorProto.EXTERNAL}
        conv_inputs = {name for scope in scopes for node in scope.node if node.op_type == "Conv" for name in node.input[1:]}
        assert conv_inputs & set(external) and all(external[name] == scopes.index(holder)
                                                   for name in conv_inputs if name in external), key
        embedded = [t.name for scope in scopes for t in scope.initializer if t.data_location != TensorProto.EXTERNAL and
                    len(t.raw_data) >= SIZE_THRESHOLD and t.name.startswith("net/")]
        assert not embedded, f"{key} embeds network weights {embedded[:3]}"
    # the same tensors at the same offsets: 4 weight tensors + 4 biases of >= 256 bytes (conv_out's bias is 4 bytes)
    assert all(refs == references["score"] for refs in references.values())
    assert len(references["score"]) >= 6
    assert manifest["files"][WEIGHTS_FILE]["bytes"] == (export_dir / WEIGHTS_FILE).stat().st_size


def test_onnx_part_fits_the_size_bound(exported):
    export_dir, weight_bytes = exported
    onnx_part = sum(path.stat().st_size for path in export_dir.iterdir() if path.suffix in (".onnx", ".data"))
    assert weight_bytes > 500_000
    assert onnx_part <= 1.10 * weight_bytes + MiB, (onnx_part, weight_bytes)
    weights = (export_dir / WEIGHTS_FILE).stat().st_size
    assert weight_bytes * 0.99 <= weights <= weight_bytes * 1.02 + 4096 * 8  # alignment padding only


def test_pipeline_runs_every_mode_on_the_shared_file(exported):
    export_dir, _ = exported
    pipe = NCSNPipeline.from_pretrained(export_dir, provider="cpu")
    fused = pipe(batch_size=2, seed=3, mode="fused", output_type="raw", progress=False).images
    stepwise = pipe(batch_size=2, seed=3, mode="stepwise", output_type="raw", progress=False).images
    np.testing.assert_allclose(np.asarray(stepwise), np.asarray(fused), atol=1e-4)
    entries = read_manifest_json(export_dir)["validation"]
    assert {row["graph"] for row in entries} >= {"score", "step", "sampler", "gpu_step", "gpu_sampler"}
    assert all(row["passed"] for row in entries)


def test_an_unlisted_weights_file_is_refused(exported, tmp_path):
    export_dir, _ = exported
    target = copy_export(export_dir, tmp_path / "unlisted")
    manifest = read_manifest_json(target)
    del manifest["files"][WEIGHTS_FILE]
    write_manifest_json(target, manifest)
    with pytest.raises(ExportDirectoryError, match="does not list"):
        read_manifest(target).graph_path("sampler")


def test_a_tampered_weights_file_is_refused(exported, tmp_path):
    export_dir, _ = exported
    target = copy_export(export_dir, tmp_path / "tampered")
    data = bytearray((target / WEIGHTS_FILE).read_bytes())
    data[100] ^= 0xFF
    (target / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match="sha256"):
        NCSNPipeline.from_pretrained(target, provider="cpu")(batch_size=1, seed=0, output_type="raw", progress=False)


@pytest.mark.parametrize("location", ["../outside.data", "/etc/hostname", "sub/../weights.onnx.data"])
def test_external_data_locations_are_confined(exported, tmp_path, location):
    export_dir, _ = exported
    target = copy_export(export_dir, tmp_path / "escape")
    model = onnx.load(str(target / "step.onnx"), load_external_data=False)
    for tensor in external_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(target / "step.onnx"))
    rehash(target, "step.onnx")
    with pytest.raises(ExportDirectoryError, match=r"external-data location of step\.onnx"):
        read_manifest(target).graph_path("step")


def test_the_weights_file_is_hashed_once_per_manifest(exported, monkeypatch):
    import ncsn_runtime.verify as verify

    export_dir, _ = exported
    hashed = []
    original = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda path, *a: hashed.append(Path(path).name) or original(path, *a))
    info = read_manifest(export_dir)
    for key in GRAPHS:
        info.graph_path(key)
    assert hashed.count(WEIGHTS_FILE) == 1
    assert sorted(name for name in hashed if name.endswith(".onnx")) == sorted(spec.file for spec in GRAPHS.values())


def test_triton_gets_its_own_embedded_copy(exported, tmp_path):
    from ncsn_runtime.triton import write_repository

    export_dir, weight_bytes = exported
    model = write_repository(export_dir, tmp_path / "repo", graph="sampler")
    assert sorted(path.name for path in model.model_path.parent.iterdir()) == ["model.onnx"]
    assert model.model_path.stat().st_size > weight_bytes
    assert external_data_locations(model.model_path) == []


def test_external_data_walker_agrees_with_onnx(tmp_path):
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    inner = numpy_helper.from_array(np.full((64, 64), 2, np.float32), "W_body")
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_body"], ["y"]), helper.make_node("Identity", ["c"], ["c_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[inner])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Z"]), helper.make_node("Loop", ["n", "", "Z"], ["Y"], body=body)], "g",
        [helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 64])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    embedded = tmp_path / "embedded.onnx"
    onnx.save(model, str(embedded))
    assert external_data_locations(embedded) == []
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    assert external_data_locations(tmp_path / "external.onnx") == ["w.bin"]
    with pytest.raises(ExternalDataError):
        external_data_locations((tmp_path / "external.onnx").read_bytes()[:-7])


def test_node_host_reads_the_shared_file_and_refuses_an_unlisted_one(exported, tmp_path):
    reason = node_ready()
    if reason:
        pytest.skip(reason)
    export_dir, _ = exported
    target = copy_export(export_dir, tmp_path / "node")
    script = tmp_path / "load.mjs"
    script.write_text(
        "import * as ort from 'onnxruntime-node';\n"
        f"import {{ NCSNPipeline }} from '{ROOT.as_posix()}/runtime/js/pipeline.js';\n"
        f"import {{ fsSource }} from '{ROOT.as_posix()}/runtime/js/node.js';\n"
        "const out = {};\n"
        "const disk = fsSource(process.argv[2]);\n"
        "const bytesOnly = { location: disk.location, readBytes: (r) => disk.readBytes(r) };  // no localPath: hoisting\n"
        "for (const graph of ['sampler', 'step', 'gpu_step', 'gpu_sampler']) {\n"
        "  for (const [name, source] of [['path', disk], ['bytes', bytesOnly]]) {\n"
        "    const pipe = await NCSNPipeline.load(source, { ort, graphs: [graph, 'score'] });\n"
        "    const result = await pipe.generate({ seed: 3, numSamples: 2, graph });\n"
        "    out[`${graph}-${name}`] = Array.from(result.samples.slice(0, 8));\n"
        "  }\n"
        "}\n"
        "console.log(JSON.stringify(out));\n")
    node_modules = tmp_path / "node_modules"
    node_modules.symlink_to(ROOT / "node_modules")
    proc = subprocess.run(["node", str(script), str(target)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    samples = json.loads(proc.stdout.strip().splitlines()[-1])
    for graph, values in samples.items():
        np.testing.assert_allclose(values, samples["sampler-path"], atol=1e-4, err_msg=graph)
    assert len(samples) == 8
    manifest = read_manifest_json(target)
    del manifest["files"][WEIGHTS_FILE]
    write_manifest_json(target, manifest)
    proc = subprocess.run(["node", str(script), str(target)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0 and "does not list" in proc.stderr, proc.stderr
    shutil.rmtree(target)
