"""The composed graph family (step, sampler, gpu_step, gpu_sampler) and the ONNX counter noise."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from ncsn_runtime import noise as reference
from ncsn_runtime.noise import initial_sample, seeds_for_batch
from ncsn_runtime.schedule import geometric_sigmas, spanning_timesteps, step_sizes
from test_export_nets import tiny_conv_spec

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.graph_passes import rewrite_elu
from ncsn_export.exporters.onnx_export import StepGraph, export_score_onnx
from ncsn_export.exporters.onnx_noise import noise_model
from ncsn_export.models.gmm import toy_gmm_spec
from ncsn_export.sampler import AnnealedLangevinSampler

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EDGE_SEEDS = np.array([0, 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 123456789], dtype=np.int64)
EDGE_COUNTERS = np.array([0, 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62 + 12345, 2**63 - 1], dtype=np.int64)
BITWISE_OPS = {"BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "BitShift"}
CONTROL_FLOW = {"Loop", "If", "Scan"}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g)


def all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attribute.g)


@pytest.mark.parametrize(("variant", "xor_method"), [("bitwise", "lut"), ("arithmetic", "lut"), ("arithmetic", "planes")])
@pytest.mark.parametrize("shape", [(10,), (2, 3, 4)])
def test_noise_graph_equals_the_numpy_contract(variant, xor_method, shape):
    rng = np.random.default_rng(0)
    seeds = np.concatenate([EDGE_SEEDS, rng.integers(0, 2**63 - 1, 8, dtype=np.int64)])
    counters = np.concatenate([EDGE_COUNTERS, rng.integers(0, 2**63 - 1, 4, dtype=np.int64)])
    noise, words = session(noise_model(shape, variant, xor_method=xor_method)).run(None, {"seed": seeds, "counters": counters})
    num_blocks = -(-int(np.prod(shape)) // 4)
    assert noise.shape == (len(counters), len(seeds), *shape) and noise.dtype == np.float32
    for index, counter in enumerate(counters):
        expected_words = reference.philox_words(seeds, int(counter), num_blocks * 4, reference.LANGEVIN_STREAM)
        np.testing.assert_array_equal(words[index], expected_words.reshape(len(seeds), num_blocks, 4).astype(np.int64))
        expected = reference.counter_normal(seeds, int(counter), shape)
        assert np.max(np.abs(noise[index] - expected)) <= 1e-6  # float64 libm vs onnxruntime's log/cos/sin
        assert np.mean(noise[index] == expected) > 0.99


@pytest.mark.parametrize("xor_method", ["lut", "planes"])
def test_arithmetic_noise_has_no_bitwise_op(xor_method):
    ops = {node.op_type for node in noise_model((10,), "arithmetic", xor_method=xor_method).graph.node}
    assert not ops & BITWISE_OPS and "MatMul" in ops
    assert {"BitwiseAnd", "BitwiseXor"} <= {node.op_type for node in noise_model((10,), "bitwise").graph.node}


def compose_for(spec, final_denoise, tmp_path):
    path = tmp_path / "score.onnx"
    export_score_onnx(spec.model, spec.sample_shape, path, 18)
    config = spec.scheduler_config
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"])
    return compose_graphs(onnx.load(str(path)), spec.sample_shape, sigmas, final_denoise), sigmas


@pytest.fixture(scope="module", params=["toy-gmm", "tiny-conv"])
def composed(request, tmp_path_factory):
    spec = toy_gmm_spec() if request.param == "toy-gmm" else tiny_conv_spec()
    final_denoise = request.param == "tiny-conv"  # the toy runs without, the conv net with the denoising step
    graphs, sigmas = compose_for(spec, final_denoise, tmp_path_factory.mktemp(request.param))
    return spec, final_denoise, graphs, sigmas


@pytest.fixture(scope="module")
def toy_graphs(tmp_path_factory):
    """(graphs, train sigmas) of the toy mixture, traced once."""
    return compose_for(toy_gmm_spec(), False, tmp_path_factory.mktemp("toy-edge"))


def sampler_feed(spec, sigmas, batch_size=5, num_levels=4, num_annealed_steps=3):
    """A batch size and level count different from the trace shapes (B=2, N=3)."""
    seeds = seeds_for_batch(11, batch_size)
    timesteps = spanning_timesteps(num_levels, len(sigmas))
    return {"sample": initial_sample(seeds, spec.sample_shape, *spec.init_range), "seed": seeds, "timesteps": timesteps,
            "step_sizes": step_sizes(sigmas[timesteps], spec.scheduler_config["sampling_eps"] * 100),
            "num_annealed_steps": np.array(num_annealed_steps, dtype=np.int64)}


def test_samplers_equal_torch_eager(composed, one_torch_thread):
    spec, final_denoise, graphs, sigmas = composed
    feed = sampler_feed(spec, sigmas)
    eager = AnnealedLangevinSampler(spec.model, torch.from_numpy(sigmas), final_denoise).eval()
    with torch.no_grad():
        expected = eager(*(torch.from_numpy(np.asarray(value)) for value in feed.values())).numpy()
    fused = session(graphs["sampler"]).run(None, feed)[0]
    gpu_fused = session(graphs["gpu_sampler"]).run(None, feed)[0]
    assert fused.shape == expected.shape and np.max(np.abs(fused - expected)) <= 1e-5
    assert np.max(np.abs(gpu_fused - fused)) <= 1e-5


def test_final_denoise_changes_the_sample(composed):
    spec, final_denoise, graphs, sigmas = composed
    feed = sampler_feed(spec, sigmas)
    toggled = compose_graphs(graphs["score"], spec.sample_shape, sigmas, not final_denoise, keys=("sampler",))["sampler"]
    eager = AnnealedLangevinSampler(spec.model, torch.from_numpy(sigmas), not final_denoise).eval()
    with torch.no_grad():
        expected = eager(*(torch.from_numpy(np.asarray(value)) for value in feed.values())).numpy()
    toggled_sample = session(toggled).run(None, feed)[0]
    assert np.max(np.abs(toggled_sample - expected)) <= 1e-5
    assert np.max(np.abs(toggled_sample - session(graphs["sampler"]).run(None, feed)[0])) > 1e-4


def test_steps_equal_torch_eager_and_each_other(composed, one_torch_thread):
    spec, _, graphs, _ = composed
    seeds = seeds_for_batch(3, 5)
    sample = initial_sample(seeds, spec.sample_shape, *spec.init_range)
    counter = 2**40 + 7
    feed = {"sample": sample, "timestep": np.array(2, dtype=np.int64), "step_size": np.array(0.01, dtype=np.float32)}
    step = session(graphs["step"]).run(None, {**feed, "seed": seeds, "counter": np.array(counter, dtype=np.int64)})[0]
    noise = reference.counter_normal(seeds, counter, spec.sample_shape)
    gpu_step = session(graphs["gpu_step"]).run(None, {**feed, "noise": noise})[0]
    with torch.no_grad():
        expected = StepGraph(spec.model)(torch.from_numpy(sample), torch.from_numpy(seeds), torch.tensor(2),
                                         torch.tensor(0.01), torch.tensor(counter)).numpy()
    assert np.max(np.abs(step - expected)) <= 1e-5
    np.testing.assert_array_equal(gpu_step, step)


def test_gpu_graphs_have_only_cuda_friendly_ops(composed):
    _, _, graphs, _ = composed
    for key in ("gpu_step", "gpu_sampler"):
        ops = {node.op_type for node in all_nodes(graphs[key].graph)}
        assert not ops & BITWISE_OPS, key
    gpu_step = graphs["gpu_step"]
    assert not {node.op_type for node in all_nodes(gpu_step.graph)} & CONTROL_FLOW
    doubles = [node.name for node in all_nodes(gpu_step.graph) if node.op_type == "Cast"
               and any(attribute.name == "to" and attribute.i == onnx.TensorProto.DOUBLE for attribute in node.attribute)]
    doubles += [tensor.name for graph in all_graphs(gpu_step.graph) for tensor in graph.initializer
                if tensor.data_type == onnx.TensorProto.DOUBLE]
    assert doubles == []


def test_network_appears_once_per_graph(composed):
    _, _, graphs, _ = composed
    score_nodes = len(graphs["score"].graph.node)
    for key in ("step", "gpu_step", "sampler", "gpu_sampler"):
        network = [node for node in all_nodes(graphs[key].graph) if node.name.startswith("net/")]
        assert len(network) == score_nodes, key


def test_io_follows_the_contract(composed):
    from ncsn_runtime.contract import GRAPHS

    spec, _, graphs, _ = composed
    for key, model in graphs.items():
        names = [value.name for value in model.graph.input], [value.name for value in model.graph.output]
        assert names == (list(GRAPHS[key].input_names), list(GRAPHS[key].output_names)), key
    sample = next(value for value in graphs["sampler"].graph.input if value.name == "sample")
    dims = [dim.dim_param or dim.dim_value for dim in sample.type.tensor_type.shape.dim]
    assert dims == ["batch", *spec.sample_shape]


def test_compose_rejects_bad_arguments(composed):
    spec, _, graphs, sigmas = composed
    with pytest.raises(ValueError, match="`keys`"):
        compose_graphs(graphs["score"], spec.sample_shape, sigmas, False, keys=("nope",))
    with pytest.raises(ValueError, match="`opset`"):
        compose_graphs(graphs["score"], spec.sample_shape, sigmas, False, keys=("step",), opset=19)
    with pytest.raises(ValueError, match="`sample_shape`"):
        compose_graphs(graphs["score"], (), sigmas, False, keys=("step",))


def test_elu_rewrite_keeps_the_network(tmp_path):
    spec = tiny_conv_spec()
    path = tmp_path / "score.onnx"
    export_score_onnx(spec.model, spec.sample_shape, path, 18)
    traced = onnx.load(str(path))
    rewritten, count = rewrite_elu(traced)
    assert count == [node.op_type for node in traced.graph.node].count("Elu") == 2
    assert "Elu" not in {node.op_type for node in rewritten.graph.node}
    onnx.checker.check_model(rewritten, full_check=True)
    seeds = seeds_for_batch(0, 4)
    feed = {"sample": 3 * initial_sample(seeds, spec.sample_shape, -1, 1), "timestep": np.array([0, 1, 4, 5], dtype=np.int64)}
    expected = session(traced).run(None, feed)[0]
    assert np.max(np.abs(session(rewritten).run(None, feed)[0] - expected)) <= 1e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("final_denoise", [False, True])
@pytest.mark.parametrize(("num_levels", "num_annealed_steps"), [(1, 1), (2, 1), (1, 4)])
def test_sampler_edge_schedules_equal_torch_eager(toy_graphs, final_denoise, num_levels, num_annealed_steps):
    spec = toy_gmm_spec()
    graphs, sigmas = toy_graphs
    graph = compose_graphs(graphs["score"], spec.sample_shape, sigmas, final_denoise, keys=("sampler", "gpu_sampler"))
    feed = sampler_feed(spec, sigmas, batch_size=3, num_levels=num_levels, num_annealed_steps=num_annealed_steps)
    feed["seed"] = np.array([0, 2**32 - 1, 2**63 - 1], dtype=np.int64)
    eager = AnnealedLangevinSampler(spec.model, torch.from_numpy(sigmas), final_denoise).eval()
    with torch.no_grad():
        expected = eager(*(torch.from_numpy(np.asarray(value)) for value in feed.values())).numpy()
    for key in ("sampler", "gpu_sampler"):
        assert np.max(np.abs(session(graph[key]).run(None, feed)[0] - expected)) <= 1e-5, key

