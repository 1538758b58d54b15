"""The lean score graph (:mod:`ncsn_export.exporters.lean_graph`): fewer nodes, same numbers, other graphs untouched."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from ncsn_runtime.schedule import geometric_sigmas
from torch import nn

from ncsn_export.exporters.compose import compose_graphs
from ncsn_export.exporters.hoist import hoist_loop_invariants
from ncsn_export.exporters.lean_graph import lean_graph, resize_sizes_to_scales, uniform_level
from ncsn_export.exporters.onnx_export import export_score_onnx
from ncsn_export.models.refinenet import ConditionalInstanceNorm2dPlus

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEVELS = 5
SHAPE = (2, 8, 8)


class TinyNormPlusScore(nn.Module):
    """conv -> 3 instance norm++ (two of them on the same tensor, as the RefineNet's fusion blocks) -> score / sigma."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.conv_in = nn.Conv2d(SHAPE[0], width, 3, padding=1)
        self.norm_a = ConditionalInstanceNorm2dPlus(width, LEVELS)
        self.norm_b = ConditionalInstanceNorm2dPlus(width, LEVELS)
        self.norm_c = ConditionalInstanceNorm2dPlus(width, LEVELS)
        self.conv_a = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, SHAPE[0], 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():  # far from the (gamma, alpha) = 1, beta = 0 start
                parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator) + 0.2)
        self.register_buffer("sigmas", torch.from_numpy(geometric_sigmas(1.0, 0.05, LEVELS)))

    def forward(self, sample: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(sample)
        h = nn.functional.elu(self.norm_a(h, level)) + nn.functional.elu(self.norm_b(h, level))
        h = self.conv_a(h)
        out = self.conv_out(nn.functional.elu(self.norm_c(h, level)))
        return out / self.sigmas[level].view(-1, 1, 1, 1)


class TinyAttentionScore(nn.Module):
    """conv -> single-head self-attention over pixels -> conv (no instance norm++)."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(SHAPE[0], width, 3, padding=1)
        self.attention = nn.MultiheadAttention(width, 1, batch_first=True)
        self.embedding = nn.Embedding(LEVELS, width)
        self.conv_out = nn.Conv2d(width, SHAPE[0], 3, padding=1)

    def forward(self, sample: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(sample) + self.embedding(level)[:, :, None, None]
        tokens = h.flatten(2).transpose(1, 2)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.conv_out(attended.transpose(1, 2).reshape(h.shape))


def _trace(model: nn.Module, shape, tmp_path) -> onnx.ModelProto:
    path = tmp_path / "score.onnx"
    export_score_onnx(model.eval(), shape, path, 18)
    return onnx.load(str(path))


def _run(model: onnx.ModelProto, sample: np.ndarray, level: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"sample": sample, "timestep": level})[0]


@pytest.fixture(scope="module")
def norm_plus(tmp_path_factory):
    model = TinyNormPlusScore().eval()
    return model, _trace(model, SHAPE, tmp_path_factory.mktemp("lean"))


def test_instance_norm_plus_fused_to_its_floor(norm_plus):
    _, raw = norm_plus
    lean, counts = lean_graph(raw)
    assert counts["instance_norm_plus"] == 3 and counts["gather_nd"] == 1 and counts["merged_gathers"] == 2  # 3 lookups become 1
    ops = collections.Counter(node.op_type for node in lean.graph.node)
    for gone in ("Shape", "Expand", "Concat", "Unsqueeze", "GatherND", "Sqrt", "Div"):
        assert ops[gone] == (1 if gone == "Div" else 0), (gone, ops)  # the one Div left is score / sigma
    # per layer: ReduceMean, Reshape, IN of the channel means (shared by norm_a and norm_b, which read the same h),
    # Reshape of x (shared too), Mul + Add (shift), 2 Reshape (scale, shift), IN(x), Reshape back; one Gather + Split
    convs, elus, tail = 3, 3, 3  # the Add of the two branches; sigma = Gather(sigmas[L, 1, 1, 1], level); score / sigma
    assert len(lean.graph.node) == convs + elus + tail + 2 * (3 + 1) + 3 * 6 + 2, ops
    assert ops["Gather"] == 2 and ops["Split"] == 1  # the 3 layers' tables in one lookup; the sigma lookup


@pytest.mark.parametrize("batch", [1, 4])
def test_lean_graph_equals_the_traced_one_and_eager(norm_plus, batch):
    model, raw = norm_plus
    lean, _ = lean_graph(raw)
    rng = np.random.default_rng(batch)
    sample = rng.standard_normal((batch, *SHAPE)).astype(np.float32)
    level = (np.arange(batch) * 3 % LEVELS).astype(np.int64)  # different levels in one batch
    got, want = _run(lean, sample, level), _run(raw, sample, level)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)
    with torch.no_grad():
        eager = model(torch.from_numpy(sample), torch.from_numpy(level)).numpy()
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-4 * scale)


def test_composed_graphs_carry_the_lean_network(norm_plus):
    _, raw = norm_plus
    sigmas = geometric_sigmas(1.0, 0.05, LEVELS)
    lean = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("score", "gpu_step"))
    plain = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("score", "gpu_step"), lean=False)
    saved = len(plain["score"].graph.node) - len(lean["score"].graph.node)
    assert saved >= 3 * 10 and len(plain["gpu_step"].graph.node) - len(lean["gpu_step"].graph.node) >= 3 * 10 - 4
    ops = collections.Counter(node.op_type for node in lean["gpu_step"].graph.node)
    assert ops["GatherND"] == 0 and ops["Expand"] == 1, ops  # the one Expand is compose's level broadcast
    rng = np.random.default_rng(0)
    feed = {"sample": rng.standard_normal((3, *SHAPE)).astype(np.float32),
            "noise": rng.standard_normal((3, *SHAPE)).astype(np.float32),
            "timestep": np.array(2, np.int64), "step_size": np.array(0.01, np.float32)}
    outputs = []
    for graphs in (lean, plain):
        session = ort.InferenceSession(graphs["gpu_step"].SerializeToString(), providers=["CPUExecutionProvider"])
        names = {value.name for value in session.get_inputs()}
        outputs.append(session.run(None, {name: value for name, value in feed.items() if name in names})[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_a_layer_whose_values_are_read_elsewhere_is_left_alone(norm_plus):
    """An extra reader of one layer's intermediate value (here: a graph output) keeps that layer as traced."""
    _, raw = norm_plus
    probed = onnx.ModelProto()
    probed.CopyFrom(raw)
    last_sqrt = [node for node in probed.graph.node if node.op_type == "Sqrt"][-1]  # norm_c's sqrt(var + eps)
    probed.graph.output.append(onnx.helper.make_tensor_value_info(last_sqrt.output[0], onnx.TensorProto.FLOAT, ["batch", 1]))
    lean, counts = lean_graph(probed)
    assert counts["instance_norm_plus"] == 2
    assert last_sqrt.output[0] in {name for node in lean.graph.node for name in node.output}
    sample = np.random.default_rng(1).standard_normal((2, *SHAPE)).astype(np.float32)
    level = np.array([0, 4], np.int64)
    session = ort.InferenceSession(lean.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"sample": sample, "timestep": level}
    for got, want in zip(session.run(None, feed), reference.run(None, feed), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("name", ["tiny-conv", "attention", "toy-gmm"])
def test_graphs_without_the_patterns_are_unchanged(name, tmp_path):
    if name == "tiny-conv":
        from test_export_nets import TinyConvScore

        model, shape = TinyConvScore(channels=2), SHAPE
    elif name == "attention":
        model, shape = TinyAttentionScore(), SHAPE
    else:
        from ncsn_export.models.registry import load_model

        spec = load_model("toy-gmm")
        model, shape = spec.model, spec.sample_shape
    raw = _trace(model, shape, tmp_path)
    before = raw.SerializeToString()
    lean, counts = lean_graph(raw)
    assert lean is raw and not any(counts.values()), counts
    assert raw.SerializeToString() == before


def test_uniform_level_network_equals_the_lean_one_at_one_level(norm_plus):
    """The composed graphs' network (one level for the whole batch): 4 per-step nodes per layer, same scores."""
    _, raw = norm_plus
    lean, _ = lean_graph(raw)
    uniform, count = uniform_level(lean)
    assert count == 3
    ops = collections.Counter(node.op_type for node in uniform.graph.node)
    assert ops["LayerNormalization"] == 3 and ops["InstanceNormalization"] == 3 and ops["Tile"] == 3, ops
    assert ops["Split"] == 0 and ops["Slice"] == 9, ops  # WebGPU: at most 10 storage buffers a shader (no 9-way Split)
    assert uniform_level(raw) == (raw, 0)  # only the lean form is rewritten
    rng = np.random.default_rng(7)
    for batch, level in ((1, 0), (4, 3)):
        sample = rng.standard_normal((batch, *SHAPE)).astype(np.float32)
        levels = np.full(batch, level, np.int64)
        got, want = _run(uniform, sample, levels), _run(raw, sample, levels)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))


