"""Hypothesis properties beyond the Python readers (issue 18): the Node manifest reader gives Python's verdict on the
same generated manifest.json texts (fed to one Node subprocess per batch), and every number ncsn-triton writes into
config.pbtxt fits Triton's ModelConfig field types (parsed back with Triton's own protobuf schema)."""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
from host_exports import node_ready, run_node
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ncsn_runtime.manifest import ExportDirectoryError, parse_manifest
from test_properties import JSON, NUMBERS, _paths, _valid_manifest

BATCH = 60  # manifests per Node subprocess
RUNS = int(os.environ.get("NCSN_HYPOTHESIS_NODE_RUNS", "10"))  # Node subprocesses per test run (BATCH x RUNS manifests)

NODE_READER = r"""
import { readFileSync } from 'node:fs';
import { ExportDirectoryError, loadManifest } from './runtime/js/manifest.js';

const texts = JSON.parse(readFileSync(0, 'utf8'));
const out = [];
for (const text of texts) {
  const bytes = new TextEncoder().encode(text);
  const source = { location: '/export', readBytes: async () => bytes };
  try {
    await loadManifest(source);
    out.push('accept');
  } catch (error) {
    out.push(error instanceof ExportDirectoryError ? `refuse: ${error.message}` : `crash: ${error?.name}: ${error?.message}`);
  }
}
console.log(JSON.stringify(out));
"""


def _finite_json(value) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


@st.composite
def manifest_texts(draw) -> str:
    """A manifest.json text: the valid manifest with one value replaced (often), or any JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(st.one_of(JSON, NUMBERS.filter(_finite_json))))
    manifest = _valid_manifest(draw(st.sampled_from([(2,), (1, 4, 4), (3, 2, 2, 2)])))
    for _ in range(draw(st.integers(1, 2))):
        container, key = draw(st.sampled_from(list(_paths(manifest))))
        container[key] = draw(st.one_of(JSON, NUMBERS.filter(_finite_json)))
    return json.dumps(manifest)


def _python_verdict(root, text: str) -> tuple[str, str]:
    try:
        parse_manifest(root, copy.deepcopy(json.loads(text)))
    except ExportDirectoryError as error:
        return "refuse", str(error)
    return "accept", ""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))
# no shrinking: a batch of 60 shrinks for minutes, and the message already names the manifest that differs
@settings(max_examples=RUNS, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(manifest_texts(), min_size=BATCH, max_size=BATCH))
def test_node_manifest_reader_gives_python_verdict(root, texts):
    proc = run_node(["--input-type=module", "-e", NODE_READER], timeout=60, input=json.dumps(texts))
    assert proc.returncode == 0, proc.stderr
    node = json.loads(proc.stdout)
    python = [_python_verdict(root, text) for text in texts]
    differ = [(text, p, n) for text, p, n in zip(texts, python, node, strict=True) if p[0] != n.split(':')[0]]
    assert not differ, (f"{len(differ)} of {len(texts)} differ, e.g. python {differ[0][1]} / node {differ[0][2]}:\n"
                        f"{differ[0][0]}")


def test_node_reader_sees_the_valid_manifest_and_some_refusals():
    """The batch property is not vacuous: the valid manifest is accepted, a few known-bad ones refused, on both."""
    texts = [json.dumps(_valid_manifest()), json.dumps(_valid_manifest((1, 4, 4))), "[]", "1.0",
             json.dumps({**_valid_manifest(), "format_version": 2}),
             json.dumps(_valid_manifest()).replace('"bytes": 10', '"bytes": 10.0', 1)]
    proc = run_node(["--input-type=module", "-e", NODE_READER], timeout=60, input=json.dumps(texts))
    assert proc.returncode == 0, proc.stderr
    assert [verdict.split(":")[0] for verdict in json.loads(proc.stdout)] == ["accept", "accept", *["refuse"] * 4]


# -- ncsn-triton's config.pbtxt --------------------------------------------------------------------------------------
INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1
ANY_INT = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, 1, INT32_MAX, INT32_MAX + 1, 2**40, UINT64_MAX,
                                                                   UINT64_MAX + 1, -1]))


@settings(max_examples=int(os.environ.get("NCSN_HYPOTHESIS_EXAMPLES", "300")), deadline=None)
@given(max_batch_size=ANY_INT, instance_count=ANY_INT, delay=ANY_INT,
       sample_shape=st.lists(st.integers(1, 64), min_size=1, max_size=4), kind=st.sampled_from(["cpu", "gpu"]),
       graph=st.sampled_from(["sampler", "gpu_sampler"]))
def test_triton_config_values_fit_triton_field_types(tmp_path_factory, max_batch_size, instance_count, delay,
                                                     sample_shape, kind, graph):
    """write_repository checks its numbers before any work; what passes, config_text writes, and Triton's own
    ModelConfig schema parses it back unchanged (int32 max_batch_size / count, uint64 delay, int64 dims)."""
    model_config = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient (Triton's ModelConfig schema) is not installed")
    from google.protobuf import text_format
    from ncsn_runtime import triton

    missing = tmp_path_factory.getbasetemp() / "no-such-export"
    try:
        triton.write_repository(missing, missing / "repo", max_batch_size=max_batch_size, instance_count=instance_count,
                                max_queue_delay_us=delay, kind=kind)
    except ExportDirectoryError:  # every number passed: the export is read next
        pass
    except (ValueError, TypeError) as error:
        assert not (1 <= max_batch_size <= INT32_MAX and 1 <= instance_count <= INT32_MAX and 0 <= delay <= UINT64_MAX), error
        return
    assert 1 <= max_batch_size <= INT32_MAX and 1 <= instance_count <= INT32_MAX and 0 <= delay <= UINT64_MAX
    text = triton.config_text("m", graph, sample_shape, max_batch_size=max_batch_size, instance_count=instance_count,
                              kind=kind, max_queue_delay_us=delay)
    config = text_format.Parse(text, model_config.ModelConfig())
    assert (config.max_batch_size, config.instance_group[0].count) == (max_batch_size, instance_count)
    assert config.dynamic_batching.max_queue_delay_microseconds == delay
    sample = next(item for item in config.input if item.name == "sample")
    assert list(sample.dims) == sample_shape
