"""ncsn-triton: the model repository parses as Triton's ModelConfig, matches its model.onnx, and batching
requests together gives every request the samples ncsn-sample gives for its seeds (onnxruntime, and a
real Triton server when one is installed: tests/triton_python_model.py says which and why)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="ncsn-triton needs the onnx package (the [triton] extra)")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient[grpc] is not installed (the [triton] extra)")

import onnxruntime as ort  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from host_exports import build_export, python_samples  # noqa: E402
from ncsn_runtime import triton  # noqa: E402
from ncsn_runtime.noise import initial_sample  # noqa: E402

ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
REQUESTS = ([5, 6, 7], [100, 101], [42], [9, 10, 11, 12])


@pytest.fixture(scope="module")
def toy():
    return build_export("toy-gmm")


@pytest.fixture(scope="module")
def repo(toy, tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-repo")
    model = triton.write_repository(toy, root, max_batch_size=16, instance_count=2)
    return root, model


def parse_config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def feeds(seeds, init_range=(-8.0, 8.0), shape=(2,)):
    seeds = np.asarray(seeds, dtype=np.int64)
    return {"sample": initial_sample(seeds, shape, *init_range), "seed": seeds}


def test_config_parses_as_triton_model_config_and_matches_model_onnx(repo):
    _, model = repo
    config = parse_config(model.config_path)
    assert config.name == model.name == model.directory.name == "toy-gmm"
    assert config.backend == "onnxruntime" and config.max_batch_size == 16
    assert config.HasField("dynamic_batching")
    assert [(group.count, group.kind) for group in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]

    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        by_name = {item.name: item for item in actual}
        assert sorted(by_name) == sorted(item.name for item in declared)
        for item in declared:
            graph = by_name[item.name]
            assert model_config_pb2.DataType.Name(item.data_type) == ORT_TO_TRITON[graph.type]
            assert isinstance(graph.shape[0], str), f"{item.name}: dim 0 must be dynamic for Triton's batching"
            # Triton feeds [batch, *dims], or [batch, *reshape.shape] when a reshape is given.
            per_sample = list(item.reshape.shape) if item.HasField("reshape") else list(item.dims)
            assert list(graph.shape[1:]) == per_sample, item.name
    assert sorted(item.name for item in session.get_inputs()) == ["sample", "seed"], "schedule inputs must be baked in"


def test_config_for_image_models_and_gpu_kind():
    text = triton.config_text("digits", "gpu_sampler", (1, 28, 28), max_batch_size=8, instance_count=1, kind="gpu",
                              max_queue_delay_us=500)
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert [list(item.dims) for item in config.input] == [[1, 28, 28], [1]]
    assert [list(item.dims) for item in config.output] == [[1, 28, 28]]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_batched_requests_give_each_request_its_ncsn_sample_samples(repo, toy):
    _, model = repo
    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    batch = [feeds(seeds) for seeds in REQUESTS]  # what Triton's dynamic batcher concatenates along dim 0
    out = session.run(["final_sample"], {name: np.concatenate([f[name] for f in batch]) for name in ("sample", "seed")})[0]
    parts = np.split(out, np.cumsum([len(seeds) for seeds in REQUESTS])[:-1])
    for seeds, part in zip(REQUESTS, parts, strict=True):
        np.testing.assert_array_equal(part, python_samples(toy, seeds, len(seeds), "fused"))


def test_baked_step_count_and_cli(toy, tmp_path, capsys):
    root = tmp_path / "repo"
    assert triton.main([str(toy), "--output", str(root), "--num-inference-steps", "3", "--model-name", "toy3"]) == 0
    assert "3 levels x 100 steps" in capsys.readouterr().out
    session = ort.InferenceSession(str(root / "toy3" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["final_sample"], feeds([3, 4]))[0]
    np.testing.assert_array_equal(got, python_samples(toy, [3, 4], 2, "fused", num_inference_steps=3))

    before = (root / "toy3" / "config.pbtxt").read_text()
    assert triton.main([str(toy), "--output", str(root), "--model-name", "toy3"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert (root / "toy3" / "config.pbtxt").read_text() == before
    assert triton.main([str(toy), "--output", str(root), "--model-name", "toy3", "--force", "--max-batch-size", "4"]) == 0
    assert parse_config(root / "toy3" / "config.pbtxt").max_batch_size == 4
    assert triton.main([str(toy), "--output", str(root), "--max-batch-size", "0"]) == 2
    assert "--max-batch-size" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["toy3"], "a failed run left files behind"
    # gpu_sampler (noise from ops with CUDA kernels) serves the same samples as the fused sampler
    code = triton.main([str(toy), "--output", str(root), "--graph", "gpu_sampler", "--model-name", "toy-gpu"])
    assert code == 0, capsys.readouterr().err
    session = ort.InferenceSession(str(root / "toy-gpu" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["final_sample"], feeds([3, 4]))[0]
    np.testing.assert_allclose(got, python_samples(toy, [3, 4], 2, "fused"), atol=1e-5, rtol=0)


# -- a real Triton server -----------------------------------------------------------------------------------
def pytriton_server() -> tuple[Path, Path] | str:
    """(tritonserver binary, the wheel's bundled libs) from PyPI's nvidia-pytriton, or why there is none."""
    spec = importlib.util.find_spec("pytriton")  # not imported: its Python side pins numpy<2
    if spec is None or not spec.submodule_search_locations:
        return "no Triton server installed (scripts/setup-dev.sh installs nvidia-pytriton --no-deps where its wheel exists)"
    package = Path(next(iter(spec.submodule_search_locations)))
    binary = package / "tritonserver" / "bin" / "tritonserver"
    libs = package.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    libpython = Path(sysconfig.get_config_var("LIBDIR") or "/") / f"libpython{version}.so.1.0"
    if not binary.is_file() or not stub.is_file():
        return f"nvidia-pytriton has no tritonserver binary or python {version} backend stub"
    if not libpython.is_file() and not Path(f"/lib/x86_64-linux-gnu/libpython{version}.so.1.0").is_file():
        return f"the python backend stub needs libpython{version}.so.1.0 (a shared-library Python)"
    return binary, libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(binary: Path, libs: Path, repo_dir: Path, backends: Path, log: Path) -> tuple[subprocess.Popen, int]:
    grpc_port = free_port()
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([str(libs), sysconfig.get_config_var("LIBDIR") or ""]))
    args = [str(binary), f"--model-repository={repo_dir}", f"--backend-directory={backends}", "--allow-http=false",
            "--allow-metrics=false", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}", "--exit-timeout-secs=2"]
    with open(log, "wb") as handle:
        process = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env)
    return process, grpc_port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_real_triton_server_batches_requests_without_changing_samples(toy, tmp_path):
    found = pytriton_server()
    if isinstance(found, str):
        pytest.skip(found)
    grpc = pytest.importorskip("tritonclient.grpc")
    binary, libs = found
    package = binary.parents[1]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)
    for item in (package / "backends" / "python").iterdir():
        (backends / "python" / item.name).symlink_to(item)
    stub = package / "python_backend_stubs" / version / "triton_python_backend_stub"
    (backends / "python" / "triton_python_backend_stub").symlink_to(stub)
    # A 0.3 s batching window, so that the concurrent requests below land in one batch.
    model = triton.write_repository(toy, tmp_path / "repo", max_batch_size=16, max_queue_delay_us=300_000)

    # 1. The exact repository ncsn-triton wrote: Triton parses config.pbtxt and stops only at the missing backend.
    process, _ = start_server(binary, libs, model.directory.parent, backends, tmp_path / "ort.log")
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        stop(process)
    log = (tmp_path / "ort.log").read_text(errors="replace")
    assert "unable to find backend library for backend 'onnxruntime'" in log, log[-3000:]

    # 2. The same config and model.onnx, executed by the python backend (tests/triton_python_model.py).
    served = tmp_path / "served"
    shutil.copytree(model.directory, served / model.name)
    config = served / model.name / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "onnxruntime"', 'backend: "python"'))
    source = (Path(__file__).with_name("triton_python_model.py")).read_text()
    paths = [str(Path(triton.__file__).parents[1]), *sys.path[1:]]
    (served / model.name / "1" / "model.py").write_text(source.replace("SYS_PATH: list = []", f"SYS_PATH: list = {paths!r}"))
    process, port = start_server(binary, libs, served, backends, tmp_path / "server.log")
    try:
        client = grpc.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        while True:
            try:
                if client.is_model_ready(model.name):
                    break
            except Exception:  # not listening yet
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "Triton did not get ready in 90 s"
            time.sleep(0.5)

        def infer(seeds):
            f = feeds(seeds)
            sample = grpc.InferInput("sample", list(f["sample"].shape), "FP32")
            sample.set_data_from_numpy(f["sample"])
            seed = grpc.InferInput("seed", [len(seeds), 1], "INT64")
            seed.set_data_from_numpy(f["seed"][:, None])
            return client.infer(model.name, [sample, seed]).as_numpy("final_sample")

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(REQUESTS)) as pool:  # concurrent requests, so the dynamic batcher can group them
            results = list(pool.map(infer, REQUESTS))
    finally:
        stop(process)
    for seeds, result in zip(REQUESTS, results, strict=True):
        np.testing.assert_array_equal(result, python_samples(toy, seeds, len(seeds), "fused"))
    log = (tmp_path / "server.log").read_text(errors="replace")
    grouped = [int(count) for count in re.findall(r"ncsn-test batch of (\d+) requests", log)]
    assert sum(grouped) == len(REQUESTS) and max(grouped) > 1, f"the dynamic batcher grouped no requests: {grouped}"
    assert "seed shapes [(" in log  # seed [b, 1] arrived reshaped to the graph's [b]