def _inner_body(sampler: onnx.ModelProto) -> onnx.GraphProto:
    outer = next(node for node in sampler.graph.node if node.op_type == "Loop").attribute[0].g
    return next(node for node in outer.node if node.op_type == "Loop").attribute[0].g


def test_sampler_looks_the_level_up_once_per_level(norm_plus):
    """In sampler.onnx the level-only nodes (lookups, Tile of the scales) leave the step loop; same samples."""
    _, raw = norm_plus
    sigmas = geometric_sigmas(1.0, 0.05, LEVELS)
    lean = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("sampler",))["sampler"]
    plain = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("sampler",), lean=False)["sampler"]
    inner = collections.Counter(node.op_type for node in _inner_body(lean).node)
    assert inner["Tile"] == inner["Gather"] - 1 == inner["Split"] == 0, inner  # the one Gather left picks step t's noise
    assert inner["LayerNormalization"] == 3 and inner["Conv"] == 3, inner
    seeds = np.array([5, 6, 7], np.int64)
    feed = {"sample": np.random.default_rng(3).random((3, *SHAPE), np.float32), "seed": seeds,
            "timesteps": np.array([0, 2, 4], np.int64), "step_sizes": np.array([3e-3, 2e-3, 1e-3], np.float32),
            "num_annealed_steps": np.array(2, np.int64)}
    outputs = []
    for model in (lean, plain):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = {value.name for value in session.get_inputs()}
        outputs.append(session.run(None, {name: value for name, value in feed.items() if name in names})[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5 * float(np.abs(outputs[1]).max()))


def _batch_hints(graph: onnx.GraphProto, batch: str) -> dict[str, list]:
    """value_info entries whose first dimension is the symbol ``batch``: name -> dims (None where unnamed)."""
    return {value.name: [dim.dim_param or dim.dim_value or None for dim in value.type.tensor_type.shape.dim]
            for value in graph.value_info
            if value.type.tensor_type.shape.dim and value.type.tensor_type.shape.dim[0].dim_param == batch}


def test_uniform_level_names_the_batch_of_its_outputs(norm_plus):
    """Each rewritten layer's output is hinted as [batch, C, ?, ?] (the network input's batch symbol, which shape
    inference loses through the batch-folding Reshapes), also in the sampler's step loop; raw graphs carry none."""
    _, raw = norm_plus
    uniform, _ = uniform_level(lean_graph(raw)[0])
    batch = uniform.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    outputs = [node.output[0] for node in uniform.graph.node if node.name.endswith("/Reshape_y")]
    assert batch and len(outputs) == 3
    hints = _batch_hints(uniform.graph, batch)
    assert {name: hints.get(name) for name in outputs} == {name: [batch, 6, None, None] for name in outputs}
    assert len({value.name for value in uniform.graph.value_info}) == len(uniform.graph.value_info)
    sigmas = geometric_sigmas(1.0, 0.05, LEVELS)
    lean = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("sampler",))["sampler"]
    plain = compose_graphs(raw, SHAPE, sigmas, final_denoise=True, keys=("sampler",), lean=False)["sampler"]
    body_batch = _inner_body(lean).input[2].type.tensor_type.shape.dim[0].dim_param
    assert body_batch == batch and len(_batch_hints(_inner_body(lean), batch)) == 3  # compact_names dropped the rest
    assert not _batch_hints(_inner_body(plain), batch)


