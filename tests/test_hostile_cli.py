"""Hostile command lines beyond issue 18's list, by its rules (numbers range-checked, output checked before any work,
one line and no stack trace), against the Node CLI and the C host; the Python CLI's answer to the same mistake is the
reference (tests/test_cli_reliability.py and tests/test_untrusted_export.py cover it).

Found by trying: `--threads 1000000000` made onnxruntime-node abort with std::bad_alloc; a usage error printed 19 lines
(the whole help); an output in a missing folder, or a name too long for the temporary sibling, failed only after
sampling, naming the temporary file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from host_exports import ROOT, build_export, node_ready, run_node
from test_host_limits import c_host  # noqa: F401  (the C host built offline, or a skip with the reason)

LONG = "a" * 240 + ".npy"  # 244 bytes: fits a file system's 255, not with the temporary name's 18 (or C's 14) more


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


def _one_line(stderr: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "    at " not in stderr and "node:internal" not in stderr, stderr


NODE_CASES = {
    "threads-1e9": (["--threads", "1000000000"], "--threads must be an integer in [1, 4096]"),
    "threads-negative": (["--threads", "-1"], "--threads"),
    "threads-0": (["--threads", "0"], "[1, 4096]"),
    "num-samples-float": (["-n", "1.5"], "--num-samples must be an integer >= 1"),
    "unknown-option": (["--bogus"], "Unknown option '--bogus'"),
    "output-missing-folder": (["-o", "{tmp}/nowhere/x.npy"], "does not exist"),
    "output-name-too-long": (["-o", f"{{tmp}}/{LONG}"], "the name is too long (244 bytes"),
    "output-is-directory": (["-o", "{tmp}/dir.npy"], "is a directory"),
    "output-extension": (["-o", "{tmp}/x.txt"], "--output must end in .npy or .png"),
}


@pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))
@pytest.mark.parametrize("case", list(NODE_CASES))
def test_node_cli_refuses_in_one_line_before_work(toy_dir, tmp_path, case):
    args, words = NODE_CASES[case]
    (tmp_path / "dir.npy").mkdir()
    args = [arg.format(tmp=tmp_path) for arg in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.npy")]
    proc = run_node(["runtime/js/cli.mjs", str(toy_dir), "-n", "2", "--steps", "1", *args], timeout=60)
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr)
    assert words in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.npy"]  # nothing written, no temporary file


@pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))
def test_node_cli_largest_thread_count_runs(toy_dir, tmp_path):
    proc = run_node(["runtime/js/cli.mjs", str(toy_dir), "-n", "2", "--steps", "1", "--threads", "8",
                     "-o", str(tmp_path / "out.npy")], timeout=60)
    assert proc.returncode == 0 and (tmp_path / "out.npy").is_file(), proc.stderr


C_CASES = {
    "threads-over": (["--threads", "5000"], "--threads must be in [0, 4096]"),
    "num-samples-0": (["--num-samples", "0"], "--num-samples must be in [1, 1048576], got 0"),
    "output-missing-folder": (["--output", "{tmp}/nowhere/x.npy"], "does not exist"),
    "output-name-too-long": (["--output", f"{{tmp}}/{LONG}"], "the name is too long (244 bytes"),
}


@pytest.mark.parametrize("case", list(C_CASES))
def test_c_host_refuses_in_one_line_before_work(toy_dir, c_host, tmp_path, case):  # noqa: F811 (the fixture)
    binary, library = c_host
    args, words = C_CASES[case]
    args = [arg.format(tmp=tmp_path) for arg in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out.npy")]
    if "--num-samples" not in args:
        args += ["--num-samples", "2"]
    proc = subprocess.run([str(binary), str(toy_dir), "--ort-lib", str(library), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr)
    assert words in proc.stderr
    assert list(tmp_path.iterdir()) == []


def _images(folder: Path, count: int = 3, size: int = 8) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--image-size", "1000000"], 2, "exceeds the 16777216 elements per sample an export may have; use at most 2364"),
    (["--image-size", "8", "--ngf", "1000000"], 1, "out of memory (tried to allocate"),  # was a torch RuntimeError traceback
])
def test_train_sizes_are_checked_or_one_line(tmp_path, capsys, args, code, words):
    """ncsn-train: an image size no export could hold is refused before any data is read (was a numpy MemoryError
    traceback allocating 2.7 TiB); a network too big for this machine's memory is one line, exit 1."""
    from ncsn_export.training.cli import main

    data = _images(tmp_path / "data")
    assert main(["--data", str(data), "--out", str(tmp_path / "run"), "--iterations", "1", "--no-progress", *args]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and words in err, err
