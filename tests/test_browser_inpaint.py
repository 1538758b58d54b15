"""Browser inpainting page (examples/web/inpaint.html) in Debian's Chromium: the completions equal the Python runtime's
stepwise inpainting of the same digit and mask for the same seeds, through both paths (stepwise: the completions
after every level; fused: inpaint.onnx); a mask that leaves nothing to fill (or nothing known) is the page's error.

Skipped with the reason when node, the npm packages or Chromium are missing (as tests/test_js_browser.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_js_browser import CHROMIUM, _skip_reason

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

SEED, BATCH = 11, 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    export = hosts.build_export("tiny-conv")
    out = tmp_path_factory.mktemp("browser-inpaint")
    page = {"page": "/examples/web/inpaint.html", "stateName": "__inpaint"}
    spec = {
        "exportDir": str(export), "outDir": str(out), "executablePath": CHROMIUM,
        "runs": [
            {"name": mode, "seed": SEED, "count": BATCH, "mode": mode, "query": {"digit": 4, "mask": "right"}, **page}
            for mode in ("stepwise", "fused")
        ] + [
            {"name": f"mask-{mask}", "seed": 0, "count": 1, "mode": "fused", "query": {"mask": mask}, **page}
            for mask in ("none", "all")
        ],
    }
    proc = hosts.run_node(["tests/js/browser.mjs", json.dumps(spec)], timeout=360)
    assert proc.returncode == 0, proc.stderr
    return export, out, {run["name"]: run for run in json.loads(proc.stdout)}


@pytest.mark.parametrize("mode", ["stepwise", "fused"])
def test_browser_inpainting_matches_python(runs, mode):
    from ncsn_runtime import NCSNPipeline

    export, out, summaries = runs
    run = summaries[mode]
    assert run["state"] == "done", run
    assert run["mode"] == mode and run["graph"] == ("inpaint" if mode == "fused" else "score")
    assert run["levels"] == ([0, 1, 2, 3] if mode == "stepwise" else [3])  # stepwise: redrawn after every level
    known, mask = np.load(out / f"{mode}.known.npy"), np.load(out / f"{mode}.mask.npy")
    assert mask.shape == (1, 8, 8) and (mask[..., :4] == 1).all() and (mask[..., 4:] == 0).all()  # the right-half preset
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    digit = pipe(batch_size=1, seed=4, output_type="raw", progress=False).images[0]
    assert np.abs(known - digit).max() <= hosts.TOLERANCE  # the page's digit is the model's sample for the digit seed
    reference = pipe.inpaint(known, mask, seed=SEED, batch_size=BATCH, output_type="raw", progress=False,
                             mode="stepwise").images
    difference = float(np.abs(np.load(out / f"{mode}.npy") - reference).max())
    print(f"browser {mode} inpainting vs Python stepwise: max abs diff {difference:.3e}")
    assert difference <= hosts.TOLERANCE


def test_browser_inpainting_refuses_a_mask_with_nothing_to_fill(runs):
    _, _, summaries = runs
    assert summaries["mask-none"]["state"] == "error" and "all 1 (everything known)" in summaries["mask-none"]["error"]
    assert summaries["mask-all"]["state"] == "error" and "all 0 (nothing known)" in summaries["mask-all"]["error"]