def _resize_model(sizes: list[int]) -> onnx.ModelProto:
    """y = Resize(x[batch, 2, 3, 4], sizes = Concat(Shape(x)[0:2], sizes)), bilinear, align_corners (the RefineNet's)."""
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Shape", ["x"], ["lead"], start=0, end=2), h.make_node("Concat", ["lead", "tail"], ["sizes"], axis=0),
         h.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear", coordinate_transformation_mode="align_corners")],
        "resize", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 2, 3, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 2, None, None])],
        [onnx.numpy_helper.from_array(np.array(sizes, np.int64), "tail")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_resize_by_whole_factors_takes_scales():
    """Output sizes that are whole multiples of static input sizes become constant scales (same numbers);
    other sizes are left alone."""
    model = _resize_model([6, 8])
    rewritten, count = resize_sizes_to_scales(model)
    assert count == 1
    resize = next(node for node in rewritten.graph.node if node.op_type == "Resize")
    scales = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in rewritten.graph.initializer}[resize.input[2]]
    assert len(resize.input) == 3 and scales.tolist() == [1, 1, 2, 2]
    onnx.checker.check_model(rewritten, full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 2, 3, 4)).astype(np.float32)
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                 for m in (rewritten, model))
    assert got.shape == want.shape == (3, 2, 6, 8)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    odd = _resize_model([7, 8])
    assert resize_sizes_to_scales(odd) == (odd, 0)


