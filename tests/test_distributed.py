"""Ray batch generation (ncsn_runtime.distributed, ncsn-sample --engine ray) on a local 2-CPU Ray.

Same samples as one process for any worker count and split, resumable shard directories, a worker
killed mid-job, and ``import ncsn_runtime`` staying free of ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed (pip install 'ncsn-export[ray]')")

from host_exports import build_export, python_samples  # noqa: E402
from ncsn_runtime import distributed  # noqa: E402
from ncsn_runtime.cli import main as sample_main  # noqa: E402

SEED = 11


def crash_once_actor(marker: Path) -> type:
    """A SamplerActor that kills its worker process (os._exit, as a lost node would) on its first item, once per marker."""
    path = str(marker)

    class CrashOnceActor(distributed.SamplerActor):
        def __call__(self, batch):
            if not os.path.exists(path):
                Path(path).write_text("crashed once")
                os._exit(1)
            return super().__call__(batch)

    return CrashOnceActor


class FailOnShardActor(distributed.SamplerActor):
    """Fails the job on shard 4 (samples 32..39) after the other shards had time to finish: a killed job, to be rerun."""

    def __call__(self, batch):
        if 32 in batch["start"]:
            time.sleep(4.0)
            raise RuntimeError("simulated failure on shard 4")
        return super().__call__(batch)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs on 127.0.0.1 (test classes pickled by value so the workers need not import this file)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def toy():
    return build_export("toy-gmm")


@pytest.fixture(scope="module")
def reference(toy):
    """Samples seeds SEED .. SEED + 39 from one local pipeline call (the --engine local result)."""
    return python_samples(toy, SEED, 40, "fused")


@pytest.mark.parametrize(("workers", "batch_size", "count"), [(1, None, 40), (2, 3, 37)])
def test_ray_equals_local_for_any_worker_count_and_split(local_ray, toy, reference, workers, batch_size, count):
    samples = distributed.generate(toy, count, SEED, num_workers=workers, batch_size=batch_size, mode="fused", progress=False)
    assert samples.shape == (count, 2) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, reference[:count])


def test_shard_directory_resumes_a_killed_job_without_loss_or_duplicates(local_ray, toy, reference, tmp_path):
    out = tmp_path / "shards"
    common = {"output": out, "num_workers": 2, "shard_size": 8, "mode": "fused", "progress": False}
    with pytest.raises(Exception, match="simulated failure on shard 4"):
        distributed.generate(toy, 40, SEED, max_retries=0, actor_class=FailOnShardActor, **common)
    assert not (out / "shard-000004.npy").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temp file was left behind"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert before, "no shard was finished before the failure"

    distributed.generate(toy, 40, SEED, **common)  # the rerun
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert sorted(after) == [f"shard-{i:06d}.npy" for i in range(5)]
    assert all(after[name] == stamp for name, stamp in before.items()), "a shard already written was generated again"
    np.testing.assert_array_equal(distributed.load_shards(out), reference)

    todo, done = distributed.prepare_shard_dir(out, _identity(toy, out), (2,))
    assert (todo, done) == ([], 40)
    with pytest.raises(ValueError, match="seed: 11 on disk vs 12 now"):
        distributed.generate(toy, 40, SEED + 1, **common)


def _identity(toy, out):
    import json

    index = json.loads((out / distributed.INDEX_NAME).read_text())
    return {key: index[key] for key in distributed.IDENTITY_KEYS}


def test_worker_killed_mid_job_is_retried(local_ray, toy, reference, tmp_path):
    marker = tmp_path / "crashed"
    samples = distributed.generate(toy, 24, SEED, num_workers=2, mode="fused", progress=False,
                                   actor_class=crash_once_actor(marker))
    assert marker.exists(), "the worker never crashed: the test proved nothing"
    np.testing.assert_array_equal(samples, reference[:24])


def test_cli_engine_ray_npy_and_errors(local_ray, toy, reference, tmp_path, capsys):
    out = tmp_path / "samples.npy"
    code = sample_main([str(toy), "-n", "12", "--seed", str(SEED), "--mode", "fused", "--engine", "ray", "--num-workers", "2",
                        "--output", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    np.testing.assert_array_equal(np.load(out), reference[:12])
    assert sample_main([str(toy), "--engine", "ray", "--num-workers", "0", "--output", str(tmp_path / "x.npy")]) == 2
    assert "--num-workers must be >= 1" in capsys.readouterr().err
    assert sample_main([str(toy), "--engine", "ray", "--output", str(tmp_path / "x.png")]) == 2
    assert "FILE.npy or a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        sample_main([str(toy), "--num-workers", "2", "--output", str(tmp_path / "y.npy")])
    assert exit_info.value.code == 2 and "need --engine ray" in capsys.readouterr().err


class FailInConstructorActor(distributed.SamplerActor):
    """A worker whose constructor fails (as a missing provider or an unreadable export on that node would)."""

    def __init__(self, *args, **kwargs):
        raise OSError("simulated: the export is not readable on this node")


class FailInCallActor(distributed.SamplerActor):
    def __call__(self, batch):
        raise ValueError("simulated worker failure\nover two lines")


@pytest.mark.parametrize(("actor", "message"), [
    (FailInConstructorActor, "a Ray worker failed: OSError: simulated: the export is not readable on this node"),
    (FailInCallActor, "a Ray worker failed: ValueError: simulated worker failure"),
])
def test_a_worker_error_is_one_line(local_ray, toy, actor, message):
    with pytest.raises(distributed.WorkerError) as info:
        distributed.generate(toy, 4, SEED, mode="fused", progress=False, max_retries=0, actor_class=actor)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text and "Traceback" not in text, text
    assert info.value.exit_code == 2


def _broken_graph(toy: Path, target: Path) -> Path:
    """sampler.onnx replaced by a well-formed model with an operator onnxruntime does not have, its sha256 updated:
    the driver's checks pass, only a worker's session load fails."""
    import onnx
    from onnx import TensorProto, helper
    from untrusted import copy_export, rehash

    copy_export(toy, target)
    x = helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("final_sample", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["sample"], ["final_sample"])], "broken", [x], [y])
    (target / "sampler.onnx").unlink()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(target / "sampler.onnx"))
    rehash(target, "sampler.onnx")
    return target


@pytest.mark.parametrize("case", ["mode-graph-conflict", "steps-over-levels", "gpus-absent", "broken-graph"])
def test_cli_ray_errors_are_one_line_exit_2(local_ray, toy, tmp_path, capsys, case):
    """Checked before dispatch where possible (the first three never start an actor); a worker's error is one line."""
    export, extra = toy, []
    if case == "mode-graph-conflict":
        extra, expected = ["--mode", "fused", "--graph", "step"], "conflicts with graph='step'"
    elif case == "steps-over-levels":
        extra, expected = ["--num-inference-steps", "100000"], "must be in [1, "
    elif case == "gpus-absent":
        if ray.cluster_resources().get("GPU", 0) >= 1:
            pytest.skip("this Ray cluster has a GPU: --gpus-per-worker 1 can be placed")
        extra, expected = ["--gpus-per-worker", "1"], "the Ray cluster has 0 GPUs"
    else:
        export, extra, expected = _broken_graph(toy, tmp_path / "broken"), ["--mode", "fused"], "a Ray worker failed: "
    out = tmp_path / "x.npy"
    start = time.perf_counter()
    code = sample_main([str(export), "-n", "4", "--engine", "ray", "--output", str(out), "--no-progress", *extra])
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("ncsn-sample:")]
    assert code == 2 and len(ours) == 1 and expected in ours[0], err
    assert "Traceback" not in err and not out.exists(), err
    assert time.perf_counter() - start < 60  # the absent GPU is refused, not waited for


def test_seed_bound_is_the_local_one(local_ray, toy, tmp_path, capsys):
    """--seed 2**63 - 1 -n 1 is valid on both engines and gives the same sample; -n 2 is refused by both."""
    from ncsn_runtime.noise import MAX_SEED

    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.npy"
        assert sample_main([str(toy), "--seed", str(MAX_SEED), "-n", "1", "--engine", engine, "--mode", "fused",
                            "--output", str(out), "--no-progress"]) == 0, capsys.readouterr().err
        assert sample_main([str(toy), "--seed", str(MAX_SEED), "-n", "2", "--engine", engine, "--mode", "fused",
                            "--output", str(tmp_path / "refused.npy"), "--no-progress"]) == 2
        assert f"[0, {MAX_SEED - 1}]" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "local.npy"), python_samples(toy, MAX_SEED, 1, "fused"))


def test_runtime_imports_without_ray():
    code = textwrap.dedent(
        """
        import sys
        import ncsn_runtime, ncsn_runtime.cli, ncsn_runtime.distributed, ncsn_runtime.pipeline  # noqa: F401
        assert "ray" not in sys.modules and "torch" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
