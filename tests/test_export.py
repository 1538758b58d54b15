"""export_model end to end: the graphs of an export directory against torch eager and the numpy runtime scheduler.

Two exports are made once per module (toy GMM; a 3-conv net with instance norm and final denoising) and reused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ncsn_runtime.contract import GRAPHS
from ncsn_runtime.manifest import ExportDirectoryError, load_manifest, verified_path
from ncsn_runtime.noise import counter_normal, initial_sample, langevin_counter, seeds_for_batch
from ncsn_runtime.scheduler import AnnealedLangevinDynamicsScheduler
from test_export_nets import ort_session, tiny_conv_spec

from ncsn_export.exporters import export_model
from ncsn_export.exporters.onnx_export import SAMPLER_INPUTS
from ncsn_export.exporters.validate import validate_export, validation_inputs
from ncsn_export.models.gmm import toy_gmm_spec
from ncsn_export.sampler import AnnealedLangevinSampler

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory):
    output = tmp_path_factory.mktemp("exports") / "toy-gmm"
    report = export_model("toy-gmm", output, artifacts=["default", "torch_export"])
    return output, report


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory):
    output = tmp_path_factory.mktemp("exports") / "tiny-conv"
    report = export_model(tiny_conv_spec(), output, batch_size=3)
    return output, report


def eager_sampler(spec, final_denoise):
    scheduler = AnnealedLangevinDynamicsScheduler(**spec.scheduler_config)
    return AnnealedLangevinSampler(spec.model, torch.from_numpy(scheduler.train_sigmas), final_denoise).eval()


def run_eager(sampler, inputs):
    with torch.no_grad():
        return sampler(*(torch.from_numpy(np.array(inputs[name])) for name in SAMPLER_INPUTS)).numpy()


def test_sampler_graph_is_one_loop_with_the_contract_io(toy_export):
    output, report = toy_export
    model = onnx.load(str(output / "sampler.onnx"))
    assert [node.op_type for node in model.graph.node].count("Loop") == 1
    inputs = {value["name"]: value for value in report.manifest["graphs"]["sampler"]["inputs"]}
    assert list(inputs) == ["sample", "seed", "timesteps", "step_sizes", "num_annealed_steps"]
    assert inputs["sample"] == {"name": "sample", "dtype": "float32", "shape": ["batch", 2]}
    assert inputs["seed"]["shape"] == ["batch"] and inputs["seed"]["dtype"] == "int64"
    assert inputs["timesteps"]["shape"] == ["num_levels"] and inputs["step_sizes"]["dtype"] == "float32"
    assert inputs["num_annealed_steps"] == {"name": "num_annealed_steps", "dtype": "int64", "shape": []}
    assert [value["name"] for value in report.manifest["graphs"]["sampler"]["outputs"]] == ["final_sample"]
    step_inputs = [value["name"] for value in report.manifest["graphs"]["step"]["inputs"]]
    assert step_inputs == ["sample", "seed", "timestep", "step_size", "counter"]
    assert [value["name"] for value in report.manifest["graphs"]["score"]["outputs"]] == ["score"]
    # the noise of a level is drawn once, in the outer (schedule position) body; the inner body holds the network
    outer = next(node for node in model.graph.node if node.op_type == "Loop").attribute[0].g
    inner = next(node for node in outer.node if node.op_type == "Loop").attribute[0].g
    assert "BitwiseXor" in {node.op_type for node in outer.node} and "BitwiseXor" not in {node.op_type for node in inner.node}


def test_manifest_records_files_validation_and_model(toy_export):
    output, _ = toy_export
    manifest = load_manifest(output)
    assert manifest == json.loads((output / "manifest.json").read_text())
    assert {"score", "step", "sampler"} <= set(manifest["graphs"])
    graph_files = {GRAPHS[key].file for key in manifest["graphs"]}
    assert set(manifest["files"]) == graph_files | {"sampler.pt", "sampler.pt2", "scheduler/scheduler_config.json",
                                                    "weights.onnx.data"}
    assert manifest["artifacts"]["torchscript"]["status"] == manifest["artifacts"]["torch_export"]["status"] == "written"
    for key in ("gpu_step", "gpu_sampler"):  # written, or skipped with the reason (never silently absent)
        entry = manifest["artifacts"][key]
        assert (entry["status"] == "written") == (key in manifest["graphs"]) and (entry["status"] == "written" or entry["reason"])
    for relative in manifest["files"]:
        verified_path(output, manifest, relative)
    assert manifest["model"]["name"] == "toy-gmm" and manifest["model"]["sample_shape"] == [2]
    assert manifest["model"]["init_range"] == [-8.0, 8.0] and manifest["model"]["final_denoise"] is False
    rows = {(row["artifact"], row["check"]): row for row in manifest["validation"]}
    validated = {GRAPHS[key].file for key in manifest["graphs"] if manifest["artifacts"].get(key, {}).get("validated", True)}
    assert {"score.onnx", "step.onnx", "sampler.onnx"} <= validated  # gpu_step needs the runtime's graph=
    assert set(rows) >= {(name, "dynamic") for name in validated | {"sampler.pt", "sampler.pt2"}} | {("sampler.onnx", "full")}
    assert all(row["passed"] for row in rows.values())
    assert all(row["max_abs_diff"] <= 1e-4 for (_, check), row in rows.items() if check == "dynamic")
    dynamic, full = manifest["validation_schedule"]["dynamic"], manifest["validation_schedule"]["full"]
    assert dynamic["batch_size"] == 3 and len(dynamic["timesteps"]) == 4  # not the trace shapes (B=2, N=3)
    assert full["batch_size"] == 16 and full["timesteps"] == list(range(10)) and full["num_annealed_steps"] == 100
    assert manifest["opset"] == 18 and set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime"}
    config = json.loads((output / "scheduler" / "scheduler_config.json").read_text())
    assert config["num_annealed_steps"] == 100 and config["_class_name"] == "AnnealedLangevinDynamicsScheduler"
    assert not [path for path in output.parent.iterdir() if path.name.startswith(".")]  # no staging left over


@pytest.mark.parametrize("which", ["toy", "conv"])
def test_fused_onnx_equals_eager_on_a_new_schedule_and_batch(which, toy_export, conv_export):
    output, _ = toy_export if which == "toy" else conv_export
    spec = toy_gmm_spec() if which == "toy" else tiny_conv_spec()
    inputs = validation_inputs(spec.scheduler_config, spec.sample_shape, spec.init_range, batch_size=4,
                               num_inference_steps=4, num_annealed_steps=7, seed=123)
    fused = ort_session(output / "sampler.onnx").run(None, inputs)[0]
    expected = run_eager(eager_sampler(spec, spec.final_denoise), inputs)
    assert fused.shape == (4, *spec.sample_shape)
    assert np.max(np.abs(fused - expected)) <= 1e-4
    assert np.max(np.abs(fused - inputs["sample"])) > 1e-3  # it did move


def test_sample_does_not_depend_on_its_batch(toy_export):
    output, _ = toy_export
    session = ort_session(output / "sampler.onnx")
    scheduler = AnnealedLangevinDynamicsScheduler(**toy_gmm_spec().scheduler_config)
    timesteps, _, step_size = scheduler.schedule_arrays()
    seeds = seeds_for_batch(40, 5)
    x0 = initial_sample(seeds, (2,), -8.0, 8.0)
    common = {"timesteps": timesteps, "step_sizes": step_size, "num_annealed_steps": np.array(10, dtype=np.int64)}
    batch = session.run(None, {"sample": x0, "seed": seeds, **common})[0]
    single = session.run(None, {"sample": x0[2:3], "seed": seeds[2:3], **common})[0]
    np.testing.assert_array_equal(single[0], batch[2])


def test_three_level_schedule_as_inputs_equals_the_runtime_scheduler_loop(toy_export):
    """Custom levels and eps through the numpy scheduler + numpy noise + torch score == the fused graph."""
    output, _ = toy_export
    spec = toy_gmm_spec()
    scheduler = AnnealedLangevinDynamicsScheduler(**spec.scheduler_config)
    scheduler.set_timesteps(timesteps=[1, 5, 8], sampling_eps=0.03)
    timesteps, _, step_size = scheduler.schedule_arrays()
    num_steps, seeds = 9, np.array([0, 2**32 - 1, 2**63 - 1], dtype=np.int64)
    x = initial_sample(seeds, (2,), -8.0, 8.0)
    feed = {"sample": x, "seed": seeds, "timesteps": timesteps, "step_sizes": step_size,
            "num_annealed_steps": np.array(num_steps, dtype=np.int64)}
    fused = ort_session(output / "sampler.onnx").run(None, feed)[0]
    for position, level in enumerate(timesteps):
        for t in range(num_steps):
            with torch.no_grad():
                score = spec.model(torch.from_numpy(x), torch.full((3,), int(level))).numpy()
            z = counter_normal(seeds, langevin_counter(position, t, num_steps), (2,))
            x = scheduler.step(score, int(level), x, noise=z).prev_sample
    assert np.max(np.abs(fused - x)) <= 1e-4


def test_step_graph_noise_matches_numpy_on_edge_seeds_and_counters(conv_export):
    output, _ = conv_export
    session = ort_session(output / "step.onnx")
    seeds = np.array([0, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1], dtype=np.int64)
    x = np.zeros((len(seeds), 1, 8, 8), dtype=np.float32)
    model = tiny_conv_spec().model
    with torch.no_grad():
        score = model(torch.from_numpy(x), torch.full((len(seeds),), 2)).numpy()
    alpha = np.float32(0.25)
    for counter in (0, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1):
        feed = {"sample": x, "seed": seeds, "timestep": np.array(2, dtype=np.int64), "step_size": np.array(alpha),
                "counter": np.array(counter, dtype=np.int64)}
        result = session.run(None, feed)[0]
        noise = counter_normal(seeds, counter, (1, 8, 8))
        expected = x + 0.5 * alpha * score + np.sqrt(alpha) * noise
        assert np.max(np.abs(result - expected)) <= 1e-5, counter


def test_conv_export_with_final_denoise_validates(conv_export):
    _, report = conv_export
    manifest = report.manifest
    assert manifest["model"]["final_denoise"] is True and manifest["model"]["sample_shape"] == [1, 8, 8]
    assert all(row["passed"] for row in manifest["validation"])
    assert manifest["validation_schedule"]["dynamic"]["batch_size"] == 3
    assert manifest["artifacts"]["torchscript"]["network"] == "script"


def test_conv_sampler_holds_the_network_once_inside_the_loop_with_its_weights(conv_export):
    output, _ = conv_export
    model = onnx.load(str(output / "sampler.onnx"), load_external_data=False)
    graphs = [model.graph]  # the main graph, then each Loop body (outer: schedule position, inner: annealed step)
    while loops := [node for node in graphs[-1].node if node.op_type == "Loop"]:
        assert len(loops) == 1
        graphs.append(loops[0].attribute[0].g)
    conv_counts = [[node.op_type for node in graph.node].count("Conv") for graph in graphs]
    assert len(graphs) == 3 and conv_counts == [0, 0, 3]  # final denoise runs inside the loop too
    # every Conv weight is an initializer of the inner body (names are compacted: the Conv inputs identify them),
    # stored as a reference into the shared weights.onnx.data
    conv_weights = {node.input[1] for node in graphs[-1].node if node.op_type == "Conv"}
    body = {initializer.name: initializer for initializer in graphs[-1].initializer}
    outer_names = {initializer.name for graph in graphs[:-1] for initializer in graph.initializer}
    assert conv_weights <= set(body) and not conv_weights & outer_names
    assert all(body[name].data_location == onnx.TensorProto.EXTERNAL for name in conv_weights)


def test_torchscript_runs_in_a_process_without_our_package(conv_export, tmp_path):
    output, _ = conv_export
    spec = tiny_conv_spec()
    inputs = validation_inputs(spec.scheduler_config, spec.sample_shape, spec.init_range, batch_size=2,
                               num_inference_steps=3, num_annealed_steps=4, seed=5)
    np.savez(tmp_path / "inputs.npz", **inputs)
    expected = run_eager(eager_sampler(spec, True), inputs)
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("ncsn_export", "ncsn_runtime", "test_export_nets"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np, torch
        data = np.load({str(tmp_path / "inputs.npz")!r})
        sampler = torch.jit.load({str(output / "sampler.pt")!r})
        args = [torch.from_numpy(np.array(data[k])) for k in {list(SAMPLER_INPUTS)!r}]
        with torch.no_grad():
            np.save({str(tmp_path / "out.npy")!r}, sampler(*args).numpy())
        assert not any(m.startswith(("ncsn_export", "ncsn_runtime")) for m in sys.modules)
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=120)
    assert np.max(np.abs(np.load(tmp_path / "out.npy") - expected)) <= 1e-5


def test_pt2_reproduces_eager(toy_export):
    output, _ = toy_export
    spec = toy_gmm_spec()
    inputs = validation_inputs(spec.scheduler_config, spec.sample_shape, spec.init_range, batch_size=3,
                               num_inference_steps=2, num_annealed_steps=4, seed=9)
    program = torch.export.load(str(output / "sampler.pt2")).module()
    with torch.no_grad():
        result = program(*(torch.from_numpy(np.array(inputs[name])) for name in SAMPLER_INPUTS)).numpy()
    assert np.max(np.abs(result - run_eager(eager_sampler(spec, False), inputs))) <= 1e-6


def test_corrupted_graph_is_detected_through_the_manifest(toy_export, tmp_path):
    output, _ = toy_export
    copy = tmp_path / "copy"
    copy.mkdir()
    for relative in ("manifest.json", "sampler.onnx"):
        (copy / relative).write_bytes((output / relative).read_bytes())
    manifest = load_manifest(copy)
    verified_path(copy, manifest, "sampler.onnx")
    data = bytearray((copy / "sampler.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "sampler.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match="sha256"):
        verified_path(copy, manifest, "sampler.onnx")


def test_toy_full_schedule_recovers_the_mode_weights(toy_export):
    """The paper's result through the fused graph: annealed Langevin finds the 0.2 / 0.8 weights."""
    output, _ = toy_export
    spec = toy_gmm_spec()
    scheduler = AnnealedLangevinDynamicsScheduler(**spec.scheduler_config)
    timesteps, _, step_size = scheduler.schedule_arrays()
    seeds = seeds_for_batch(0, 2000)
    feed = {"sample": initial_sample(seeds, (2,), -8.0, 8.0), "seed": seeds, "timesteps": timesteps,
            "step_sizes": step_size, "num_annealed_steps": np.array(100, dtype=np.int64)}
    final = ort_session(output / "sampler.onnx").run(None, feed)[0]
    share = float((final.sum(1) < 0).mean())
    assert 0.17 <= share <= 0.23, share


def test_report_table_lists_every_artifact(toy_export):
    _, report = toy_export
    table = report.table
    for name in ("sampler.onnx", "step.onnx", "score.onnx", "sampler.pt", "sampler.pt2"):
        assert name in table
    assert "FAIL" not in table
    assert Path(report.output_dir).is_dir()



def test_validate_export_runs_on_its_own_and_catches_a_wrong_model(toy_export):
    output, _ = toy_export
    report = validate_export(output, toy_gmm_spec(), batch_size=5, num_inference_steps=2, num_annealed_steps=4,
                             full_batch_size=0)
    assert report.passed and {row.mode for row in report.rows} >= {"fused", "stepwise", "torch"}
    assert report.schedules["dynamic"]["batch_size"] == 5 and "full" not in report.schedules

    class Halved(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, t):
            return 0.5 * self.model(x, t)

    wrong = validate_export(output, Halved(toy_gmm_spec().model), full_batch_size=0)
    assert not wrong.passed and all(not row.passed for row in wrong.rows)
