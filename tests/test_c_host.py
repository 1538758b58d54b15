"""C host: examples/c/ncsn_sample (onnxruntime C API via dlopen) gives the Python runtime's samples.

Compiled by examples/c/build.sh, which downloads onnxruntime_c_api.h from Debian's libonnxruntime-dev package;
skipped with the reason when gcc or the header is unavailable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from untrusted import tampered

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

BUILD_SCRIPT = hosts.ROOT / "examples" / "c" / "build.sh"
BINARY = hosts.ROOT / "examples" / "c" / "build" / "ncsn_sample"


def onnxruntime_library() -> Path | None:
    """The libonnxruntime.so.* shipped inside the onnxruntime Python wheel."""
    import onnxruntime

    found = sorted((Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*"))
    return found[0] if found else None


@pytest.fixture(scope="module")
def binary() -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install gcc)")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 3:
        pytest.skip(f"examples/c cannot be built here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    return BINARY


@pytest.fixture(scope="module")
def library() -> Path:
    path = onnxruntime_library()
    if path is None:
        pytest.skip("the onnxruntime wheel ships no libonnxruntime.so (onnxruntime/capi/)")
    return path


def run_c(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("name", "seed", "batch", "steps"),
    [("toy-gmm", 2**53 + 11, 6, None), ("tiny-conv", 5, 4, None), ("toy-gmm", 2**63 - 1 - 3, 3, 4)],
)
def test_c_matches_python_runtime(binary, library, tmp_path, name, seed, batch, steps):
    export = hosts.build_export(name)
    output = tmp_path / "c.npy"
    extra = ["--steps", str(steps)] if steps else []
    proc = run_c(
        binary,
        str(export),
        "--seed",
        str(seed),
        "--num-samples",
        str(batch),
        "--output",
        str(output),
        "--ort-lib",
        str(library),
        "--json",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    samples = np.load(output)
    reference = hosts.python_samples(export, seed, batch, "fused", num_inference_steps=steps)
    assert samples.shape == reference.shape == tuple(summary["shape"])
    difference = float(np.abs(samples - reference).max())
    assert difference <= hosts.TOLERANCE, f"C {name}: max abs diff {difference:.3g} vs Python"
    assert np.abs(samples - hosts.python_samples(export, seed - 1, batch, "fused", num_inference_steps=steps)).max() > 1e-2


def _score_as_sampler(source: Path, target: Path) -> Path:
    """score.onnx copied over sampler.onnx, its hash updated: the manifest checks pass, the session's I/O does not."""
    from untrusted import rehash

    shutil.copytree(source, target)
    (target / "sampler.onnx").unlink()
    shutil.copy(target / "score.onnx", target / "sampler.onnx")
    rehash(target, "sampler.onnx")
    return target


@pytest.mark.parametrize(
    ("case", "extra", "code", "message"),
    [
        ("missing", [], 1, "is not an ncsn-export directory"),
        ("mismatched", [], 1, "the sampler contract has 5"),
        ("gmm", ["--seed", "abc"], 2, "--seed must be a decimal integer"),
        ("gmm", ["--seed", str(2**63)], 2, "--seed must be in [0, 9223372036854775800]"),
        ("gmm", ["--output", "x.png"], 2, "--output must end in .npy"),
        ("gmm", ["--steps", "11"], 2, "--steps must be in [1, 10]"),
        ("gmm", ["--ort-lib", "/nonexistent/libonnxruntime.so"], 1, "cannot load onnxruntime"),
        ("endless", [], 1, "exceeds the limits (L <= 100000, T <= 10000, L x T <= 1000000"),  # issue 11: T = 1e9
        ("huge", [], 1, "manifest sample_shape has more than 16777216 elements per sample"),
        ("gmm", ["--seed", str(2**63 - 8)], 0, ""),  # seeds up to 2**63 - 1 are usable (S + N - 1)
    ],
)
def test_c_bad_input_messages(binary, library, tmp_path, case, extra, code, message):
    export = hosts.build_export("toy-gmm")
    directory = {
        "missing": lambda: tmp_path / "nope",
        "mismatched": lambda: _score_as_sampler(export, tmp_path / "mismatched"),
        "gmm": lambda: export,
        "endless": lambda: tampered(export, tmp_path / "endless",
                                    edit_config=lambda config: config.update(num_annealed_steps=10**9)),
        "huge": lambda: tampered(export, tmp_path / "huge",
                                 lambda manifest: manifest["model"].update(sample_shape=[4096, 4096, 4])),
    }[case]()
    proc = run_c(
        binary, str(directory), "--num-samples", "8", "--output", str(tmp_path / "out.npy"), "--ort-lib", str(library), *extra
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stderr


# -- inpainting: ncsn_sample --inpaint KNOWN.npy --mask MASK.npy runs inpaint.onnx -------------------------------------

def _inpaint_inputs(tmp_path: Path, mask_values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    known = np.random.default_rng(3).uniform(0, 1, (1, 8, 8)).astype(np.float32)
    mask = np.ones((1, 8, 8), np.float32)
    mask[..., 2:8, 1:5] = 0.0
    np.save(tmp_path / "known.npy", known[0])  # [H, W] for one channel
    np.save(tmp_path / "mask.npy", mask if mask_values is None else mask_values)
    return known, mask


def test_c_inpainting_matches_python_stepwise(binary, library, tmp_path):
    from ncsn_runtime import NCSNPipeline

    export = hosts.build_export("tiny-conv")
    known, mask = _inpaint_inputs(tmp_path)
    seed, batch = 2**62 + 9, 3
    proc = run_c(binary, str(export), "--seed", str(seed), "--num-samples", str(batch), "--output", str(tmp_path / "c.npy"),
                 "--ort-lib", str(library), "--json", "--inpaint", str(tmp_path / "known.npy"),
                 "--mask", str(tmp_path / "mask.npy"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["graph"] == "inpaint"
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    reference = pipe.inpaint(known, mask, seed=seed, batch_size=batch, output_type="raw", progress=False,
                             mode="stepwise").images
    samples = np.load(tmp_path / "c.npy")
    difference = float(np.abs(samples - reference).max())
    print(f"C vs Python stepwise inpainting: max abs diff {difference:.3e}")
    assert samples.shape == reference.shape and difference <= hosts.TOLERANCE
    assert np.abs(samples[0] - samples[1]).max() > 1e-2 and (samples[:, mask.astype(bool)] == known[mask.astype(bool)]).all()


@pytest.mark.parametrize(("mask", "extra", "message"), [
    (np.full((8, 8), 0.5, np.float32), [], r"only 0 and 1 \(1 = known, 0 = fill in\), got 64 other values in \[0.5, 0.5\]"),
    (np.ones((8, 8), np.float32), [], r"all 1 \(everything known\)"),
    (np.zeros((8, 8), np.float32), [], r"all 0 \(nothing known\)"),
    (np.ones((8, 7), np.float32), [], r"has shape \[8, 7\]; this export's samples are \[1, 8, 8\]"),
    (np.ones((8, 8), np.float64), [], "must hold float32"),
    (None, ["--no-mask"], "go together"),
])
def test_c_bad_masks(binary, library, tmp_path, mask, extra, message):
    import re

    _inpaint_inputs(tmp_path, mask)
    args = [str(hosts.build_export("tiny-conv")), "--output", str(tmp_path / "c.npy"), "--ort-lib", str(library),
            "--inpaint", str(tmp_path / "known.npy")]
    if not extra:
        args += ["--mask", str(tmp_path / "mask.npy")]
    proc = run_c(binary, *args)
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr) and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "c.npy").exists()
