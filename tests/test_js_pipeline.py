"""Node host: runtime/js/cli.mjs and NCSNPipeline (onnxruntime-node) give the Python runtime's samples.

Builds two export directories with the exporter (see tests/host_exports.py) and compares, for the same seeds,
the JS samples (fused sampler.onnx and stepwise score.onnx + JS scheduler) with ncsn_runtime.NCSNPipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

pytestmark = pytest.mark.skipif(hosts.node_ready() is not None, reason=str(hosts.node_ready()))

CASES = {
    # export name -> (seed as given to the CLI, batch size)
    "toy-gmm": (2**53 + 11, 6),  # above 2**53: the CLI takes it as a decimal string, JS keeps it as a BigInt
    "tiny-conv": (5, 4),
}


@pytest.fixture(scope="module")
def exports() -> dict[str, Path]:
    return {name: hosts.build_export(name) for name in CASES}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["fused", "stepwise"])
def test_node_cli_matches_python_runtime(exports, tmp_path, name, mode):
    seed, batch = CASES[name]
    output = tmp_path / f"{name}-{mode}.npy"
    summary = hosts.node_cli(exports[name], output, seed, batch, mode)
    samples = np.load(output)
    reference = hosts.python_samples(exports[name], seed, batch, mode)
    assert samples.dtype == np.float32
    assert samples.shape == reference.shape == tuple(summary["shape"])
    assert np.isfinite(samples).all()
    difference = float(np.abs(samples - reference).max())
    assert difference <= hosts.TOLERANCE, f"{name} {mode}: max abs diff {difference:.3g} vs Python"
    # a different seed must give different samples (the comparison above is not vacuous)
    assert np.abs(samples - hosts.python_samples(exports[name], seed + 100, batch, mode)).max() > 1e-2


def test_node_cli_steps_and_per_sample_seed_independence(exports, tmp_path):
    """--steps picks the schedule like Python's num_inference_steps; sample b depends only on seed + b."""
    export = exports["toy-gmm"]
    hosts.node_cli(export, tmp_path / "all.npy", 40, 3, "fused", "--steps", "4")
    hosts.node_cli(export, tmp_path / "one.npy", 41, 1, "fused", "--steps", "4")
    batch, single = np.load(tmp_path / "all.npy"), np.load(tmp_path / "one.npy")
    reference = hosts.python_samples(export, 40, 3, "fused", num_inference_steps=4)
    assert np.abs(batch - reference).max() <= hosts.TOLERANCE
    assert np.abs(batch[1] - single[0]).max() <= hosts.TOLERANCE


def test_node_png_grid_for_images(exports, tmp_path):
    output = tmp_path / "grid.png"
    hosts.node_cli(exports["tiny-conv"], output, 0, 4, "fused")
    from PIL import Image

    with Image.open(output) as image:
        assert image.mode == "L"
        assert image.size == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2)  # 2x2 grid of 8x8 with 2-pixel gaps


def test_pipeline_api_progress_per_level(exports):
    """The library API: stepwise reports every noise level; fused and stepwise agree."""
    script = """
import { loadPipeline } from './runtime/js/node.js';
const pipe = await loadPipeline(process.argv[1], { mode: 'both' });
const levels = [];
const onProgress = (p) => levels.push([p.position, p.level, p.numLevels]);
const stepwise = await pipe.generate({ seed: 9n, numSamples: 2, mode: 'stepwise', onProgress });
const fused = await pipe.generate({ seed: '9', numSamples: 2, mode: 'fused' });
const diff = Math.max(...stepwise.samples.map((v, i) => Math.abs(v - fused.samples[i])));
console.log(JSON.stringify({ levels, diff, shape: stepwise.shape }));
"""
    proc = hosts.run_node(["--input-type=module", "-e", script, str(exports["tiny-conv"])])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["levels"] == [[i, i, 4] for i in range(4)]
    assert result["shape"] == [2, 1, 8, 8]
    assert result["diff"] <= hosts.TOLERANCE


