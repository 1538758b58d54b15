"""Browser host: examples/web in Debian's Chromium (playwright-core) gives the Python runtime's samples, on the wasm
backend through every graph and on the WebGPU backend through gpu_step.onnx + the JS counter noise.

WebGPU on this CPU-only machine: headless Chromium 156 with ``--enable-unsafe-webgpu`` gives its SwiftShader (CPU)
WebGPU adapter (vendor google, architecture swiftshader), and onnxruntime-web's WebGPU EP runs on it. Where a browser
gives no adapter, the WebGPU test skips with the page's reason; tests/test_placement.py's op audit still checks that
gpu_step has no op the WebGPU EP lacks (control flow, bitwise ops, float64).

Skipped with a reason when node, the npm packages or /usr/bin/chromium are missing
(scripts/setup-dev.sh installs chromium with apt when that is quick).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

CHROMIUM = os.environ.get("NCSN_CHROMIUM", "/usr/bin/chromium")


def _skip_reason() -> str | None:
    if hosts.node_ready() is not None:
        return hosts.node_ready()
    if not (hosts.ROOT / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (run `npm ci` at the repo root)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found (apt-get install chromium)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

SEED, BATCH = 3, 4


@pytest.fixture(scope="module")
def browser_runs(tmp_path_factory) -> tuple[Path, Path, dict]:
    """One Chromium session: stepwise + fused + each step graph on the tiny conv export (wasm), gpu_step on WebGPU,
    and a bad seed typed into the seed field."""
    export = hosts.with_all_graphs(hosts.build_export("tiny-conv"))
    out = tmp_path_factory.mktemp("browser")
    spec = {
        "exportDir": str(export),
        "outDir": str(out),
        "executablePath": CHROMIUM,
        "runs": [
            {"name": "stepwise", "seed": SEED, "count": BATCH, "mode": "stepwise"},
            {"name": "fused", "seed": SEED, "count": BATCH, "mode": "fused"},
            {"name": "wasm-step", "seed": SEED, "count": BATCH, "graph": "step"},
            {"name": "wasm-gpu_step", "seed": SEED, "count": BATCH, "graph": "gpu_step"},
            {"name": "wasm-gpu_sampler", "seed": SEED, "count": BATCH, "graph": "gpu_sampler"},
            {"name": "webgpu", "seed": SEED, "count": BATCH, "graph": "gpu_step", "ep": "webgpu"},
            {"name": "bad-seed", "seed": "12x", "count": 2, "mode": "fused"},
            {"name": "no-samples", "seed": "1", "count": 0, "mode": "fused"},
        ],
    }
    proc = hosts.run_node(["tests/js/browser.mjs", json.dumps(spec)], timeout=360)
    assert proc.returncode == 0, proc.stderr
    return export, out, {run["name"]: run for run in json.loads(proc.stdout)}


@pytest.mark.parametrize("mode", ["stepwise", "fused"])
def test_browser_matches_python_runtime(browser_runs, mode):
    export, out, runs = browser_runs
    run = runs[mode]
    assert run["state"] == "done", run
    assert run["isolated"], "the page must be cross-origin isolated (COOP/COEP) for wasm threads"
    samples = np.load(out / f"{mode}.npy")
    reference = hosts.python_samples(export, SEED, BATCH, mode)
    assert samples.shape == reference.shape == (BATCH, 1, 8, 8)
    difference = float(np.abs(samples - reference).max())
    assert difference <= hosts.TOLERANCE, f"browser {mode}: max abs diff {difference:.3g} vs Python"
    expected_levels = list(range(4)) if mode == "stepwise" else [3]  # progress after every noise level (stepwise)
    assert run["levels"] == expected_levels


def test_browser_screenshot_shows_the_grid(browser_runs):
    from PIL import Image

    _, out, _ = browser_runs
    with Image.open(out / "stepwise.png") as screenshot:
        assert screenshot.size[0] == 900
        pixels = np.asarray(screenshot.convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page


def test_browser_rejects_bad_seed_and_count(browser_runs):
    _, _, runs = browser_runs
    run = runs["bad-seed"]
    assert run["state"] == "error"
    assert "`seed` must be a decimal integer string" in run["error"]
    run = runs["no-samples"]
    assert run["state"] == "error"
    assert "`numSamples` must be in [1, 8388608], got 0" in run["error"]  # 2 GiB of float32 1x8x8 samples


@pytest.mark.parametrize("graph", ["step", "gpu_step", "gpu_sampler"])
def test_browser_graphs_match_python_runtime(browser_runs, graph):
    export, out, runs = browser_runs
    run = runs[f"wasm-{graph}"]
    assert run["state"] == "done", run
    assert run["graph"] == graph and run["ep"] == "wasm"
    reference = hosts.python_samples(export, SEED, BATCH, "fused")
    difference = float(np.abs(np.load(out / f"wasm-{graph}.npy") - reference).max())
    assert difference <= hosts.TOLERANCE, f"browser wasm {graph}: max abs diff {difference:.3g} vs Python"


def test_browser_webgpu_gpu_step_matches_python_runtime(browser_runs):
    """gpu_step.onnx on onnxruntime-web's WebGPU EP with the JS counter noise: the Python runtime's samples."""
    export, out, runs = browser_runs
    run = runs["webgpu"]
    if run["state"] == "error" and "no WebGPU adapter" in (run["error"] or ""):
        pytest.skip(f"Chromium gave no WebGPU adapter: {run['error']}")
    assert run["state"] == "done", run
    assert run["ep"] == "webgpu" and run["graph"] == "gpu_step" and run["adapter"], run
    reference = hosts.python_samples(export, SEED, BATCH, "fused")
    difference = float(np.abs(np.load(out / "webgpu.npy") - reference).max())
    assert difference <= hosts.TOLERANCE, f"browser WebGPU gpu_step: max abs diff {difference:.3g} vs Python"
    assert run["levels"] == list(range(4))


def _strip_cells(run: dict) -> np.ndarray:
    """The page's trajectory strip (8-bit, unscaled, 2 px grey gaps) as uint8 [rows, columns, 8, 8]."""
    strip = run["trajectory"]
    rows, columns = strip["rows"], strip["columns"]
    assert (strip["height"], strip["width"]) == (rows * 10 + 2, columns * 10 + 2)  # 8x8 images, 2 px gaps
    pixels = np.asarray(strip["pixels"], dtype=np.uint8).reshape(strip["height"], strip["width"])
    assert (pixels[:2] == 128).all() and (pixels[:, 10:12] == 128).all()  # grey gaps, as ncsn-sample's PNGs
    return np.stack([np.stack([pixels[2 + r * 10 : 10 + r * 10, 2 + c * 10 : 10 + c * 10] for c in range(columns)])
                     for r in range(rows)])


