"""Runtime memory: the RSS of an ``NCSNPipeline`` holding one or several graphs of one export, against torch.

Each configuration runs in a fresh subprocess (so one cannot inherit another's pages) and reports its resident set
(``VmRSS``) and peak (``VmHWM``) from ``/proc/self/status`` after one sample at B=1 over 1 level x 1 step:

* ``python + numpy + onnxruntime``: the interpreter with the runtime imported, nothing opened (the baseline);
* ``fused``: the pipeline with ``sampler.onnx`` opened and run;
* ``fused + stepwise``: also ``step.onnx`` (the pipeline's second session, e.g. for callbacks);
* ``fused + stepwise + score``: all three network-holding graphs of the CPU runtime;
* ``torch, the network``: ``torch`` with the network's weights loaded (safetensors), one forward at B=1.

    .venv/bin/python bench/bench_runtime_memory.py EXPORT_DIR [--torch-model NAME_OR_DIR] [--name NAME]

Prints a table (MiB) and saves ``bench/results/runtime_memory-<name>.json``. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent

_RSS = """
def rss():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return {k: int(fields[k].split()[0]) / 1024 for k in ('VmRSS', 'VmHWM')}
"""

_RUNTIME = _RSS + """
import json, sys
import numpy as np
from ncsn_runtime import NCSNPipeline
graphs = sys.argv[2].split(',') if sys.argv[2] else []
pipe = NCSNPipeline.from_pretrained(sys.argv[1], provider='cpu')
for graph in graphs:
    pipe.scheduler.num_annealed_steps = 1
    pipe(batch_size=1, num_inference_steps=1, seed=0, output_type='raw', progress=False, graph=graph)
print(json.dumps(rss()))
"""

_TORCH = _RSS + """
import json, sys
import torch
from ncsn_export.models.registry import load_model
spec = load_model(sys.argv[1] or None)
with torch.no_grad():
    spec.model.eval()(torch.zeros((1, *spec.sample_shape)), torch.zeros(1, dtype=torch.int64))
print(json.dumps(rss()))
"""


def measure(code: str, *args: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runtime")]), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--torch-model", default="", help="model for the torch row (default: the default model)")
    parser.add_argument("--name", default=None, help="results name (default: the export directory's name)")
    args = parser.parse_args()
    export = str(args.export_dir.resolve())
    weights = sum(path.stat().st_size for path in args.export_dir.glob("*.data"))
    rows = {
        "python + numpy + onnxruntime": measure(_RUNTIME, export, ""),
        "fused (sampler)": measure(_RUNTIME, export, "sampler"),
        "fused + stepwise (sampler, step)": measure(_RUNTIME, export, "sampler,step"),
        "fused + stepwise + score": measure(_RUNTIME, export, "sampler,step,score"),
        "torch, the network": measure(_TORCH, args.torch_model),
    }
    print(f"export {export}; shared weights file {weights / 2**20:.1f} MiB")
    print(f"{'what':<36} {'RSS MiB':>9} {'peak MiB':>9}")
    for what, row in rows.items():
        print(f"{what:<36} {row['VmRSS']:>9.1f} {row['VmHWM']:>9.1f}")
    RESULTS.mkdir(exist_ok=True)
    name = args.name or args.export_dir.name
    out = RESULTS / f"runtime_memory-{name}.json"
    out.write_text(json.dumps({"export": export, "weights_bytes": weights, "rows": rows,
                               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
