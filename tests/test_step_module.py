"""The traceable Langevin step: equal to ``scheduler.step``, exportable to ONNX and TorchScript."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ncsn_runtime import AnnealedLangevinDynamicsScheduler as NumpyScheduler
from ncsn_runtime.noise import counter_normal

from ncsn_export import AnnealedLangevinDynamicsScheduler, LangevinStep

PAPER = dict(num_train_timesteps=10, num_annealed_steps=100, sigma_min=0.01, sigma_max=1.0, sampling_eps=2e-5)
EDGE_SEEDS = np.array([0, 2**31, 2**32 - 1, 2**32, 2**62 + 3, 2**63 - 1], dtype=np.int64)
INPUT_NAMES = ["sample", "score", "step_size", "seed", "counter"]


def step_inputs(seeds: np.ndarray, shape=(1, 5, 7)):
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((len(seeds), *shape)).astype(np.float32)
    score = rng.standard_normal((len(seeds), *shape)).astype(np.float32)
    return sample, score


@pytest.fixture(scope="module")
def exported_step(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("step") / "step.onnx"
    sample, score = (torch.from_numpy(a) for a in step_inputs(EDGE_SEEDS[:2]))
    args = (sample, score, torch.tensor(0.03), torch.from_numpy(EDGE_SEEDS[:2]), torch.tensor(12))
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        LangevinStep().eval(), args, str(path), dynamo=True, opset_version=18, input_names=INPUT_NAMES,
        output_names=["next_sample"],
        dynamic_shapes={"sample": {0: batch}, "score": {0: batch}, "step_size": None, "seed": {0: batch}, "counter": None},
    )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return str(path)


def test_step_module_equals_scheduler_step():
    scheduler = AnnealedLangevinDynamicsScheduler(**PAPER)
    numpy_scheduler = NumpyScheduler(**PAPER)
    sample, score = step_inputs(EDGE_SEEDS)
    for position, level in enumerate(scheduler.timesteps.tolist()):
        counter = position * 100 + 3
        z = counter_normal(EDGE_SEEDS, counter, sample.shape[1:])
        expected = numpy_scheduler.step(score, level, sample, noise=z).prev_sample
        from_scheduler = scheduler.step(torch.from_numpy(score), level, torch.from_numpy(sample), noise=torch.from_numpy(z))
        got = LangevinStep()(torch.from_numpy(sample), torch.from_numpy(score), scheduler.step_size[position],
                             torch.from_numpy(EDGE_SEEDS), torch.tensor(counter))
        # torch vs numpy arithmetic may differ in the last bit; torch module vs torch scheduler may not
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(got, from_scheduler.prev_sample, rtol=0, atol=0)


@pytest.mark.parametrize("counter", [0, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1])
def test_exported_step_matches_numpy_on_edge_values(exported_step, counter):
    session = ort.InferenceSession(exported_step, providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(exported_step).graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    # zero sample and score with alpha = 1 make the step return the noise itself
    shape = (len(EDGE_SEEDS), 1, 5, 7)
    feeds = {"sample": np.zeros(shape, np.float32), "score": np.zeros(shape, np.float32),
             "step_size": np.array(1.0, np.float32), "seed": EDGE_SEEDS, "counter": np.array(counter, np.int64)}
    (noise_out,) = session.run(None, feeds)
    np.testing.assert_allclose(noise_out, counter_normal(EDGE_SEEDS, counter, shape[1:]), rtol=0, atol=1e-6)
    sample, score = step_inputs(EDGE_SEEDS)
    feeds.update(sample=sample, score=score, step_size=np.array(0.03, np.float32))
    (stepped,) = session.run(None, feeds)
    z = counter_normal(EDGE_SEEDS, counter, sample.shape[1:])
    alpha = np.float32(0.03)
    np.testing.assert_allclose(stepped, sample + 0.5 * alpha * score + np.sqrt(alpha) * z, rtol=0, atol=1e-6)


def test_step_module_scripts_and_matches_eager():
    scripted = torch.jit.script(LangevinStep())
    sample, score = (torch.from_numpy(a) for a in step_inputs(EDGE_SEEDS))
    args = (sample, score, torch.tensor(0.5), torch.from_numpy(EDGE_SEEDS), torch.tensor(2**40 + 1))
    torch.testing.assert_close(scripted(*args), LangevinStep()(*args), rtol=0, atol=0)
