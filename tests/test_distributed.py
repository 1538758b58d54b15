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