def _loop_model() -> onnx.ModelProto:
    """y = Loop(3) { x = (x + table[level] * 2) * w + table[level] * w } (w read by invariant and loop-state nodes)."""
    h = onnx.helper
    body = h.make_graph(
        [h.make_node("Gather", ["table", "level"], ["row"]), h.make_node("Mul", ["row", "two"], ["row2"]),
         h.make_node("Mul", ["row", "w"], ["roww"]), h.make_node("Add", ["x", "row2"], ["x1"]),
         h.make_node("Mul", ["x1", "w"], ["x2"]), h.make_node("Add", ["x2", "roww"], ["x_next"]),
         h.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [h.make_tensor_value_info("i", onnx.TensorProto.INT64, []), h.make_tensor_value_info("cond", onnx.TensorProto.BOOL, []),
         h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         h.make_tensor_value_info("x_next", onnx.TensorProto.FLOAT, [2])],
        [onnx.numpy_helper.from_array(np.array([[1, 2], [3, 4]], np.float32), "table"),
         onnx.numpy_helper.from_array(np.array(2, np.float32), "two"),
         onnx.numpy_helper.from_array(np.array([0.5, 2], np.float32), "w")])
    graph = h.make_graph(
        [h.make_node("Loop", ["trips", "", "x0"], ["y"], body=body)], "main",
        [h.make_tensor_value_info("trips", onnx.TensorProto.INT64, []),
         h.make_tensor_value_info("level", onnx.TensorProto.INT64, []),
         h.make_tensor_value_info("x0", onnx.TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 18)])


def test_hoist_moves_only_invariant_nodes():
    model = _loop_model()
    hoisted, count = hoist_loop_invariants(model)
    onnx.checker.check_model(hoisted, full_check=True)
    main = [node.op_type for node in hoisted.graph.node]
    body = hoisted.graph.node[-1].attribute[0].g
    assert count == 3 and main == ["Gather", "Mul", "Mul", "Loop"], main  # Gather(table, level), row * 2, row * w
    assert [node.op_type for node in body.node] == ["Add", "Mul", "Add", "Identity"]
    assert {tensor.name for tensor in body.initializer} == {"w"}  # still read by x1 * w: copied out, not moved
    assert {tensor.name for tensor in hoisted.graph.initializer} == {"table", "two", "w/hoisted"}
    feed = {"trips": np.array(3, np.int64), "level": np.array(1, np.int64), "x0": np.array([1, -1], np.float32)}
    got, want = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                 for m in (hoisted, model))
    np.testing.assert_array_equal(got, want)
    assert hoist_loop_invariants(hoisted) == (hoisted, 0)