def _corrupt_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    data = bytearray((target / "sampler.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / "sampler.onnx").write_bytes(bytes(data))
    return target


def _renamed_input_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["graphs"]["sampler"]["inputs"][1]["name"] = "seeds"
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(
    ("case", "extra", "code", "message"),
    [
        ("missing", [], 1, "export directory not found"),
        ("empty", [], 1, "is not an ncsn-export directory"),
        ("corrupt", [], 1, "does not match manifest.json"),
        ("mismatched", [], 1, "the contract is [sample,seed,timesteps,step_sizes,num_annealed_steps]"),
        ("gmm", ["--seed", "abc"], 2, "--seed: `seed` must be a decimal integer string"),
        ("gmm", ["--seed", str(2**63)], 2, "--seed: `seed` must be in [0, 9223372036854775800]"),
        ("gmm", ["--seed", "-3"], 2, "--seed"),
        ("gmm", ["--num-samples", "0"], 2, "--num-samples must be an integer >= 1"),
        ("gmm", ["--output", "x.jpg"], 2, "--output must end in .npy or .png"),
        ("gmm", ["--mode", "fast"], 2, "--mode must be fused or stepwise"),
        ("gmm", ["--steps", "11"], 1, "`numInferenceSteps` must be in [1, 10]"),
        ("gmm", ["--output", "toy.png"], 2, "non-image samples of shape [2]: write .npy"),
    ],
)
def test_node_cli_bad_input_messages(exports, tmp_path, case, extra, code, message):
    directory = {
        "missing": lambda: tmp_path / "nope",
        "empty": lambda: tmp_path,
        "corrupt": lambda: _corrupt_copy(exports["toy-gmm"], tmp_path / "corrupt"),
        "mismatched": lambda: _renamed_input_copy(exports["toy-gmm"], tmp_path / "mismatched"),
        "gmm": lambda: exports["toy-gmm"],
    }[case]()
    args = ["runtime/js/cli.mjs", str(directory), "--num-samples", "8", "--output", str(tmp_path / "out.npy"), *extra]
    proc = hosts.run_node(args)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "at " not in proc.stderr.splitlines()[0]  # a message, not a stack trace


def test_web_server_headers_and_confinement(exports):
    """examples/web/serve.mjs: COOP/COEP on every response, the export under /export/, nothing outside its roots."""
    script = """
import { serve } from './examples/web/serve.mjs';
const server = await serve({ exportDir: process.argv[1], port: 0 });
const base = `http://127.0.0.1:${server.address().port}`;
const out = {};
const paths = ['/', '/export/manifest.json', '/ort/ort.wasm.min.mjs', '/runtime/js/index.js',
               '/export/%2e%2e/%2e%2e/etc/passwd', '/runtime/js/%2e%2e/%2e%2e/pyproject.toml', '/nowhere'];
for (const path of paths) {
  const response = await fetch(base + path);
  const header = (name) => response.headers.get(name);
  const policies = [header('cross-origin-opener-policy'), header('cross-origin-embedder-policy')];
  out[path] = [response.status, ...policies, header('content-type')];
}
server.close();
console.log(JSON.stringify(out));
"""
    proc = hosts.run_node(["--input-type=module", "-e", script, str(exports["tiny-conv"])])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for path, (status, coop, coep, _) in result.items():
        assert (coop, coep) == ("same-origin", "require-corp"), path
        assert status == (404 if ("%2e" in path or path == "/nowhere") else 200), (path, status)
    assert result["/ort/ort.wasm.min.mjs"][3].startswith("text/javascript")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("graph", ["step", "gpu_step", "gpu_sampler"])
def test_node_cli_graph_matches_python_runtime(exports, tmp_path, name, graph):
    """node cli.mjs --graph: step.onnx (in-graph noise), gpu_step.onnx (JS counter noise as an input) and gpu_sampler.onnx
    give the Python runtime's samples (its fused sampler.onnx) for the same seeds."""
    seed, batch = CASES[name]
    export = hosts.with_all_graphs(exports[name])
    output = tmp_path / f"{name}-{graph}.npy"
    proc = hosts.run_node(["runtime/js/cli.mjs", str(export), "--seed", str(seed), "--num-samples", str(batch),
                           "--graph", graph, "--output", str(output), "--json"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["graph"] == graph
    samples = np.load(output)
    reference = hosts.python_samples(export, seed, batch, "fused")
    difference = float(np.abs(samples - reference).max())
    assert difference <= hosts.TOLERANCE, f"{name} {graph}: max abs diff {difference:.3g} vs Python"


def test_node_cli_graph_conflicts_with_mode(exports, tmp_path):
    proc = hosts.run_node(["runtime/js/cli.mjs", str(exports["toy-gmm"]), "--graph", "gpu_step", "--mode", "fused",
                           "--output", str(tmp_path / "x.npy")])
    assert proc.returncode == 2
    assert "--mode fused conflicts with --graph gpu_step" in proc.stderr
