"""The Node host verifies graphs on disk without reading them into memory, then lets onnxruntime-node open them by path
(issue 18 part 3): the graph and its external data are hashed as streams, their protobuf structure walked through a
file window, and a file that changes between the check and onnxruntime's read is refused.

(bench/bench_node_memory.py measures what this saves: peak RSS on a 400 MB graph.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from host_exports import build_export, node_ready, python_samples, run_node
from untrusted import copy_export

pytestmark = pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))

# Loads EXPORT with a source whose readBytes is counted (what the JS side holds in memory), and with an `ort` whose
# InferenceSession.create touches (TAMPER=touch) the file it opened, as a writer between check and read would.
PROBE = r"""
import { utimesSync } from 'node:fs';
import * as ort from 'onnxruntime-node';
import { NCSNPipeline, fsSource } from './runtime/js/node.js';

const [exportDir, tamper, graphsText] = process.argv.slice(1);
const source = fsSource(exportDir);
const read = [];
const readBytes = source.readBytes.bind(source);
source.readBytes = async (relative, options) => { read.push(relative); return readBytes(relative, options); };
const opened = [];
const fakeOrt = { ...ort, env: ort.env, Tensor: ort.Tensor, InferenceSession: { create: async (what, options) => {
  opened.push(typeof what === 'string' ? 'path' : 'bytes');
  const session = await ort.InferenceSession.create(what, options);
  if (tamper === 'touch' && typeof what === 'string') utimesSync(what, new Date(), new Date()); // its ctime moves
  return session;
} } };
try {
  const pipe = await NCSNPipeline.load(source, { ort: fakeOrt, graphs: JSON.parse(graphsText) });
  const out = await pipe.generate({ seed: 5, numSamples: 3, numInferenceSteps: 2 });
  console.log(JSON.stringify({ read, opened, samples: Array.from(out.samples) }));
} catch (error) {
  console.log(JSON.stringify({ read, opened, error: `${error.name}: ${error.message}` }));
}
"""


def _probe(export: Path, tamper: str = "none", graphs: tuple[str, ...] = ("sampler", "score")) -> dict:
    proc = run_node(["--input-type=module", "-e", PROBE, str(export), tamper, json.dumps(list(graphs))], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("tiny-conv")  # real weights in weights.onnx.data


def test_graphs_are_opened_by_path_and_never_read_into_memory(toy_dir):
    result = _probe(toy_dir)
    assert "error" not in result, result
    assert result["opened"] == ["path", "path"]
    assert sorted(result["read"]) == ["manifest.json", "scheduler/scheduler_config.json"]  # no graph, no weights
    expected = python_samples(toy_dir, 5, 3, "fused", num_inference_steps=2).reshape(-1)
    assert result["samples"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_a_graph_with_embedded_weights_is_opened_by_path(toy_dir, tmp_path):
    """sampler.onnx with its weights inside (no external data; onnxruntime-node used to get it as bytes)."""
    import onnx
    from untrusted import rehash

    export = copy_export(toy_dir, tmp_path / "embedded")
    model = onnx.load(str(export / "sampler.onnx"))  # reads weights.onnx.data
    (export / "sampler.onnx").unlink()
    onnx.save(model, str(export / "sampler.onnx"))  # saved with the weights in the file
    rehash(export, "sampler.onnx")
    result = _probe(export, graphs=("sampler",))
    assert "error" not in result and result["opened"] == ["path"], result
    assert "sampler.onnx" not in result["read"]


def test_a_file_changed_after_its_check_is_refused(toy_dir, tmp_path):
    """onnxruntime opens by path after the sha256 check: a file written in between is refused (its ctime moved)."""
    export = copy_export(toy_dir, tmp_path / "changed")
    result = _probe(export, tamper="touch", graphs=("sampler",))
    assert "changed while it was loaded" in result.get("error", ""), result


def test_a_tampered_graph_is_refused_before_onnxruntime_opens_it(toy_dir, tmp_path):
    export = copy_export(toy_dir, tmp_path / "tampered")
    for name in ("weights.onnx.data", "sampler.onnx"):
        data = bytearray((export / name).read_bytes())
        assert data, f"{name} is empty: the export proves nothing"
        data[len(data) // 2] ^= 1  # same size, other sha256
        (export / name).unlink()
        (export / name).write_bytes(bytes(data))
        result = _probe(export, graphs=("sampler",))
        assert f"{name} sha256" in result.get("error", "") and result["opened"] == [], result
        (export / name).unlink()
        (export / name).write_bytes((toy_dir / name).read_bytes())
