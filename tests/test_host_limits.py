"""One set of limits on every host (issue 18, part 3): a table of hostile export directories and arguments, each run
through the Python runtime (ncsn_runtime.cli, in process), the Node host (runtime/js/cli.mjs) and the C host
(examples/c/build/ncsn_sample, built offline by examples/c/build.sh when gcc and the onnxruntime C header are there),
asserting the same verdict (accept: exit 0 and a file written; refuse: a non-zero exit, one line on stderr, no file).
The C host runs the fused sampler only: the cases that pick another graph (--graph) are not applicable to it.

The limits themselves are mirrored in runtime/js (manifest.js, noise.js); :func:`test_node_limits_equal_python_limits`
asserts that the Node values equal the Python ones, so a change on one side fails here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from host_exports import build_export, node_ready, run_node
from ncsn_runtime import cli, fileio, manifest, noise
from onnx import TensorProto, helper
from untrusted import copy_export, read_manifest_json, rehash, tampered, write_manifest_json

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

FAKE_SHA = "0" * 64  # entries that are listed but never read: only their form is checked


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


def _pad_files(count: int, size: int = 0) -> Callable[[dict], None]:
    """A manifest edit: add unread `files` entries until the table holds ``count`` entries (the last one ``size`` bytes)."""
    def edit(m: dict) -> None:
        for index in range(count - len(m["files"])):
            m["files"][f"pad/{index}.bin"] = {"sha256": FAKE_SHA, "bytes": 0}
        m["files"][next(reversed(m["files"]))]["bytes"] = size
    return edit


def _symlinked_manifest(source: Path, target: Path) -> Path:
    copy_export(source, target)
    (target / "manifest.json").rename(target / "real-manifest.json")
    (target / "manifest.json").symlink_to("real-manifest.json")
    return target


def _padded_manifest(source: Path, target: Path, total: int) -> Path:
    """manifest.json grown to ``total`` bytes by an informative key (readers ignore keys they do not know)."""
    copy_export(source, target)
    m = read_manifest_json(target)
    m["padding"] = ""
    base = len(json.dumps(m).encode())
    m["padding"] = "x" * (total - base)
    write_manifest_json(target, m)
    assert (target / "manifest.json").stat().st_size == total
    return target


def _edit_table(key: str, side: str, name: str, **change) -> Callable[[dict], None]:
    """A manifest edit: graphs[key][side] entry `name` updated with `change` (e.g. dtype=..., shape=...)."""
    def edit(m: dict) -> None:
        next(item for item in m["graphs"][key][side] if item["name"] == name).update(change)
    return edit


def _moved_sampler(source: Path, target: Path) -> Path:
    """sampler.onnx moved to graphs/sampler.onnx (graphs.sampler.file and files updated), with a copy of the external
    data it names next to it (locations are relative to the graph's folder)."""
    copy_export(source, target)
    m = read_manifest_json(target)
    (target / "graphs").mkdir()
    (target / "sampler.onnx").rename(target / "graphs" / "sampler.onnx")
    m["files"]["graphs/sampler.onnx"] = m["files"].pop("sampler.onnx")
    if "weights.onnx.data" in m["files"]:
        (target / "graphs" / "weights.onnx.data").write_bytes((target / "weights.onnx.data").read_bytes())
        m["files"]["graphs/weights.onnx.data"] = m["files"]["weights.onnx.data"]
    m["graphs"]["sampler"]["file"] = "graphs/sampler.onnx"
    write_manifest_json(target, m)
    return target


def _tampered_sampler(source: Path, target: Path) -> Path:
    """sampler.onnx with one byte changed (same size), its manifest entry not updated."""
    copy_export(source, target)
    data = bytearray((target / "sampler.onnx").read_bytes())
    data[len(data) // 2] ^= 1
    (target / "sampler.onnx").unlink()
    (target / "sampler.onnx").write_bytes(bytes(data))
    return target


def _outside_sampler(source: Path, target: Path) -> Path:
    """sampler.onnx a symlink to a verified copy outside the directory."""
    copy_export(source, target)
    outside = target.parent / "outside-sampler.onnx"
    (target / "sampler.onnx").rename(outside)
    (target / "sampler.onnx").symlink_to(outside)
    return target


def _nan_score(source: Path, target: Path) -> Path:
    """score.onnx replaced by score = sample * NaN (same I/O as the contract), its hash updated."""
    copy_export(source, target)
    sample = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 2])
    timestep = helper.make_tensor_value_info("timestep", TensorProto.INT64, ["batch"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 2])
    nan = helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])
    graph = helper.make_graph([helper.make_node("Mul", ["sample", "nan"], ["score"])], "nan_score", [sample, timestep],
                              [score], initializer=[nan])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (target / "score.onnx").unlink()
    onnx.save(model, str(target / "score.onnx"))
    rehash(target, "score.onnx")
    return target


