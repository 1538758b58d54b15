"""Node host: ``generate({callbackOnStepEnd})`` keeps the Python runtime's callback conventions (issue 20, part 3).

``stepIndex`` is the annealed step within its level and ``timestep`` the level, ``callbackKwargs.samples`` is the
state, a returned ``{samples}`` replaces it (checked), and a callback means a stepwise graph. The replaced runs are
compared with the Python runtime doing the same replacement.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

try:
    from . import host_exports as hosts
except ImportError:  # tests/ is not a package (pytest's default rootdir import mode)
    import host_exports as hosts

pytestmark = pytest.mark.skipif(hosts.node_ready() is not None, reason=str(hosts.node_ready()))

SCRIPT = """
import { loadPipeline } from './runtime/js/node.js';
const pipe = await loadPipeline(process.argv[1], { graphs: ['sampler', 'score', 'step', 'gpu_step'] });
const out = {};
const calls = [];
const record = (p, stepIndex, timestep, kw) => {
  calls.push([stepIndex, timestep, kw.position, kw.annealedStep, kw.globalStep]);
  return kw;
};
const plain = await pipe.generate({ seed: 3, numSamples: 2, callbackOnStepEnd: record,
                                    callbackOnStepEndTensorInputs: ['samples'] });
out.calls = calls;
out.auto = plain.graph;  // the default graph is fused sampler: a callback picks a stepwise one
out.plain = Array.from(plain.samples);
out.replaced = {};
for (const graph of ['score', 'step', 'gpu_step']) {
  // zeros at the last step of level 1: the rest of the schedule runs from zeros
  const zero = async (p, stepIndex, timestep, kw) =>
    (timestep === 1 && stepIndex === 2 ? { samples: new Float32Array(kw.samples.length) } : kw);
  out.replaced[graph] = Array.from((await pipe.generate({ seed: 3, numSamples: 2, graph, callbackOnStepEnd: zero })).samples);
}
const inPlace = (p, stepIndex, timestep, kw) => { if (timestep === 1 && stepIndex === 2) kw.samples.fill(0); return kw; };
out.inPlace = Array.from((await pipe.generate({ seed: 3, numSamples: 2, graph: 'score', callbackOnStepEnd: inPlace })).samples);
const errors = {};
const attempt = async (name, options) => {
  try { await pipe.generate({ seed: 3, numSamples: 2, ...options }); errors[name] = null; }
  catch (error) { errors[name] = `${error.constructor.name}: ${error.message}`; }
};
const at = (value) => (p, stepIndex, timestep, kw) => (kw.globalStep === 4 ? value(kw) : kw);
await attempt('names', { callbackOnStepEnd: record, callbackOnStepEndTensorInputs: ['samples', 'latents'] });
await attempt('fused', { graph: 'sampler', callbackOnStepEnd: record });
await attempt('notFunction', { callbackOnStepEnd: 3 });
await attempt('length', { callbackOnStepEnd: at((kw) => ({ samples: kw.samples.subarray(1) })) });
await attempt('nan', { callbackOnStepEnd: at((kw) => ({ samples: kw.samples.map((v, i) => (i === 70 ? NaN : v)) })) });
await attempt('type', { callbackOnStepEnd: at(() => ({ samples: new Int32Array(128) })) });
await attempt('notObject', { callbackOnStepEnd: at(() => 5) });
out.errors = errors;
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def node_result() -> dict:
    proc = hosts.run_node(["--input-type=module", "-e", SCRIPT, str(hosts.build_export("tiny-conv"))])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_callback_step_index_is_per_level_and_the_state_replaces(node_result):
    from ncsn_runtime import NCSNPipeline

    assert node_result["calls"] == [[t, level, level, t, level * 3 + t] for level in range(4) for t in range(3)]
    assert node_result["auto"] in ("step", "gpu_step", "score")
    pipe = NCSNPipeline.from_pretrained(hosts.build_export("tiny-conv"), provider="cpu")
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(batch_size=2, seed=3, output_type="raw").images
    np.testing.assert_allclose(np.reshape(node_result["plain"], plain.shape), plain, atol=hosts.TOLERANCE)

    def zero(pipe, step_index, timestep, kwargs):
        return {"samples": np.zeros_like(kwargs["samples"])} if (timestep, step_index) == (1, 2) else kwargs

    replaced = pipe(batch_size=2, seed=3, output_type="raw", callback_on_step_end=zero).images
    assert np.abs(replaced - plain).max() > 1e-2  # the replacement changed the result
    for graph, samples in {**node_result["replaced"], "score (in place)": node_result["inPlace"]}.items():
        difference = float(np.abs(np.reshape(samples, replaced.shape) - replaced).max())
        assert difference <= hosts.TOLERANCE, f"{graph}: max abs diff {difference:.3g} vs Python"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("names", 'RangeError: `callbackOnStepEndTensorInputs` has to be in ["samples"], but found ["latents"]'),
        ("fused", "RangeError: callbackOnStepEnd needs a stepwise graph"),
        ("notFunction", "TypeError: `callbackOnStepEnd` must be a function"),
        ("length", "RangeError: callbackOnStepEnd returned `samples` with 127 values; the state [2,1,8,8] has 128"),
        ("nan", "RangeError: callbackOnStepEnd returned `samples` with NaN/inf (or a value beyond float32) in sample 1"),
        ("type", "TypeError: callbackOnStepEnd returned `samples` as Int32Array"),
        ("notObject", "TypeError: callbackOnStepEnd must return an object"),
    ],
)
def test_bad_callbacks_are_refused(node_result, case, message):
    error = node_result["errors"][case]
    assert error is not None and error.startswith(message), error
