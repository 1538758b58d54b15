"""An export directory is untrusted input (issue 11, SECURITY.md): paths stay inside it, numbers stay within the
documented limits, graph I/O is checked against the manifest and the contract, and ncsn-sample answers every
mistake with one line and exit 2, before sampling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from host_exports import ROOT, build_export
from ncsn_runtime import cli
from ncsn_runtime.manifest import ExportDirectoryError, read_manifest
from ncsn_runtime.pipeline import NCSNPipeline
from onnx import TensorProto, helper
from untrusted import copy_export, read_manifest_json, rehash, tampered, write_manifest_json


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


def sample_cli(export_dir: Path, output: Path, *extra: str) -> int:
    return cli.main([str(export_dir), "-n", "2", "--steps", "2", "-o", str(output), "--no-progress", *extra])


def expect_cli_error(capsys, code: int, pattern: str, export_dir: Path, output: Path, *extra: str) -> str:
    existed = output.exists()
    assert sample_cli(export_dir, output, *extra) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert pattern in err, err
    assert output.exists() == existed
    return err


# -- paths ------------------------------------------------------------------------------------------------------
def test_scheduler_config_outside_the_directory_is_refused(toy_dir, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "scheduler_config.json").write_text((toy_dir / "scheduler" / "scheduler_config.json").read_text())
    export = tmp_path / "a" / "b" / "export"
    export.parent.mkdir(parents=True)

    def point_out(manifest):
        manifest["scheduler_config"] = "../../elsewhere/scheduler_config.json"
        manifest["files"]["../../elsewhere/scheduler_config.json"] = manifest["files"]["scheduler/scheduler_config.json"]

    tampered(toy_dir, export, point_out)
    with pytest.raises(ExportDirectoryError, match=r"holds '\.\.'"):
        NCSNPipeline.from_pretrained(export, provider="cpu")
    expect_cli_error(capsys, 2, "holds '..'", export, tmp_path / "out.npy")


def test_absolute_paths_are_refused_without_revealing_the_file(toy_dir, tmp_path, capsys):
    export = tampered(toy_dir, tmp_path / "abs", lambda m: m.update(scheduler_config="/etc/passwd"))
    err = expect_cli_error(capsys, 2, "is absolute", export, tmp_path / "out.npy")
    assert "bytes" not in err  # the size of /etc/passwd is not revealed
    export = tampered(toy_dir, tmp_path / "absgraph", lambda m: m["graphs"]["sampler"].update(file=str(toy_dir / "sampler.onnx")))
    with pytest.raises(ExportDirectoryError, match="is absolute"):
        read_manifest(export)


def test_a_symlinked_graph_that_leads_outside_is_refused(toy_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((toy_dir / "sampler.onnx").read_bytes())
    export = copy_export(toy_dir, tmp_path / "link")
    (export / "sampler.onnx").unlink()
    (export / "sampler.onnx").symlink_to(outside)  # same bytes, so the sha256 matches
    with pytest.raises(ExportDirectoryError, match="leads outside"):
        NCSNPipeline.from_pretrained(export, provider="cpu")
    inside = copy_export(toy_dir, tmp_path / "inside")  # a symlink that stays inside is fine
    (inside / "graphs").mkdir()
    os.replace(inside / "sampler.onnx", inside / "graphs" / "sampler.onnx")
    (inside / "sampler.onnx").symlink_to(Path("graphs") / "sampler.onnx")
    rehash(inside, "sampler.onnx")
    pipe = NCSNPipeline.from_pretrained(inside, provider="cpu")
    out = pipe(batch_size=1, seed=0, num_inference_steps=1, mode="fused", output_type="raw", progress=False)
    assert out.images.shape == (1, 2)


def test_manifest_files_keys_and_graph_files_must_be_plain_relative_paths(toy_dir, tmp_path):
    for index, bad in enumerate(["../x", "a/../../x", "./sampler.onnx", "a//b", "C:\\x", "a\\..\\b", "", "/abs"]):
        entry = {"sha256": "0" * 64, "bytes": 1}
        export = tampered(toy_dir, tmp_path / f"k{index}", lambda m, bad=bad, entry=entry: m["files"].update({bad: entry}))
        with pytest.raises(ExportDirectoryError):
            read_manifest(export)


# -- numbers and resource limits ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "message"), [
    ("num_train_timesteps", 10**9, "must be in [1, 100000]"),
    ("num_annealed_steps", 10**9, "must be in [1, 10000]"),
    ("num_train_timesteps", 2**63, "must be in [1, 100000]"),
    ("num_train_timesteps", 100_000, "x `num_annealed_steps` = 10000000 exceeds the limit of 1000000 Langevin steps"),
    ("sigma_max", 2**1100, "too large for a float"),
    ("sampling_eps", "1e-3", "must be a float"),
])
def test_scheduler_config_numbers_are_bounded(toy_dir, tmp_path, capsys, key, value, message):
    export = tampered(toy_dir, tmp_path / "cfg", edit_config=lambda config: config.update({key: value}))
    expect_cli_error(capsys, 2, message, export, tmp_path / "out.npy")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["model"].update(sample_shape=[2**63]), "model.sample_shape"),
    (lambda m: m["model"].update(sample_shape=[4096, 4096, 4]), "model.sample_shape"),
    (lambda m: m["files"]["sampler.onnx"].update(bytes=2**63), "bytes must be an int"),
    (lambda m: m["files"]["sampler.onnx"].pop("sha256"), "sha256 must be 64 lowercase hex digits"),
    (lambda m: m["model"].update(num_train_timesteps=2**63), "num_train_timesteps must be an int"),
    (lambda m: m["model"].update(init_range=[0, 1e400]), "not valid JSON"),  # Infinity: not JSON
    (lambda m: m["model"].update(data_range=[1, 1]), "model.data_range"),
    (lambda m: m["model"].update(is_image="yes"), "model.is_image"),
    (lambda m: m["graphs"]["sampler"]["inputs"].pop(), "graphs.sampler.inputs lists"),
    (lambda m: m["graphs"]["sampler"]["outputs"][0].update(dtype="float64"), "has dtype 'float64'"),
    (lambda m: m["graphs"]["sampler"]["outputs"][0].update(shape=["batch", 4, 4]), "`final_sample` has shape"),
    (lambda m: [1, 2, 3], "must hold a JSON object, got list"),
    (lambda m: m.update(format_version=True), "format_version True"),
])
def test_manifest_numbers_and_tables_are_checked(toy_dir, tmp_path, capsys, edit, message):
    export = copy_export(toy_dir, tmp_path / "m")
    manifest = read_manifest_json(export)
    edited = edit(manifest)
    (export / "manifest.json").write_text(json.dumps(edited if isinstance(edited, list) else manifest))  # inf -> Infinity
    expect_cli_error(capsys, 2, message, export, tmp_path / "out.npy")


def test_huge_num_samples_is_refused_before_sampling(toy_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "sample_all", lambda *a, **k: pytest.fail("sampling started"))
    err = expect_cli_error(capsys, 2, "--num-samples 1000000000 x 8 bytes per sample exceeds the 2 GiB limit", toy_dir,
                           tmp_path / "out.npy", "-n", "1000000000")
    assert "use at most 268435456" in err


def test_scheduler_levels_must_match_the_export(toy_dir, tmp_path, capsys):
    assert read_manifest(toy_dir).model.num_train_timesteps == 10
    export = tampered(toy_dir, tmp_path / "levels", edit_config=lambda config: config.update(num_train_timesteps=8))
    expect_cli_error(capsys, 2, "num_train_timesteps=8 but the graphs were exported for 10 noise levels", export,
                     tmp_path / "out.npy")
    legacy = tampered(toy_dir, tmp_path / "legacy", lambda m: m["model"].pop("num_train_timesteps"),
                      edit_config=lambda config: config.update(num_train_timesteps=12))
    pipe = NCSNPipeline.from_pretrained(legacy, provider="cpu")  # no record: allowed (older exports)
    assert pipe.scheduler.num_train_timesteps == 12


# -- graph I/O ----------------------------------------------------------------------------------------------------
def _fake_sampler(path: Path, output_dtype: int = TensorProto.FLOAT) -> None:
    """A graph with sampler.onnx's inputs whose output is a (4, 4) array (dims symbolic), or a float64 copy of sample."""
    inputs = [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 2]),
              helper.make_tensor_value_info("seed", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("timesteps", TensorProto.INT64, ["n"]),
              helper.make_tensor_value_info("step_sizes", TensorProto.FLOAT, ["n"]),
              helper.make_tensor_value_info("num_annealed_steps", TensorProto.INT64, [])]
    if output_dtype == TensorProto.FLOAT:  # shape (min(T, 4), min(T, 4)): known only at run time
        nodes = [helper.make_node("Constant", [], ["four"], value=helper.make_tensor("four", TensorProto.INT64, [], [4])),
                 helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.INT64, [1], [1])),
                 helper.make_node("Min", ["num_annealed_steps", "four"], ["side"]),
                 helper.make_node("Reshape", ["side", "one"], ["side1"]),
                 helper.make_node("Concat", ["side1", "side1"], ["shape"], axis=0),
                 helper.make_node("ConstantOfShape", ["shape"], ["final_sample"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))]
        output = helper.make_tensor_value_info("final_sample", TensorProto.FLOAT, ["a", "b"])
    else:
        nodes = [helper.make_node("Cast", ["sample"], ["final_sample"], to=output_dtype)]
        output = helper.make_tensor_value_info("final_sample", output_dtype, ["batch", 2])
    model = helper.make_model(helper.make_graph(nodes, "fake", inputs, [output]), opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)


