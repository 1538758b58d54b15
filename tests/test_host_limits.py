"""One set of limits on every host (issue 18, part 3): a table of hostile export directories and arguments, each run
through the Python runtime (ncsn_runtime.cli, in process) and the Node host (runtime/js/cli.mjs), asserting the same
verdict (accept: exit 0 and a file written; refuse: a non-zero exit, one line on stderr, no file written).

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
}


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
    assert (python, node) == (expected, expected), f"python: {python_err}\nnode: {node_err}"
    if expected == "accept" and not case.startswith("seed"):
        np.testing.assert_allclose(np.load(tmp_path / "node.npy"), np.load(tmp_path / "python.npy"), atol=1e-4)
    if case in ("init_range-extreme", "sigmas-extreme", "nan-score-graph"):
        assert "NaN/inf" in python_err and "NaN/inf" in node_err, (python_err, node_err)


LIMITS_PROBE = r"""
import * as m from './runtime/js/manifest.js';
import { MAX_SEED } from './runtime/js/noise.js';
console.log(JSON.stringify({ MAX_SAMPLE_RANK: m.MAX_SAMPLE_RANK, MAX_SAMPLE_ELEMENTS: m.MAX_SAMPLE_ELEMENTS,
  MAX_FILES: m.MAX_FILES, MAX_FILE_BYTES: m.MAX_FILE_BYTES, MAX_JSON_BYTES: m.MAX_JSON_BYTES,
  COMPUTE_DTYPES: m.COMPUTE_DTYPES, MAX_SEED: MAX_SEED.toString() }));
"""


def test_node_limits_equal_python_limits():
    proc = run_node(["--input-type=module", "-e", LIMITS_PROBE])
    assert proc.returncode == 0, proc.stderr
    node = json.loads(proc.stdout)
    assert node == {
        "MAX_SAMPLE_RANK": manifest.MAX_SAMPLE_RANK,
        "MAX_SAMPLE_ELEMENTS": manifest.MAX_SAMPLE_ELEMENTS,
        "MAX_FILES": manifest.MAX_FILES,
        "MAX_FILE_BYTES": manifest.MAX_FILE_BYTES,
        "MAX_JSON_BYTES": fileio.MAX_JSON_BYTES,
        "COMPUTE_DTYPES": ["float32", "float16"],  # the set manifest._model accepts
        "MAX_SEED": str(noise.MAX_SEED),
    }
