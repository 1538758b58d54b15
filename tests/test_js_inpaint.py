"""Node host inpainting: NCSNPipeline.inpaint (fused inpaint.onnx and every stepwise graph) and runtime/js/cli.mjs
--inpaint/--mask give the Python runtime's stepwise inpainting for the same seeds; bad masks are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

pytestmark = pytest.mark.skipif(hosts.node_ready() is not None, reason=str(hosts.node_ready()))

SEED, BATCH = 2**40 + 3, 3

API_SCRIPT = r"""
import { loadPipeline } from './runtime/js/node.js';
const [dir, spec] = [process.argv[1], JSON.parse(process.argv[2])];
const out = {};
for (const graphs of [['inpaint'], ['score'], ['step', 'score'], ['gpu_step']]) {
  const pipe = await loadPipeline(dir, { graphs });
  const levels = [];
  const result = await pipe.inpaint({ known: Float32Array.from(spec.known), mask: Float32Array.from(spec.mask),
    seed: BigInt(spec.seed), numSamples: spec.batch, onProgress: (p) => levels.push(p.position) });
  out[graphs.join('+')] = { samples: Array.from(result.samples), mode: result.mode, graph: result.graph, levels };
  await pipe.release();
}
const pipe = await loadPipeline(dir, { graphs: ['inpaint'] });
out.errors = [];
for (const mask of spec.bad_masks) {
  try {
    await pipe.inpaint({ known: Float32Array.from(spec.known), mask: Float32Array.from(mask), seed: 0n });
    out.errors.push(null);
  } catch (error) {
    out.errors.push(`${error.name}: ${error.message}`);
  }
}
process.stdout.write(JSON.stringify(out));
"""


def _known_and_mask() -> tuple[np.ndarray, np.ndarray]:
    known = np.random.default_rng(1).uniform(0, 1, (1, 8, 8)).astype(np.float32)
    mask = np.ones((1, 8, 8), np.float32)
    mask[..., 1:7, 4:] = 0.0
    return known, mask


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return hosts.build_export("tiny-conv")


@pytest.fixture(scope="module")
def reference(conv_dir: Path) -> np.ndarray:
    from ncsn_runtime import NCSNPipeline

    known, mask = _known_and_mask()
    pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    return pipe.inpaint(known, mask, seed=SEED, batch_size=BATCH, output_type="raw", progress=False, mode="stepwise").images


def test_node_api_matches_python_stepwise_inpainting(conv_dir: Path, reference: np.ndarray):
    known, mask = _known_and_mask()
    half = np.where(mask > 0, 0.5, 0.0)
    spec = {"known": known.ravel().tolist(), "mask": mask.ravel().tolist(), "seed": str(SEED), "batch": BATCH,
            "bad_masks": [half.ravel().tolist(), np.ones(64).tolist(), np.zeros(64).tolist(), np.ones(63).tolist()]}
    proc = hosts.run_node(["--input-type=module", "-e", API_SCRIPT, str(conv_dir), json.dumps(spec)])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    diffs = {}
    for key in ("inpaint", "score", "step+score", "gpu_step"):
        samples = np.asarray(out[key]["samples"], np.float32).reshape(reference.shape)
        diffs[key] = float(np.abs(samples - reference).max())
        assert out[key]["mode"] == ("fused" if key == "inpaint" else "stepwise")
        assert out[key]["levels"] == ([3] if key == "inpaint" else [0, 1, 2, 3])  # stepwise: after every level
    print(f"Node vs Python stepwise inpainting, max abs diff: {diffs}")
    assert max(diffs.values()) <= hosts.TOLERANCE, diffs
    assert np.abs(reference[0] - reference[1]).max() > 1e-2  # seeds differ: the comparison is not vacuous
    errors = out["errors"]
    assert errors[0].startswith("RangeError: `mask` must hold only 0 and 1")
    assert f"{int(mask.sum())} other values in [0.5, 0.5]" in errors[0]
    assert "all 1 (everything known)" in errors[1] and "all 0 (nothing known)" in errors[2]
    assert "`mask` has 63 values; the samples need 64" in errors[3]


@pytest.mark.parametrize("mode", ["fused", "stepwise"])
def test_node_cli_inpaints(conv_dir: Path, reference: np.ndarray, tmp_path: Path, mode):
    known, mask = _known_and_mask()
    np.save(tmp_path / "known.npy", known[0])  # [H, W] for one channel
    np.save(tmp_path / "mask.npy", mask)
    summary = hosts.node_cli(conv_dir, tmp_path / "out.npy", SEED, BATCH, mode, "--inpaint", str(tmp_path / "known.npy"),
                             "--mask", str(tmp_path / "mask.npy"))
    assert summary["mode"] == mode and summary["graph"] == ("inpaint" if mode == "fused" else "score")
    assert np.abs(np.load(tmp_path / "out.npy") - reference).max() <= hosts.TOLERANCE


@pytest.mark.parametrize(("mask", "extra", "message"), [
    (np.full((1, 8, 8), 2.0, np.float32), [], r"only 0 and 1 .*64 other values in \[2, 2\]"),
    (np.ones((1, 8, 8), np.float32), [], "all 1"),
    (np.ones((8, 7), np.float32), [], r"has shape \[8,7\]; this export's samples are \[1,8,8\]"),
    (np.ones((8, 8), np.int64), [], "must hold float32"),
    (None, [], "go together"),
])
def test_node_cli_bad_mask(conv_dir: Path, tmp_path: Path, mask, extra, message):
    import re

    known, _ = _known_and_mask()
    np.save(tmp_path / "known.npy", known)
    args = ["runtime/js/cli.mjs", str(conv_dir), "-o", str(tmp_path / "out.npy"), "--inpaint", str(tmp_path / "known.npy")]
    if mask is not None:
        np.save(tmp_path / "mask.npy", mask)
        args += ["--mask", str(tmp_path / "mask.npy")]
    proc = hosts.run_node(args + extra)
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr.splitlines()[0]), proc.stderr
    assert "at " not in proc.stderr.splitlines()[0] and not (tmp_path / "out.npy").exists()