MAX_SEED = 2**63 - 1
# name -> (build(toy_dir, target) -> export dir, extra CLI args, expected verdict)
CASES: dict[str, tuple[Callable[[Path, Path], Path], list[str], str]] = {
    "valid": (lambda s, t: s, [], "accept"),
    "manifest-symlink": (_symlinked_manifest, [], "refuse"),
    "manifest-16MiB": (lambda s, t: _padded_manifest(s, t, fileio.MAX_JSON_BYTES), [], "accept"),
    "manifest-16MiB+1": (lambda s, t: _padded_manifest(s, t, fileio.MAX_JSON_BYTES + 1), [], "refuse"),
    "bytes-2^40": (lambda s, t: tampered(s, t, _pad_files(10, 2**40)), [], "accept"),
    "bytes-2^40+1": (lambda s, t: tampered(s, t, _pad_files(10, 2**40 + 1)), [], "refuse"),
    "bytes-2^41": (lambda s, t: tampered(s, t, _pad_files(10, 2**41)), [], "refuse"),
    "files-10000": (lambda s, t: tampered(s, t, _pad_files(manifest.MAX_FILES)), [], "accept"),
    "files-10001": (lambda s, t: tampered(s, t, _pad_files(manifest.MAX_FILES + 1)), [], "refuse"),
    "is_image-yes": (lambda s, t: tampered(s, t, lambda m: m["model"].update(is_image="yes")), [], "refuse"),
    "final_denoise-1": (lambda s, t: tampered(s, t, lambda m: m["model"].update(final_denoise=1)), [], "refuse"),
    "compute_dtype-bfloat16": (lambda s, t: tampered(s, t, lambda m: m["model"].update(compute_dtype="bfloat16")), [],
                               "refuse"),
    "compute_dtype-float32": (lambda s, t: tampered(s, t, lambda m: m["model"].update(compute_dtype="float32")), [],
                              "accept"),
    "model-name-number": (lambda s, t: tampered(s, t, lambda m: m["model"].update(name=7)), [], "refuse"),
    "opset-0": (lambda s, t: tampered(s, t, lambda m: m.update(opset=0)), [], "refuse"),
    "unknown-graph-key": (lambda s, t: tampered(s, t, lambda m: m["graphs"].update(
        future_graph={"file": "../../nowhere.onnx", "whatever": 1})), [], "accept"),
    "sampler-table-reordered": (lambda s, t: tampered(s, t, lambda m: m["graphs"]["sampler"]["inputs"].reverse()), [],
                                "accept"),
    "step-table-renamed": (lambda s, t: tampered(s, t, lambda m: m["graphs"]["step"]["inputs"][0].update(name="x")), [],
                           "refuse"),  # a graph not run this time: its table is still checked
    "init_range-extreme": (lambda s, t: tampered(s, t, lambda m: m["model"].update(init_range=[-3e38, 3e38])), [],
                           "refuse"),
    "sigmas-extreme": (lambda s, t: tampered(s, t, edit_config=lambda c: c.update(sigma_max=1e30, sigma_min=1e-30)),
                       ["--steps", "2"],  # step sizes eps * (sigma_i / sigma_last)**2 overflow float32
                       "refuse"),
    "nan-score-graph": (_nan_score, ["--graph", "score"], "refuse"),
    "seed-max-n1": (lambda s, t: s, ["--seed", str(MAX_SEED), "-n", "1"], "accept"),
    "seed-max-n2": (lambda s, t: s, ["--seed", str(MAX_SEED), "-n", "2"], "refuse"),
    "seed-max-1-n2": (lambda s, t: s, ["--seed", str(MAX_SEED - 1), "-n", "2"], "accept"),
    "seed-2^63": (lambda s, t: s, ["--seed", str(2**63), "-n", "1"], "refuse"),
    # graph I/O tables (names, dtypes, ranks, fixed dims; Node since issue 18 part 4, C since then too)
    "sampler-table-dtype": (lambda s, t: tampered(s, t, _edit_table("sampler", "inputs", "sample", dtype="float64")), [],
                            "refuse"),
    "sampler-table-rank": (lambda s, t: tampered(s, t, _edit_table("sampler", "inputs", "seed", shape=["batch", 1])), [],
                           "refuse"),
    "step-table-fixed-dim": (lambda s, t: tampered(s, t, _edit_table("step", "outputs", "next_sample", shape=["batch", 3])),
                             [], "refuse"),
    "sampler-table-dynamic-int": (lambda s, t: tampered(s, t, _edit_table("sampler", "inputs", "sample", shape=[4, 2])), [],
                                  "accept"),  # a dynamic axis may be written as a number (it is not checked)
    "step-table-dim-2^63": (lambda s, t: tampered(s, t, _edit_table("step", "inputs", "seed", shape=[2**63])), [], "refuse"),
    # files: hashes, paths
    "sampler-moved": (_moved_sampler, [], "accept"),
    "sampler-tampered": (_tampered_sampler, [], "refuse"),
    "sampler-symlink-outside": (_outside_sampler, [], "refuse"),
    "files-bytes-float": (lambda s, t: tampered(s, t, lambda m: m["files"]["sampler.onnx"].update(
        bytes=float(m["files"]["sampler.onnx"]["bytes"]))), [], "refuse"),
    "format_version-true": (lambda s, t: tampered(s, t, lambda m: m.update(format_version=True)), [], "refuse"),
    "sample_shape-float": (lambda s, t: tampered(s, t, lambda m: m["model"].update(sample_shape=[2.0])), [], "refuse"),
    "is_image-absent": (lambda s, t: tampered(s, t, lambda m: m["model"].pop("is_image")), [], "accept"),
    # found by tests/test_properties_hosts.py: null is not a default (except where it means "not recorded")
    "scheduler_config-null": (lambda s, t: tampered(s, t, lambda m: m.update(scheduler_config=None)), [], "refuse"),
    "dtype-null": (lambda s, t: tampered(s, t, lambda m: m["model"].update(dtype=None)), [], "refuse"),
    "num_train_timesteps-null": (lambda s, t: tampered(s, t, lambda m: m["model"].update(num_train_timesteps=None)), [],
                                 "accept"),
    "step-table-dim-2^53+1": (lambda s, t: tampered(s, t, _edit_table("step", "inputs", "seed", shape=[2**53 + 1])), [],
                              "accept"),  # a dynamic dim: any int in [0, 2**62], read exactly
}
# cases a host cannot run, with the reason (the verdict is not compared there)
NOT_APPLICABLE = {"c": {"nan-score-graph": "the C host runs sampler.onnx only (no --graph)"}}
# known differences, asserted as they are (so a fix shows up here): host -> case -> (its verdict, why); none now
# ("files-bytes-float" was one: JSON.parse reads 19398.0 as 19398; runtime/js/json_numbers.js keeps them apart)
KNOWN_GAPS: dict[str, dict[str, tuple[str, str]]] = {"node": {}}


