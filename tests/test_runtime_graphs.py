"""Every graph of the contract gives the same samples for the same seeds (<= 1e-4) on CPU: sampler, gpu_sampler,
step, gpu_step and score, through ``NCSNPipeline(..., graph=)`` and ``ncsn-sample --graph``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from host_exports import TOLERANCE, build_export, with_all_graphs
from ncsn_runtime.cli import main as sample_main
from ncsn_runtime.contract import GRAPHS, SAMPLING_GRAPHS
from ncsn_runtime.manifest import ExportDirectoryError
from ncsn_runtime.noise import counter_normal
from ncsn_runtime.pipeline import NCSNPipeline
from ncsn_runtime.steppers import GpuStepCudaGraphStepper, GpuStepStepper


@pytest.fixture(scope="module", params=["toy-gmm", "tiny-conv"])
def export(request):
    return with_all_graphs(build_export(request.param))


def _samples(pipe: NCSNPipeline, graph: str | None = None, mode: str = "auto", steps: int = 2, seed: int = 5,
             batch: int = 3) -> np.ndarray:
    return pipe(batch_size=batch, seed=seed, num_inference_steps=steps, mode=mode, graph=graph, output_type="raw",
                progress=False).images


def test_every_graph_gives_the_same_samples(export):
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    reference = _samples(pipe, "sampler")
    assert pipe.last_run.graph == "sampler" and pipe.last_run.mode == "fused"
    diffs = {}
    for graph in SAMPLING_GRAPHS:
        samples = _samples(pipe, graph)
        assert pipe.last_run.graph == graph
        assert pipe.last_run.mode == ("fused" if graph in ("sampler", "gpu_sampler") else "stepwise")
        diffs[graph] = float(np.abs(samples - reference).max())
    print(f"{export.name}: max |graph - sampler| = {diffs}")
    assert all(diff <= TOLERANCE for diff in diffs.values()), diffs
    assert np.abs(reference).max() > 0.1  # not a trivially zero sample


def test_gpu_step_final_denoise_uses_the_graph_itself(export):
    """With final_denoise, the gpu_step path needs no score.onnx (step_size = 2 sigma^2, z = 0)."""
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    reference = _samples(pipe, "sampler", steps=None)
    pipe.manifest = {**pipe.manifest, "graphs": {k: v for k, v in pipe.manifest["graphs"].items() if k != "score"}}
    samples = _samples(pipe, "gpu_step", steps=None)
    assert np.abs(samples - reference).max() <= TOLERANCE


def test_gpu_step_stepper_prefetches_the_contract_noise(export):
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    stepper = pipe.stepper(3, "gpu_step")
    assert isinstance(stepper, GpuStepStepper) and stepper.kind == "gpu_step.onnx + IO binding"
    seeds = np.array([7, 8, 9], np.int64)
    stepper.reset(np.zeros((3, *pipe.sample_shape), np.float32), seeds)
    stepper.step(0, 0.0, 4)
    counter, future = stepper._pending
    assert counter == 5  # the next step's noise is already being drawn
    np.testing.assert_array_equal(future.result(), counter_normal(seeds, 5, pipe.sample_shape))
    np.testing.assert_array_equal(stepper.noise(5), counter_normal(seeds, 5, pipe.sample_shape))
    np.testing.assert_array_equal(stepper.noise(9), counter_normal(seeds, 9, pipe.sample_shape))  # not prefetched: drawn


def test_mode_shorthand_and_conflicts(export):
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
    assert pipe.choose_graph("auto") == "sampler"  # CPU: fused
    assert pipe.choose_graph("fused") == "sampler"
    assert pipe.choose_graph("stepwise") == "step"
    assert pipe.choose_graph("auto", callback=lambda *a: None) == "step"
    assert pipe.choose_graph("stepwise", "gpu_step") == "gpu_step"
    with pytest.raises(ValueError, match="conflicts with graph='gpu_step'"):
        pipe.choose_graph("fused", "gpu_step")
    with pytest.raises(ValueError, match="conflicts with graph='gpu_sampler'"):
        pipe.choose_graph("stepwise", "gpu_sampler")
    with pytest.raises(ValueError, match="`graph` must be one of"):
        pipe.choose_graph("auto", "fast")
    with pytest.raises(ValueError, match="callback_on_step_end"):
        pipe.choose_graph("auto", "gpu_sampler", callback=lambda *a: None)
    del pipe.manifest["graphs"]["gpu_sampler"]  # the pipeline's graph table is the manifest's
    with pytest.raises(ExportDirectoryError, match=r"gpu_sampler\.onnx"):
        pipe.choose_graph("auto", "gpu_sampler")


def test_auto_on_cuda_prefers_gpu_step_with_a_cuda_graph(export, monkeypatch, caplog):
    """Rule and wiring with every buffer on CPU (no GPU here): auto picks gpu_step and opens a static-shape
    CUDA-graph session; when capture fails it falls back to IO binding, logged once, not retried."""
    import types
    from pathlib import Path

    from ncsn_runtime import sessions as sessions_module
    from ncsn_runtime.providers import CUDA_PROVIDER, Device

    reference = _samples(NCSNPipeline.from_pretrained(export, provider="cpu"), "sampler")
    real_open = sessions_module.open_session
    for fail in (False, True):
        pipe = NCSNPipeline.from_pretrained(export, provider="cpu")
        pipe.device = types.SimpleNamespace(kind="cpu", device_id=0, is_cuda=True, provider=CUDA_PROVIDER)
        requests = []

        def fake_open(path, device, fail=fail, requests=requests, **kwargs):
            requests.append((Path(path).name, kwargs.get("cuda_graph"), kwargs.get("free_dimensions")))
            if fail and kwargs.get("cuda_graph"):
                raise RuntimeError("graph capture refused")
            return real_open(path, Device("cpu"), free_dimensions=kwargs.get("free_dimensions"))

        monkeypatch.setattr(sessions_module, "open_session", fake_open)
        assert pipe.choose_graph("auto") == "gpu_step"
        with caplog.at_level(logging.WARNING, logger="ncsn_runtime"):
            samples = _samples(pipe)
            _samples(pipe, batch=4)
        assert pipe.last_run.graph == "gpu_step"
        captured = [r for r in requests if r[1]]
        if fail:
            assert pipe.last_run.engine == GpuStepStepper.kind
            assert captured == [("gpu_step.onnx", True, {"batch": 3})]  # tried once, not again for batch 4
            assert caplog.text.count("CUDA graph capture of gpu_step.onnx failed") == 1
        else:
            assert pipe.last_run.engine == GpuStepCudaGraphStepper.kind
            assert captured == [("gpu_step.onnx", True, {"batch": 3}), ("gpu_step.onnx", True, {"batch": 4})]
        assert np.abs(samples - reference).max() <= TOLERANCE


@pytest.mark.parametrize("graph", SAMPLING_GRAPHS)
def test_cli_graph_flag(export, graph, tmp_path, capsys):
    reference = _samples(NCSNPipeline.from_pretrained(export, provider="cpu"), "sampler", steps=None, seed=11, batch=2)
    output = tmp_path / "samples.npy"
    code = sample_main([str(export), "-n", "2", "--seed", "11", "--graph", graph, "--provider", "cpu", "-o", str(output),
                        "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert f"graph {graph} ({GRAPHS[graph].file}" in capsys.readouterr().out
    assert np.abs(np.load(output) - reference).max() <= TOLERANCE


def test_cli_graph_conflicts_with_mode(export, tmp_path, capsys):
    code = sample_main([str(export), "-n", "1", "--graph", "gpu_step", "--mode", "fused", "-o", str(tmp_path / "x.npy")])
    assert code == 2
    assert "conflicts with graph='gpu_step'" in capsys.readouterr().err


def test_cli_graph_choices_are_the_contract_keys():
    from ncsn_runtime.cli import GRAPH_CHOICES

    assert sorted(GRAPH_CHOICES) == sorted(SAMPLING_GRAPHS)
