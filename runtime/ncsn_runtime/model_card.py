"""The model card (``README.md``) that ``pipe.save_pretrained`` writes: Hub metadata, the schedule, how to sample."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .contract import GRAPH_NAMES
from .manifest import Manifest

__all__ = ["MODEL_CARD", "model_card"]

MODEL_CARD = "README.md"
TAGS = ("ncsn", "score-based-generative-modeling", "annealed-langevin-dynamics", "onnx", "ncsn-export")


def model_card(manifest: Manifest, scheduler_config: Mapping[str, Any], where: str = "DIR") -> str:
    """``README.md`` for the Hub: YAML metadata (library, tags, pipeline tag) and how to sample in each host
    (``where``: the directory or Hub id the examples load)."""
    model = manifest.model
    raw = manifest.raw
    levels = int(scheduler_config["num_train_timesteps"])
    annealed = int(scheduler_config["num_annealed_steps"])
    sigma_max, sigma_min = float(scheduler_config["sigma_max"]), float(scheduler_config["sigma_min"])
    sampling_eps = float(scheduler_config["sampling_eps"])
    graphs = [key for key in GRAPH_NAMES if key in manifest.graphs]
    front = ["---", "library_name: ncsn-export", "tags:", *(f"- {tag}" for tag in TAGS)]
    if model.is_image:
        front.append("pipeline_tag: unconditional-image-generation")
    front.append("---")
    validation = raw.get("validation") if isinstance(raw.get("validation"), list) else []
    passed = sum(1 for row in validation if isinstance(row, dict) and row.get("passed") is True)
    shape = "x".join(map(str, model.sample_shape))
    name = model.name.replace("\n", " ")
    body = f"""
# {name} (ncsn-export)

{model.description.strip() or "A Noise Conditional Score Network"} exported by
ncsn-export with its whole annealed Langevin sampler as ONNX graphs: samples
{shape} ({model.dtype}; compute {model.compute_dtype}), no torch needed to sample.

## Schedule

| | |
|---|---|
| noise levels (`num_train_timesteps`) | {levels}, geometric from sigma_max = {sigma_max:g} to sigma_min = {sigma_min:g} |
| Langevin steps per level (`num_annealed_steps`) | {annealed} |
| step size | `sampling_eps * (sigma_i / sigma_last)**2`, sampling_eps = {sampling_eps:g} |
| final denoising step | {"yes" if model.final_denoise else "no"} |
| init range / data range | {list(model.init_range)} / {list(model.data_range)} |

Graphs: {", ".join(f"`{manifest.graphs[key].file}`" for key in graphs)} (opset {manifest.opset}); every file is
listed with its sha256 in `manifest.json` and checked when loaded. Validation against PyTorch at export:
{passed} of {len(validation)} runs passed (`manifest.json`, `validation`). The noise is counter-based
(the same on every host and provider for the same seeds), not torch's.

## Sampling

Python (`pip install 'ncsn-export[cpu]'`, or `[gpu]`):

```python
from ncsn_runtime import NCSNPipeline

pipe = NCSNPipeline.from_pretrained("THIS_DIR_OR_HUB_ID")  # provider="auto": CUDA when usable
images = pipe(batch_size=16, seed=0).images
```

Command line:

```bash
ncsn-sample THIS_DIR --num-samples 16 --seed 0 --output samples.png   # or .npy
```

Node.js, the browser and C (see ncsn-export's `runtime/js/README.md`, `examples/web/README.md`, `examples/c/README.md`):

```bash
node runtime/js/cli.mjs THIS_DIR --seed 0 --num-samples 16 --output samples.npy
node examples/web/serve.mjs THIS_DIR --port 8000
examples/c/build/ncsn_sample THIS_DIR --seed 0 --num-samples 16 --output samples.npy --ort-lib path/to/libonnxruntime.so
```

Every host gives the same samples for the same seeds (max abs difference <= 1e-4).
"""
    body = body.replace("THIS_DIR_OR_HUB_ID", where).replace("THIS_DIR", where)
    return "\n".join(front) + "\n" + body