def test_browser_shows_the_digits_forming_level_by_level(browser_runs):
    """Stepwise: the strip gains one column per level, each the Python runtime's samples after that level (the last
    after the final denoising step); fused: only the final column."""
    from ncsn_runtime.images import to_uint8
    from ncsn_runtime.pipeline import NCSNPipeline

    export, _, runs = browser_runs
    run = runs["stepwise"]
    assert run["trajectory"]["rows"] == BATCH and run["trajectory"]["columns"] == 4
    assert run["trajectory"]["filled"] == [0, 1, 2, 3]
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    levels: list[np.ndarray] = []
    steps = pipe.scheduler.num_annealed_steps
    final = pipe(batch_size=BATCH, seed=SEED, mode="stepwise", output_type="np", progress=False,
                 callback_on_step_end=lambda _p, i, _t, kw: (levels.append(np.array(kw["sample"])) if (i + 1) % steps == 0
                                                             else None) or {}).images
    expected = to_uint8(np.stack(levels[:-1] + [final.transpose(0, 3, 1, 2)])[:, :, 0])  # [L, B, 8, 8]
    cells = _strip_cells(run)  # [B, L, 8, 8]
    difference = np.abs(cells.astype(int) - expected.transpose(1, 0, 2, 3).astype(int))
    assert difference.max() <= 1  # the hosts agree to 1e-4; 8-bit rounding may differ by one
    assert not np.array_equal(cells[:, 0], cells[:, -1])  # the strip changes from level to level
    fused = runs["fused"]["trajectory"]
    assert fused["columns"] == 4 and fused["filled"] == [3]  # one call: the final samples only
