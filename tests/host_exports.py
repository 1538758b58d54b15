"""Export directories and Python reference samples shared by the non-Python host tests (Node, browser, C).

Exports are built once per test session with ``ncsn_export.exporters.export_model`` (cached in this module, so
test files importing it share them) and removed at exit:

* ``toy-gmm``: the paper's 2-D mixture (non-image, sample shape (2,), 10 levels x 100 steps);
* ``tiny-conv``: a small random conv net on 1x8x8 images with 4 levels x 3 steps and the final denoising step.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max abs difference allowed between hosts (issue 6)
TINY_CONFIG = {"num_train_timesteps": 4, "num_annealed_steps": 3, "sigma_min": 0.05, "sigma_max": 1.0, "sampling_eps": 1e-3}


def node_ready() -> str | None:
    """Why the Node tests cannot run (None when they can): node and the npm packages must be installed."""
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs)"
    if not (ROOT / "node_modules" / "onnxruntime-node").is_dir():
        return "npm packages are not installed (run `ONNXRUNTIME_NODE_INSTALL=skip npm ci` at the repo root)"
    return None


def tiny_conv_spec():
    """A ModelSpec for a small random conv score network on 1x8x8 'images' (deterministic weights)."""
    import torch
    from ncsn_runtime.schedule import geometric_sigmas
    from torch import nn

    from ncsn_export.models.registry import ModelSpec

    class TinyConvScore(nn.Module):
        """s(x, level) = conv(tanh(conv(x) + embed(level))) / sigma_level; [B, 1, 8, 8] -> [B, 1, 8, 8]."""

        def __init__(self, sigmas: torch.Tensor) -> None:
            super().__init__()
            self.conv_in = nn.Conv2d(1, 8, 3, padding=1)
            self.embed = nn.Embedding(len(sigmas), 8)
            self.conv_out = nn.Conv2d(8, 1, 3, padding=1)
            self.register_buffer("sigmas", sigmas)

        def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            hidden = torch.tanh(self.conv_in(sample) + self.embed(timestep)[:, :, None, None])
            return self.conv_out(hidden) / self.sigmas[timestep][:, None, None, None]

    torch.manual_seed(0)
    config = TINY_CONFIG
    sigmas = torch.from_numpy(geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"]))
    return ModelSpec(
        name="tiny-conv",
        model=TinyConvScore(sigmas).eval(),
        scheduler_config=dict(TINY_CONFIG),
        sample_shape=(1, 8, 8),
        is_image=True,
        init_range=(0.0, 1.0),
        data_range=(0.0, 1.0),
        final_denoise=True,
        description="test-only random conv net",
    )


@functools.cache
def _export_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="ncsn-host-exports-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def build_export(name: str) -> Path:
    """Export ``toy-gmm`` or ``tiny-conv`` once per session (no validation: the exporter's own tests do that)."""
    import torch

    from ncsn_export.exporters import export_model

    torch.set_num_threads(1)
    model = tiny_conv_spec() if name == "tiny-conv" else name
    output = _export_root() / name
    export_model(model, output, validate=False)
    return output


def python_samples(export_dir: Path, seed: int | list[int], batch_size: int, mode: str, num_inference_steps: int | None = None):
    """Raw float32 samples [B, *sample_shape] from the Python runtime (ncsn_runtime.pipeline.NCSNPipeline, CPU)."""
    from ncsn_runtime.pipeline import NCSNPipeline

    pipe = NCSNPipeline.from_pretrained(export_dir, provider="cpu")
    output = pipe(
        batch_size=batch_size, seed=seed, mode=mode, num_inference_steps=num_inference_steps, output_type="raw", progress=False
    )
    return np.asarray(output.images, dtype=np.float32)


def run_node(args: list[str], timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess:
    """Run node with ``args`` from the repo root (text output, no check; ``input`` goes to its stdin)."""
    return subprocess.run(["node", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input)


def node_cli(export_dir: Path, output: Path, seed: int | str, num_samples: int, mode: str, *extra: str) -> dict:
    """Run runtime/js/cli.mjs and return its --json summary; fails the test with stderr on a non-zero exit."""
    args = [
        "runtime/js/cli.mjs",
        str(export_dir),
        "--seed",
        str(seed),
        "--num-samples",
        str(num_samples),
        "--mode",
        mode,
        "--output",
        str(output),
        "--json",
        *extra,
    ]
    proc = run_node(args)
    assert proc.returncode == 0, f"node {' '.join(args)} failed:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def with_all_graphs(export_dir: Path) -> Path:
    """``export_dir`` with gpu_step.onnx / gpu_sampler.onnx added (composed from its score.onnx) if the exporter
    did not write them; the manifest's graphs and files tables are updated to match."""
    import onnx
    from ncsn_runtime.contract import GRAPHS
    from ncsn_runtime.manifest import file_entry
    from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler

    from ncsn_export.exporters.compose import compose_graphs

    manifest_path = export_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    missing = [key for key in ("gpu_step", "gpu_sampler") if key not in manifest["graphs"]]
    if not missing:
        return export_dir
    model = manifest["model"]
    scheduler = AnnealedLangevinDynamicsScheduler.from_pretrained(export_dir / "scheduler" / "scheduler_config.json")
    graphs = compose_graphs(onnx.load(str(export_dir / "score.onnx")), model["sample_shape"],
                            np.asarray(scheduler.train_sigmas, np.float32), bool(model.get("final_denoise", False)), keys=missing)
    for key in missing:
        spec = GRAPHS[key]
        onnx.save(graphs[key], str(export_dir / spec.file))
        manifest["graphs"][key] = {"file": spec.file, "inputs": spec.concrete_inputs(model["sample_shape"]),
                                   "outputs": spec.concrete_outputs(model["sample_shape"])}
        manifest["files"][spec.file] = file_entry(export_dir / spec.file)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return export_dir