def test_graph_output_shape_and_dtype_are_checked(toy_dir, tmp_path, capsys):
    wrong_shape = copy_export(toy_dir, tmp_path / "shape")
    _fake_sampler(wrong_shape / "sampler.onnx")
    rehash(wrong_shape, "sampler.onnx")
    expect_cli_error(capsys, 2, "sampler.onnx returned float32 (4, 4); the manifest promises float32 (2, 2)", wrong_shape,
                     tmp_path / "out.npy", "--mode", "fused")
    wrong_dtype = copy_export(toy_dir, tmp_path / "dtype")
    _fake_sampler(wrong_dtype / "sampler.onnx", TensorProto.DOUBLE)
    rehash(wrong_dtype, "sampler.onnx")
    expect_cli_error(capsys, 2, "output `final_sample` is float64; the contract expects float32", wrong_dtype,
                     tmp_path / "out.npy", "--mode", "fused")


def test_sample_shape_that_disagrees_with_the_graph(toy_dir, tmp_path, capsys):
    def three(manifest):
        manifest["model"]["sample_shape"] = [3]
        for graph in manifest["graphs"].values():
            for item in graph["inputs"] + graph["outputs"]:
                if item["shape"][-1:] == [2]:
                    item["shape"][-1] = 3

    export = tampered(toy_dir, tmp_path / "three", three)
    expect_cli_error(capsys, 2, "input `sample` has shape ['batch', 2]", export, tmp_path / "out.npy", "--mode", "fused")
    only_model = tampered(toy_dir, tmp_path / "only", lambda m: m["model"].update(sample_shape=[3]))
    expect_cli_error(capsys, 2, "`sample` has shape ['batch', 2]; the contract and model.sample_shape give ['batch', 3]",
                     only_model, tmp_path / "out.npy")


