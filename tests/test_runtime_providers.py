"""Provider resolution (with a stand-in onnxruntime) and the IO-binding steppers, on CPU; CUDA checks skip without a GPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort
import pytest
from host_exports import build_export
from ncsn_runtime import NCSNPipeline, providers
from ncsn_runtime.providers import CPU_PROVIDER, CUDA_PROVIDER, Device, ProviderError, normalize_provider, open_session
from ncsn_runtime.steppers import BoundStepper, CudaGraphStepper, GpuStepCudaGraphStepper


class _FakeSession:
    """Stands in for InferenceSession: records its providers and 'gets' CUDA only when ``cuda_works``."""

    cuda_works = False
    fails = False
    opened: ClassVar[list] = []

    def __init__(self, path, sess_options=None, providers=()):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        _FakeSession.opened.append(list(providers))
        if _FakeSession.fails and CUDA_PROVIDER in names:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        self._providers = [n for n in names if n != CUDA_PROVIDER or _FakeSession.cuda_works]

    def get_providers(self):
        return self._providers


@pytest.fixture
def fake_ort(monkeypatch):
    def install(listed, cuda_works=False, fails=False):
        monkeypatch.setattr(providers, "available_providers", lambda: list(listed))
        monkeypatch.setattr(providers, "session_factory", _FakeSession)
        _FakeSession.cuda_works, _FakeSession.fails, _FakeSession.opened = cuda_works, fails, []
        return _FakeSession

    return install


def test_normalize_provider():
    names = ("auto", "CPU", "cuda", "CUDAExecutionProvider", "gpu")
    assert [normalize_provider(p) for p in names] == ["auto", "cpu", "cuda", "cuda", "cuda"]
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        normalize_provider("tensorrt")


def test_auto_without_onnxruntime_gpu_uses_cpu(fake_ort, caplog):
    fake = fake_ort([CPU_PROVIDER])
    with caplog.at_level(logging.INFO, logger="ncsn_runtime"):
        device, session = providers.resolve_device("auto", "score.onnx")
    assert device == Device("cpu") and session is None
    assert fake.opened == []  # nothing to probe: sessions open on first use
    assert "offers no CUDAExecutionProvider" in caplog.text


@pytest.mark.parametrize("fails", [False, True])
def test_auto_with_listed_but_unusable_cuda_falls_back_and_says_why(fake_ort, caplog, fails):
    """onnxruntime-gpu lists CUDA even without a GPU: only session.get_providers() is trusted."""
    fake = fake_ort([CUDA_PROVIDER, CPU_PROVIDER], cuda_works=False, fails=fails)
    with caplog.at_level(logging.INFO, logger="ncsn_runtime"):
        device, session = providers.resolve_device("auto", "score.onnx")
    assert device.kind == "cpu" and session is None
    assert len(fake.opened) == 1 and fake.opened[0][0][0] == CUDA_PROVIDER  # one CUDA attempt, judged by the session
    assert "listed but unusable" in caplog.text


def test_auto_with_working_cuda_uses_it(fake_ort):
    fake = fake_ort([CUDA_PROVIDER, CPU_PROVIDER], cuda_works=True)
    device, _ = providers.resolve_device("auto", "score.onnx", device_id=1)
    assert device == Device("cuda", 1) and device.provider == CUDA_PROVIDER
    assert fake.opened == [[(CUDA_PROVIDER, {"device_id": "1", "use_tf32": "0"}), CPU_PROVIDER]]


def test_cuda_request_is_an_error_not_a_fallback(fake_ort):
    fake_ort([CPU_PROVIDER])
    with pytest.raises(ProviderError, match="needs onnxruntime-gpu"):
        providers.resolve_device("cuda", "score.onnx")
    fake_ort([CUDA_PROVIDER, CPU_PROVIDER], cuda_works=False)
    with pytest.raises(ProviderError, match=r"got only .*CPUExecutionProvider"):
        providers.resolve_device("cuda", "score.onnx")
    fake_ort([CUDA_PROVIDER, CPU_PROVIDER], fails=True)
    with pytest.raises(RuntimeError, match="no CUDA-capable device"):
        providers.resolve_device("cuda", "score.onnx")


def test_cpu_request_never_asks_for_cuda(fake_ort):
    fake = fake_ort([CUDA_PROVIDER, CPU_PROVIDER], cuda_works=True)
    device, session = providers.resolve_device("cpu", "score.onnx")
    assert device.kind == "cpu" and session is None and fake.opened == []
    with pytest.raises(ValueError, match="device_id"):
        providers.resolve_device("auto", "score.onnx", device_id=-1)


def test_provider_list_for_cuda_graph():
    assert providers.provider_list(Device("cpu"), cuda_graph=True) == [CPU_PROVIDER]
    assert providers.provider_list(Device("cuda", 2), cuda_graph=True) == [
        (CUDA_PROVIDER, {"device_id": "2", "use_tf32": "0", "enable_cuda_graph": "1"}), CPU_PROVIDER]


# -- IO binding on CPU --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


def _step_feeds(x, seeds, level, alpha, counter):
    return {"sample": x, "seed": np.asarray(seeds, np.int64), "timestep": np.array(level, np.int64),
            "step_size": np.array(alpha, np.float32), "counter": np.array(counter, np.int64)}


def test_bound_stepper_matches_session_run_and_keeps_its_buffers(toy_dir: Path):
    session = open_session(toy_dir / "step.onnx", Device("cpu"))
    stepper = BoundStepper(session, Device("cpu"), (3, 2))
    pointers = stepper.buffer_pointers()
    x0 = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    seeds = np.array([9, 8, 7])
    stepper.reset(x0, seeds)
    expected = x0
    for level, alpha, counter in [(0, 0.5, 0), (0, 0.5, 1), (4, 0.1, 2)]:
        stepper.step(level, alpha, counter)
        expected = session.run(None, _step_feeds(expected, seeds, level, alpha, counter))[0]
        np.testing.assert_array_equal(stepper.read(), expected)
    assert stepper.buffer_pointers() == pointers  # ping-pong between two fixed buffers, never re-allocated
    snapshot = stepper.read()
    snapshot[:] = 0  # read() is a copy, not a view of the device buffer
    np.testing.assert_array_equal(stepper.read(), expected)
    stepper.reset(x0, seeds)
    stepper.step(0, 0.5, 0)
    np.testing.assert_array_equal(stepper.read(), session.run(None, _step_feeds(x0, seeds, 0, 0.5, 0))[0])
    assert stepper.buffer_pointers() == pointers
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        stepper.write(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="seeds"):
        stepper.reset(x0, [1, 2])


def test_graph_stepper_logic_on_a_static_shape_session(toy_dir: Path):
    """The CUDA-graph stepper's session has the batch fixed; on CPU its run options are inert, the logic is the same."""
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    dims = pipe.graphs.batch_dimensions("step", 3)
    assert dims == {"batch": 3}
    session = open_session(toy_dir / "step.onnx", Device("cpu"), free_dimensions=dims)
    stepper = CudaGraphStepper(session, Device("cpu"), (3, 2))
    seeds = np.array([1, 2, 3])
    x0 = np.ones((3, 2), np.float32)
    stepper.reset(x0, seeds)
    stepper.step(2, 0.25, 5)
    stepper.step(2, 0.25, 6)
    expected = session.run(None, _step_feeds(x0, seeds, 2, 0.25, 5))[0]
    expected = session.run(None, _step_feeds(expected, seeds, 2, 0.25, 6))[0]
    np.testing.assert_array_equal(stepper.read(), expected)
    with pytest.raises(Exception, match="invalid dimensions"):  # the batch really is static now
        session.run(None, _step_feeds(np.ones((2, 2), np.float32), [1, 2], 0, 0.1, 0))