def _python_verdict(export: Path, output: Path, extra: list[str], capsys) -> tuple[str, str]:
    code = cli.main([str(export), "-n", "2", "--steps", "1", "-o", str(output), "--no-progress", *extra])
    err = capsys.readouterr().err
    if code == 0:
        assert output.is_file(), err
        return "accept", err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert not output.exists()
    return "refuse", err


def _node_verdict(export: Path, output: Path, extra: list[str]) -> tuple[str, str]:
    proc = run_node(["runtime/js/cli.mjs", str(export), "-n", "2", "--steps", "1", "-o", str(output), *extra], timeout=120)
    if proc.returncode == 0:
        assert output.is_file(), proc.stderr
        return "accept", proc.stderr
    assert proc.returncode in (1, 2) and proc.stderr.startswith("error: "), proc.stderr
    assert "    at " not in proc.stderr, proc.stderr  # a message, not a stack trace
    assert not output.exists()
    return "refuse", proc.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_python_and_node_give_the_same_verdict(toy_dir, tmp_path, capsys, case):
    build, extra, expected = CASES[case]
    export = build(toy_dir, tmp_path / "export")
    python, python_err = _python_verdict(export, tmp_path / "python.npy", extra, capsys)
    node, node_err = _node_verdict(export, tmp_path / "node.npy", extra)
    node_expected = KNOWN_GAPS["node"].get(case, (expected,))[0]
    assert (python, node) == (expected, node_expected), f"python: {python_err}\nnode: {node_err}"
    if expected == "accept" and not case.startswith("seed"):
        np.testing.assert_allclose(np.load(tmp_path / "node.npy"), np.load(tmp_path / "python.npy"), atol=1e-4)
    if case in ("init_range-extreme", "sigmas-extreme", "nan-score-graph"):
        assert "NaN/inf" in python_err and "NaN/inf" in node_err, (python_err, node_err)