def test_unknown_graph_keys_and_extra_keys_are_ignored(toy_dir, tmp_path):
    def extra(manifest):
        manifest["graphs"]["future_graph"] = {"file": "../../nowhere.onnx", "whatever": 1}
        manifest["graphs"]["sampler"]["unsupported_ops"] = {"cuda": ["BitwiseAnd(int64)"]}
        manifest["something_new"] = {"x": 1}

    info = read_manifest(tampered(toy_dir, tmp_path / "extra", extra))
    assert "future_graph" not in info.graphs and info.graphs["sampler"].unsupported_ops == {"cuda": ("BitwiseAnd(int64)",)}


# -- ncsn-sample output path and arguments --------------------------------------------------------------------------
def test_output_path_is_checked_before_sampling(toy_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "sample_all", lambda *a, **k: pytest.fail("sampling started"))
    (tmp_path / "dir.npy").mkdir()
    expect_cli_error(capsys, 2, "is a directory", toy_dir, tmp_path / "dir.npy")
    (tmp_path / "file").write_text("x")
    expect_cli_error(capsys, 2, "is not a directory", toy_dir, tmp_path / "file" / "out.npy")
    expect_cli_error(capsys, 2, "--output must end in .png or .npy", toy_dir, tmp_path / "out.txt")
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        expect_cli_error(capsys, 2, "is not writable", toy_dir, locked / "out.npy")