def test_pipeline_reuses_one_stepper_per_batch_size(toy_dir: Path):
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    first = pipe.stepper(4)
    assert pipe.stepper(4) is first and pipe.stepper(2) is not first
    a = pipe(batch_size=4, seed=0, num_inference_steps=2, mode="stepwise", progress=False).images
    b = pipe(batch_size=4, seed=0, num_inference_steps=2, mode="stepwise", progress=False).images
    np.testing.assert_array_equal(a, b)
    assert pipe.stepper(4).buffer_pointers() == first.buffer_pointers()


def test_auto_mode_rule(toy_dir: Path):
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    assert pipe.choose_mode("auto") == "fused"  # CPU: a measured tie, so the one fused call
    assert pipe.choose_mode("auto", callback=lambda *a: None) == "stepwise"
    pipe.device = Device("cuda")  # rule only; nothing runs
    assert pipe.choose_mode("auto") == "stepwise"  # CUDA: the CUDA-graph step
    for name in ("step", "gpu_step"):  # the pipeline's graph table is the manifest's
        pipe.manifest["graphs"].pop(name, None)
    assert pipe.choose_mode("auto") == "fused"  # CUDA without step.onnx / gpu_step.onnx: fused
    for name in ("sampler", "gpu_sampler"):
        pipe.manifest["graphs"].pop(name, None)
    assert pipe.choose_mode("auto") == "stepwise"  # only score.onnx left


