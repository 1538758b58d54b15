"""Nothing hangs (issue 18, part 2): every host opens only regular files, every ``session.run`` in every mode stops
on Ctrl-C, and every check we run ourselves has a time bound.

The slow graphs are contract-shaped graphs (the contract's inputs and output) whose output is an ONNX ``Loop`` of
10^12 identity iterations over ``sample``: one call never returns on its own, and onnxruntime checks
``RunOptions.terminate`` between the loop's iterations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building the slow graphs needs the onnx package")

import onnx
from host_exports import ROOT, build_export, node_ready, run_node
from ncsn_runtime.contract import GRAPHS
from ncsn_runtime.fileio import open_regular, read_json_object
from ncsn_runtime.interrupt import RunTimeoutError, quiet_run_options, run_interruptibly
from onnx import TensorProto, helper
from untrusted import copy_export, rehash

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runtime")]))
ONNX_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
FOREVER = 10**12  # Loop iterations: far beyond any test's patience


def slow_graph(key: str, sample_shape: tuple[int, ...], trip_count: int = FOREVER, trip_input: bool = False) -> onnx.ModelProto:
    """A graph with contract ``key``'s I/O whose output is ``sample`` after ``trip_count`` identity Loop iterations
    (``trip_input``: the count is an extra int64 [] input ``trips`` instead, for the unit tests)."""
    spec = GRAPHS[key]

    def info(tensor) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(tensor.name, ONNX_TYPES[tensor.dtype], tensor.concrete_shape(sample_shape))

    value = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Identity", ["x"], ["x_out"])], "body",
        [value("i", TensorProto.INT64, []), value("cond", TensorProto.BOOL, []), value("x", TensorProto.FLOAT, None)],
        [value("cond_out", TensorProto.BOOL, []), value("x_out", TensorProto.FLOAT, None)])
    inputs = [info(tensor) for tensor in spec.inputs]
    nodes = [helper.make_node("Constant", [], ["keep_going"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True]))]
    if trip_input:
        inputs.append(value("trips", TensorProto.INT64, []))
    else:
        trips = helper.make_tensor("m", TensorProto.INT64, [], [trip_count])
        nodes.append(helper.make_node("Constant", [], ["trips"], value=trips))
    nodes.append(helper.make_node("Loop", ["trips", "keep_going", "sample"], [spec.outputs[0].name], body=body))
    graph = helper.make_graph(nodes, f"slow_{key}", inputs, [info(spec.outputs[0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def toy() -> Path:
    return build_export("toy-gmm")


def with_slow_graph(toy: Path, target: Path, key: str) -> Path:
    """A copy of the toy export whose ``key`` graph is slow (hash updated, so it passes every check)."""
    copy_export(toy, target)
    onnx.save(slow_graph(key, (2,)), str(target / GRAPHS[key].file))
    rehash(target, GRAPHS[key].file)
    return target


def with_fifo(toy: Path, target: Path, relative: str) -> Path:
    """A copy of the toy export where ``relative`` is a FIFO that nobody ever writes to."""
    copy_export(toy, target)
    (target / relative).unlink()
    os.mkfifo(target / relative)
    return target


# -- every host opens only regular files ------------------------------------------------------------------------------
def test_python_readers_refuse_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a regular file"):
        open_regular(fifo)  # a plain open() would block here until a writer appears
    with pytest.raises(FileNotFoundError):
        read_json_object(fifo)
    assert time.perf_counter() - start < 5
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json_object(tmp_path / "ok.json") == {"a": 1}


@pytest.mark.parametrize("relative", ["manifest.json", "sampler.onnx", "scheduler/scheduler_config.json"])
def test_ncsn_sample_refuses_a_fifo_in_the_export(toy, tmp_path, relative):
    export = with_fifo(toy, tmp_path / "fifo", relative)
    proc = subprocess.run([sys.executable, "-m", "ncsn_runtime.cli", str(export), "-n", "2", "--no-progress",
                           "-o", str(tmp_path / "out.npy")], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode in (1, 2), proc.stderr
    assert "Traceback" not in proc.stderr and relative.split("/")[-1] in proc.stderr, proc.stderr


@pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))
@pytest.mark.parametrize("relative", ["manifest.json", "sampler.onnx", "scheduler/scheduler_config.json"])
def test_node_cli_refuses_a_fifo_in_the_export(toy, tmp_path, relative):
    """Before: `node cli.mjs` waited forever in readFile on the FIFO (issue 18)."""
    export = with_fifo(toy, tmp_path / "fifo", relative)
    proc = run_node(["runtime/js/cli.mjs", str(export), "--num-samples", "2", "--output", str(tmp_path / "out.npy")], timeout=120)
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr
    assert "not a regular file" in proc.stderr or "is missing" in proc.stderr, proc.stderr
    assert relative.split("/")[-1] in proc.stderr
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.skipif(node_ready() is not None, reason=str(node_ready()))
def test_web_server_keeps_answering_after_requests_for_a_fifo(toy, tmp_path):
    """Before: each request for a FIFO held one of libuv's 4 threads in open(), and after 4 every request hung."""
    export = with_fifo(toy, tmp_path / "fifo", "gpu_step.onnx")
    os.symlink("gpu_step.onnx", export / "link-to-fifo.onnx")  # a symlink inside the export, to the FIFO
    script = """
import { serve } from './examples/web/serve.mjs';
const server = await serve({ exportDir: process.argv[1], port: 0 });
const base = `http://127.0.0.1:${server.address().port}`;
const statuses = [];
for (let i = 0; i < 12; i++) {
  for (const name of ['gpu_step.onnx', 'link-to-fifo.onnx']) {
    const response = await fetch(`${base}/export/${name}`, { signal: AbortSignal.timeout(10000) });
    statuses.push(response.status);
  }
}
const manifest = await fetch(`${base}/export/manifest.json`, { signal: AbortSignal.timeout(10000) });
server.close();
console.log(JSON.stringify({ statuses, manifest: manifest.status }));
"""
    proc = run_node(["--input-type=module", "-e", script, str(export)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"statuses": [404] * 24, "manifest": 200}


@pytest.mark.parametrize("relative", ["manifest.json", "sampler.onnx", "scheduler/scheduler_config.json"])
def test_c_host_refuses_a_fifo_in_the_export(toy, tmp_path, relative):
    """examples/c/ncsn_sample: fopen() of a FIFO blocked until a writer came; now refused (skips like test_c_host)."""
    from test_c_host import BINARY, BUILD_SCRIPT, onnxruntime_library

    if subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300).returncode != 0:
        pytest.skip("examples/c cannot be built here (see tests/test_c_host.py)")
    library = onnxruntime_library()
    if library is None:
        pytest.skip("the onnxruntime wheel ships no libonnxruntime.so (onnxruntime/capi/)")
    export = with_fifo(toy, tmp_path / "fifo", relative)
    proc = subprocess.run([str(BINARY), str(export), "--seed", "0", "--num-samples", "2", "--output", str(tmp_path / "c.npy"),
                           "--ort-lib", str(library)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "is not a regular file" in proc.stderr and relative in proc.stderr, proc.stderr


# -- every session.run stops on Ctrl-C --------------------------------------------------------------------------------
@pytest.mark.parametrize("graph", ["score", "step", "gpu_step", "sampler"])
def test_ctrl_c_stops_one_slow_graph_call(toy, tmp_path, graph):
    """One call of a slow graph in every mode (`--graph score` / `step` / `gpu_step` stepwise, `sampler` fused):
    SIGINT must end ncsn-sample within 3 s with exit 130. Before: only the fused call was interruptible."""
    export = with_slow_graph(toy, tmp_path / "slow", graph)
    command = [sys.executable, "-m", "ncsn_runtime.cli", str(export), "-n", "2", "--graph", graph, "--no-progress",
               "-o", str(tmp_path / "out.npy")]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # imports, checks, session creation: then it is inside the first (endless) run
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    waited = time.perf_counter() - start
    assert proc.returncode == 130, err
    assert "interrupted; nothing was written" in err
    assert waited < 3.0, f"took {waited:.1f} s to stop"
    assert not (tmp_path / "out.npy").exists()


def test_a_stopped_run_leaves_its_run_options_reusable(tmp_path):
    """Steppers keep their RunOptions: after a run was terminated (here by its deadline) the next one must run."""
    import onnxruntime as ort

    path = tmp_path / "slow.onnx"
    onnx.save(slow_graph("score", (2,), trip_input=True), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"sample": np.ones((3, 2), np.float32), "timestep": np.zeros(3, np.int64)}
    options = quiet_run_options()
    start = time.perf_counter()
    with pytest.raises(RunTimeoutError, match=r"did not finish within 0\.5 s"):
        run_interruptibly(session, None, {**feeds, "trips": np.array(FOREVER)}, options, timeout_s=0.5)
    assert time.perf_counter() - start < 5
    assert options.terminate is False
    out = run_interruptibly(session, None, {**feeds, "trips": np.array(3)}, options, timeout_s=30)[0]
    np.testing.assert_array_equal(out, feeds["sample"])


def test_sigint_armed_stops_a_run_and_restores_the_handlers(tmp_path):
    """The stepwise loop installs the handler once (``sigint_armed``): Ctrl-C still stops the run in progress,
    raises between runs like Python's default handler, and the previous handler and wakeup fd come back."""
    import threading

    import onnxruntime as ort
    from ncsn_runtime.interrupt import sigint_armed

    path = tmp_path / "slow.onnx"
    onnx.save(slow_graph("score", (2,), trip_input=True), str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"sample": np.ones((3, 2), np.float32), "timestep": np.zeros(3, np.int64)}
    before = signal.getsignal(signal.SIGINT)
    options = quiet_run_options()
    with sigint_armed():
        for _ in range(3):  # quick runs: nothing happens
            run_interruptibly(session, None, {**feeds, "trips": np.array(2)}, options)
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            run_interruptibly(session, None, {**feeds, "trips": np.array(FOREVER)}, options)
        assert time.perf_counter() - start < 5
        assert options.terminate is False
        with pytest.raises(KeyboardInterrupt):  # between runs: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        out = run_interruptibly(session, None, {**feeds, "trips": np.array(3)}, options)[0]
        np.testing.assert_array_equal(out, feeds["sample"])
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.set_wakeup_fd(-1) == -1  # ours was removed again