@pytest.mark.parametrize(("args", "message"), [
    (["--seed", str(2**63 - 1), "-n", "2"], "--seed must be in [0, 2**63 - N] = [0, 9223372036854775806]"),
    (["--seed", "-1"], "--seed must be in"),
    (["--steps", "0"], "--num-inference-steps must be >= 1"),  # the old spelling is an alias
    (["--num-inference-steps", "11"], "--num-inference-steps must be in [1, 10]"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["-n", "0"], "--num-samples must be >= 1"),
    (["--device-id", "-1"], "--device-id must be >= 0"),
])
def test_bad_arguments_are_one_line_exit_2(toy_dir, tmp_path, capsys, args, message):
    assert cli.main([str(toy_dir), "-o", str(tmp_path / "o.npy"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_argparse_errors_are_one_line(toy_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([str(toy_dir), "-o", str(tmp_path / "o.npy"), "-n", "lots"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value: 'lots'" in err


def test_largest_seed_with_batch_one(toy_dir, tmp_path):
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    out = pipe(batch_size=1, seed=2**63 - 1, num_inference_steps=1, mode="fused", output_type="raw", progress=False)
    assert out.seeds.tolist() == [2**63 - 1]
    assert cli.main([str(toy_dir), "-n", "1", "--seed", str(2**63 - 1), "--steps", "1", "-o", str(tmp_path / "s.npy"),
                     "--no-progress"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), out.images)


def test_manifest_not_an_object_and_missing_sha(toy_dir, tmp_path, capsys):
    export = copy_export(toy_dir, tmp_path / "list")
    write_manifest_json(export, ["not", "an", "object"])
    expect_cli_error(capsys, 2, "must hold a JSON object, got list", export, tmp_path / "out.npy")


# -- JavaScript host and the web server -----------------------------------------------------------------------------
JS_PROBE = r"""
import { loadPipeline } from './runtime/js/node.js';
const results = {};
for (const dir of process.argv.slice(1)) {
  try {
    const pipe = await loadPipeline(dir);
    await pipe.generate({ seed: 0, numSamples: 1, numInferenceSteps: 1 });
    results[dir] = 'ok';
  }
  catch (error) { results[dir] = `${error.name}: ${error.message}`; }
}
console.log(JSON.stringify(results));
"""


def _node_results(*dirs: Path) -> dict[str, str]:
    from host_exports import node_ready

    reason = node_ready()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["node", "--input-type=module", "-e", JS_PROBE, *map(str, dirs)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_js_reader_confines_paths_and_checks_levels(toy_dir, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((toy_dir / "sampler.onnx").read_bytes())
    link = copy_export(toy_dir, tmp_path / "link")
    (link / "sampler.onnx").unlink()
    (link / "sampler.onnx").symlink_to(outside)
    dotdot = tampered(toy_dir, tmp_path / "a" / "dotdot", lambda m: m.update(scheduler_config="../x/scheduler_config.json"))
    absolute = tampered(toy_dir, tmp_path / "abs", lambda m: m["graphs"]["sampler"].update(file=str(outside)))
    levels = tampered(toy_dir, tmp_path / "levels", edit_config=lambda config: config.update(num_train_timesteps=8))
    huge = tampered(toy_dir, tmp_path / "huge", edit_config=lambda config: config.update(num_annealed_steps=10**9))
    results = _node_results(toy_dir, link, dotdot, absolute, levels, huge)
    assert results[str(toy_dir)] == "ok"
    assert "leads outside" in results[str(link)]
    assert "holds '..'" in results[str(dotdot)]
    assert "is absolute" in results[str(absolute)]
    assert "num_train_timesteps=8 but the graphs were exported for 10" in results[str(levels)]
    assert "`num_annealed_steps` must be in [1, 10000]" in results[str(huge)]


SERVE_PROBE = r"""
import { serve } from './examples/web/serve.mjs';
const server = await serve({ exportDir: process.argv[1], port: 0 });
const port = server.address().port;
const out = {};
for (const p of process.argv.slice(2)) {
  try { const r = await fetch(`http://127.0.0.1:${port}${p}`); await r.arrayBuffer(); out[p] = r.status; }
  catch (error) { out[p] = `ERR ${error.message}`; }
}
console.log(JSON.stringify(out));
server.close();
"""


def test_serve_survives_an_unreadable_file_and_refuses_symlinks_out(toy_dir, tmp_path):
    """A mode-000 file must not kill the server. As root every file is readable, so the server then runs as
    uid/gid 65534 (nobody) through `setpriv`, which makes the mode-000 file really unreadable to it."""
    from host_exports import node_ready

    reason = node_ready()
    if reason:
        pytest.skip(reason)
    work = Path(tempfile.mkdtemp(prefix="ncsn-serve-"))  # world-traversable, unlike pytest's tmp_path
    os.chmod(work, 0o755)
    export = copy_export(toy_dir, work / "export")
    (export / "passwd").symlink_to("/etc/passwd")
    (export / "sampler.pt").chmod(0o000)
    command = ["node", "--input-type=module", "-e", SERVE_PROBE, str(export), "/export/passwd", "/export/sampler.pt",
               "/export/manifest.json", "/export/../../etc/passwd"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot make a file unreadable to the server")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == {"/export/passwd": 404, "/export/sampler.pt": 403, "/export/manifest.json": 200,
                      "/export/../../etc/passwd": 404}


def test_python_reader_runs_on_the_files_it_lists_only(toy_dir, tmp_path):
    export = tampered(toy_dir, tmp_path / "unlisted", lambda m: m["files"].pop("scheduler/scheduler_config.json"))
    with pytest.raises(ExportDirectoryError, match="is not listed"):
        NCSNPipeline.from_pretrained(export, provider="cpu")
    assert sys.modules["ncsn_runtime.pipeline"]


def test_onnxruntime_run_errors_become_export_errors(tmp_path):
    from ncsn_runtime.pipeline import graph_run_errors
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(ExportDirectoryError, match=r"onnxruntime failed to run a graph of .*InvalidArgument: bad dims"), \
            graph_run_errors(tmp_path):
        raise InvalidArgument("bad dims")
    with pytest.raises(ZeroDivisionError), graph_run_errors(tmp_path):  # anything else passes through
        raise ZeroDivisionError