# -- real CUDA (skipped without a GPU) -----------------------------------------------------------------
def _cuda_reason(path: Path) -> str | None:
    if CUDA_PROVIDER not in ort.get_available_providers():
        return "onnxruntime-gpu is not installed (no CUDAExecutionProvider)"
    try:
        open_session(path, Device("cuda"))
    except Exception as error:
        return f"CUDAExecutionProvider is listed but no CUDA device answered: {error}"
    return None


def test_cuda_fused_stepwise_and_cuda_graph_agree_with_cpu(toy_dir: Path):
    reason = _cuda_reason(toy_dir / "score.onnx")
    if reason:
        pytest.skip(reason)
    cpu = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    cuda = NCSNPipeline.from_pretrained(toy_dir, provider="cuda")
    reference = cpu(batch_size=16, seed=3, num_inference_steps=3, mode="fused", output_type="raw", progress=False).images
    fused = cuda(batch_size=16, seed=3, num_inference_steps=3, mode="fused", output_type="raw", progress=False).images
    # gpu_step (every node on CUDA) is captured; step.onnx's bitwise noise nodes run on CPU, so it cannot be
    stepwise = cuda(batch_size=16, seed=3, num_inference_steps=3, graph="gpu_step", output_type="raw", progress=False).images
    assert cuda.last_run.engine == GpuStepCudaGraphStepper.kind, cuda.cuda_graph_error
    again = cuda(batch_size=16, seed=3, num_inference_steps=3, graph="gpu_step", output_type="raw", progress=False).images
    for samples in (fused, stepwise, again):
        assert np.abs(samples - reference).max() <= 1e-4


def _pretend_cuda(pipe: NCSNPipeline, monkeypatch, fail: bool) -> list:
    """Make ``pipe`` take its CUDA branches while every buffer and session stays on CPU; record graph-session requests."""
    import types

    from ncsn_runtime import sessions as sessions_module

    pipe.device = types.SimpleNamespace(kind="cpu", device_id=0, is_cuda=True, provider=CUDA_PROVIDER)
    requests = []
    real_open = sessions_module.open_session

    def fake_open(path, device, **kwargs):
        requests.append((Path(path).name, kwargs.get("cuda_graph"), kwargs.get("free_dimensions")))
        if fail and kwargs.get("cuda_graph"):
            raise RuntimeError("This session cannot use the graph capture feature: not all nodes are on CUDA")
        return real_open(path, Device("cpu"), free_dimensions=kwargs.get("free_dimensions"))

    monkeypatch.setattr(sessions_module, "open_session", fake_open)
    return requests


def test_cuda_graph_path_is_taken_and_matches(toy_dir: Path, monkeypatch):
    reference = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    expected = reference(batch_size=3, seed=2, num_inference_steps=2, mode="stepwise", output_type="raw", progress=False).images
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    requests = _pretend_cuda(pipe, monkeypatch, fail=False)
    samples = pipe(batch_size=3, seed=2, num_inference_steps=2, graph="step", output_type="raw", progress=False).images
    assert pipe.last_run.engine == CudaGraphStepper.kind
    assert requests == [("step.onnx", True, {"batch": 3})]  # a static-shape session, one per batch size
    np.testing.assert_array_equal(samples, expected)


def test_cuda_graph_failure_falls_back_to_io_binding_once(toy_dir: Path, monkeypatch, caplog):
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    requests = _pretend_cuda(pipe, monkeypatch, fail=True)
    with caplog.at_level(logging.WARNING, logger="ncsn_runtime"):
        first = pipe(batch_size=2, seed=0, num_inference_steps=2, graph="step", output_type="raw", progress=False).images
    assert pipe.last_run.engine == BoundStepper.kind and "graph capture" in pipe.cuda_graph_error
    assert "CUDA graph capture of step.onnx failed" in caplog.text
    pipe(batch_size=4, seed=0, num_inference_steps=2, graph="step", output_type="raw", progress=False)
    assert [r for r in requests if r[1]] == [("step.onnx", True, {"batch": 2})]  # not retried for batch 4
    cpu = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    np.testing.assert_array_equal(first, cpu(batch_size=2, seed=0, num_inference_steps=2, mode="stepwise", output_type="raw",
                                             progress=False).images)