@pytest.fixture(scope="module")
def c_host() -> tuple[Path, Path]:
    """(binary, libonnxruntime) of the C host, built offline by examples/c/build.sh; skipped with its reason."""
    import shutil
    import subprocess

    from test_c_host import BINARY, BUILD_SCRIPT, onnxruntime_library

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc)")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        pytest.skip(f"examples/c cannot be built here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    library = onnxruntime_library()
    if library is None:
        pytest.skip("the onnxruntime wheel ships no libonnxruntime.so (onnxruntime/capi/)")
    return BINARY, library


def _c_verdict(c_host: tuple[Path, Path], export: Path, output: Path, extra: list[str]) -> tuple[str, str]:
    import subprocess

    binary, library = c_host
    args = {"-n": "--num-samples"}
    translated = [args.get(arg, arg) for arg in ["-n", "2", "--steps", "1", *extra]]
    proc = subprocess.run([str(binary), str(export), "--output", str(output), "--ort-lib", str(library), *translated],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        assert output.is_file(), proc.stderr
        return "accept", proc.stderr
    assert proc.returncode in (1, 2) and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert not output.exists() and not list(output.parent.glob(f"{output.name}.tmp*")), "a file was left behind"
    return "refuse", proc.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_c_gives_the_same_verdict(toy_dir, c_host, tmp_path, capsys, case):
    if case in NOT_APPLICABLE["c"]:
        pytest.skip(NOT_APPLICABLE["c"][case])
    build, extra, expected = CASES[case]
    export = build(toy_dir, tmp_path / "export")
    python, python_err = _python_verdict(export, tmp_path / "python.npy", extra, capsys)
    c, c_err = _c_verdict(c_host, export, tmp_path / "c.npy", extra)
    assert (python, c) == (expected, expected), f"python: {python_err}\nc: {c_err}"
    if expected == "accept" and not case.startswith("seed"):
        np.testing.assert_allclose(np.load(tmp_path / "c.npy"), np.load(tmp_path / "python.npy"), atol=1e-4)
    if case in ("init_range-extreme", "sigmas-extreme"):
        assert "NaN/inf" in c_err, c_err


LIMITS_PROBE = r"""
import * as m from './runtime/js/manifest.js';
import { MAX_SEED } from './runtime/js/noise.js';
import { MAX_THREADS, TEMP_NAME_EXTRA } from './runtime/js/node.js';
console.log(JSON.stringify({ MAX_THREADS, TEMP_NAME_EXTRA,
  MAX_SAMPLE_RANK: m.MAX_SAMPLE_RANK, MAX_SAMPLE_ELEMENTS: m.MAX_SAMPLE_ELEMENTS,
  MAX_FILES: m.MAX_FILES, MAX_FILE_BYTES: m.MAX_FILE_BYTES, MAX_JSON_BYTES: m.MAX_JSON_BYTES,
  COMPUTE_DTYPES: m.COMPUTE_DTYPES, MAX_SEED: MAX_SEED.toString() }));
"""


def test_node_limits_equal_python_limits():
    proc = run_node(["--input-type=module", "-e", LIMITS_PROBE])
    assert proc.returncode == 0, proc.stderr
    node = json.loads(proc.stdout)
    from ncsn_runtime.fileio import ATOMIC_NAME_EXTRA
    from ncsn_runtime.providers import MAX_THREADS

    assert node == {
        "MAX_THREADS": MAX_THREADS,
        "TEMP_NAME_EXTRA": ATOMIC_NAME_EXTRA,  # the bytes the temporary sibling's name adds (Node's is as long)
        "MAX_SAMPLE_RANK": manifest.MAX_SAMPLE_RANK,
        "MAX_SAMPLE_ELEMENTS": manifest.MAX_SAMPLE_ELEMENTS,
        "MAX_FILES": manifest.MAX_FILES,
        "MAX_FILE_BYTES": manifest.MAX_FILE_BYTES,
        "MAX_JSON_BYTES": fileio.MAX_JSON_BYTES,
        "COMPUTE_DTYPES": ["float32", "float16"],  # the set manifest._model accepts
        "MAX_SEED": str(noise.MAX_SEED),
    }


@pytest.mark.parametrize(("model", "is_image"), [("tiny-conv", True), ("toy-gmm", False)])
def test_absent_is_image_has_one_default_on_every_host(tmp_path, capsys, model, is_image):
    """A manifest without model.is_image: images when sample_shape has 3 dims [C, H, W] (Python's rule, SECURITY.md),
    on Python and Node alike (Node read an absent value as false and refused a PNG of a [1, 8, 8] model)."""
    from ncsn_runtime.pipeline import NCSNPipeline

    export = tampered(build_export(model), tmp_path / "export", lambda m: m["model"].pop("is_image"))

    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    probe = ("import { loadManifest } from './runtime/js/manifest.js'; import { fsSource } from './runtime/js/node.js';"
             f"console.log(JSON.stringify((await loadManifest(fsSource({json.dumps(str(export))}))).model.is_image));")
    proc = run_node(["--input-type=module", "-e", probe])
    assert proc.returncode == 0, proc.stderr
    assert (pipe.is_image, json.loads(proc.stdout)) == (is_image, is_image)
    if is_image:  # both write the PNG grid
        assert cli.main([str(export), "-n", "2", "--steps", "1", "-o", str(tmp_path / "p.png"), "--no-progress"]) == 0
        node = run_node(["runtime/js/cli.mjs", str(export), "-n", "2", "--steps", "1", "-o", str(tmp_path / "n.png")])
        assert node.returncode == 0, node.stderr
        assert (tmp_path / "p.png").read_bytes()[:8] == (tmp_path / "n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
