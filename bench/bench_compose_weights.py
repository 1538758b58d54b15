"""Compose with the weights inside the score graph vs. detached into one shared file, side by side in one run.

``embedded``: :func:`compose_graphs` on the score graph with its weights in memory (what compose did before the
shared weights file: every graph copies every tensor, the checker serializes them); the graphs are then saved as
five self-contained ``.onnx`` files. ``shared``: :func:`detach_weights` (one ``weights.onnx.data``) then
:func:`compose_graphs` on the references; the five graphs are saved next to the one weights file.

    .venv/bin/python bench/bench_compose_weights.py EXPORT_DIR

``EXPORT_DIR`` is an ncsn-export directory (its ``score.onnx`` and scheduler config are read; external data is
loaded into memory first). Prints seconds and bytes on disk of each layout and saves
``bench/results/compose_weights-MODEL.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from ncsn_runtime.schedule import geometric_sigmas

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.shared_weights import WEIGHTS_FILE, detach_weights

RESULTS = Path(__file__).resolve().parent / "results"


def _layout(score: onnx.ModelProto, shape: tuple[int, ...], sigmas: np.ndarray, shared: bool, folder: Path) -> dict:
    model = onnx.ModelProto()
    model.CopyFrom(score)
    start = time.perf_counter()
    weights = detach_weights(model, folder / WEIGHTS_FILE) if shared else None
    detached = time.perf_counter()
    graphs = compose_graphs(model, shape, sigmas, True, external_data_dir=folder if shared else None)
    composed = time.perf_counter()
    for key, graph in graphs.items():
        onnx.save(graph, str(folder / f"{key}.onnx"))
    saved = time.perf_counter()
    files = {path.name: path.stat().st_size for path in folder.iterdir() if path.suffix in (".onnx", ".data")}
    return {"detach_s": round(detached - start, 3), "compose_s": round(composed - detached, 3),
            "save_s": round(saved - composed, 3), "total_s": round(saved - start, 3), "bytes": sum(files.values()),
            "files": files, "weight_file_bytes": weights.weight_bytes if weights else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", type=Path)
    args = parser.parse_args()
    root = args.export_dir
    manifest = json.loads((root / "manifest.json").read_text())
    config = json.loads((root / manifest["scheduler_config"]).read_text())
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], int(config["num_train_timesteps"]))
    shape = tuple(manifest["model"]["sample_shape"])
    score = onnx.load(str(root / "score.onnx"))  # weights in memory, as the trace leaves them
    rows = {}
    for name, shared in (("embedded", False), ("shared", True)):
        with tempfile.TemporaryDirectory(prefix=f"compose-{name}-") as folder:
            rows[name] = _layout(score, shape, sigmas, shared, Path(folder))
        row = rows[name]
        print(f"{name:<9} detach {row['detach_s']:7.2f} s  compose {row['compose_s']:7.2f} s  save {row['save_s']:7.2f} s  "
              f"on disk {row['bytes'] / 2**20:9.1f} MiB")
    RESULTS.mkdir(exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(manifest["model"]["name"])).name) or "model"
    out = RESULTS / f"compose_weights-{tag}.json"
    out.write_text(json.dumps({"export_dir": str(root), "model": manifest["model"]["name"], **rows}, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
