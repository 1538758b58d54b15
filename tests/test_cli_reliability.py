"""ncsn-export / ncsn-train never lose data and never print a traceback for a user's mistake (issue 11);
the one atomic writer keeps file modes; Ctrl-C stops sampling promptly; schedulers take per-sample levels."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from host_exports import ROOT, build_export
from ncsn_runtime import AnnealedLangevinDynamicsScheduler as NumpyScheduler
from ncsn_runtime.fileio import atomic_write, read_json_object, write_json_atomic
from ncsn_runtime.manifest import file_entry
from ncsn_runtime.ownership import new_token, write_marker
from untrusted import tampered

from ncsn_export.cli import main as export_main
from ncsn_export.exporters import ExportError, export_model
from ncsn_export.exporters.directory import atomic_directory, check_output_dir
from ncsn_export.models.registry import ModelSpec
from ncsn_export.scheduler import AnnealedLangevinDynamicsScheduler as TorchScheduler
from ncsn_export.training.cli import main as train_main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
TESTS = Path(__file__).resolve().parent


def run_export(capsys, *args: str) -> tuple[int, str]:
    code = export_main(["--model", "toy-gmm", "--no-validate", "-q", *args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# -- --force never deletes what it did not write ----------------------------------------------------------------------
def test_force_refuses_a_directory_whose_manifest_is_not_an_export(tmp_path, capsys):
    webapp = tmp_path / "x" / "webapp"
    webapp.mkdir(parents=True)
    (webapp / "manifest.json").write_text('{"name": "My PWA"}')
    (webapp / "important.txt").write_text("precious")
    code, err = run_export(capsys, "--force", "--output", str(webapp))
    assert code == 2 and "is not an ncsn-export manifest" in err and err.count("\n") == 1
    assert (webapp / "important.txt").read_text() == "precious"


def fake_export(output: Path) -> Path:
    """A directory shaped like an earlier export (manifest listing its files), made without exporting."""
    (output / "scheduler").mkdir(parents=True)
    files = {"score.onnx": b"graph", "scheduler/scheduler_config.json": b"{}"}
    for name, data in files.items():
        (output / name).write_bytes(data)
    manifest = {"format": "ncsn-export", "format_version": 1, "files": {name: file_entry(output / name) for name in files}}
    (output / "manifest.json").write_text(json.dumps(manifest))
    return output


def test_force_refuses_user_files_inside_an_export_unless_asked(tmp_path, capsys):
    output = fake_export(tmp_path / "export")
    (output / "notes.txt").write_text("mine")
    (output / "scheduler" / "extra.json").write_text("{}")
    code, err = run_export(capsys, "--force", "--output", str(output))
    assert code == 2 and "holds files the export did not write (notes.txt, scheduler/extra.json)" in err
    assert (output / "notes.txt").exists()
    with pytest.raises(SystemExit) as exit_:
        export_main(["--allow-extra-files", "--output", str(output)])
    assert exit_.value.code == 2 and "--allow-extra-files only applies with --force" in capsys.readouterr().err
    with pytest.raises(ExportError, match="did not write"), atomic_directory(output, force=True) as staging:
        pass
    with atomic_directory(output, force=True, allow_extra_files=True) as staging:
        (staging / "new.onnx").write_bytes(b"new")
    assert sorted(p.name for p in output.iterdir()) == ["new.onnx"]
    clean = fake_export(tmp_path / "clean")
    assert check_output_dir(clean, force=True) == clean.resolve()  # only its own files: replaced without the flag
    with pytest.raises(ExportError, match="not empty; pass --force"):
        check_output_dir(clean, force=False)


def test_paths_through_dotdot_and_stale_staging_dirs(tmp_path):
    (tmp_path / "a").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs: what a `kill -9` during an export leaves behind

    def staging(name: str, pid: int) -> Path:  # a staging dir as that process made it: named and marked
        token = new_token()
        path = tmp_path / f".{name}.partial-{pid}-{token[:8]}"
        path.mkdir()
        write_marker(path, "ncsn-export", token, kind="partial", name=path.name, pid=pid)
        return path

    stale = staging("out", dead.pid)
    (stale / "scheduler").mkdir(parents=True)
    (stale / "score.onnx").write_bytes(b"half written")
    alive = staging("out", os.getppid())  # a running export's staging dir stays
    other = staging("other", dead.pid)  # another output's: not ours to remove
    with atomic_directory(tmp_path / "a" / ".." / "out") as out:
        (out / "manifest.json").write_text("{}")
    assert not stale.exists() and alive.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", "out", alive.name, other.name])
    for bad in ("/", ""):
        with pytest.raises(ExportError, match="`output`"):
            check_output_dir(bad, force=True)


def test_kill_9_during_an_export_is_cleaned_by_the_next_export(tmp_path):
    output = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runtime")]))
    code = ("import time\nfrom ncsn_export.exporters.directory import atomic_directory\n"
            f"with atomic_directory({str(output)!r}) as staging:\n"
            "    (staging / 'score.onnx').write_bytes(b'half')\n    print('staging', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "staging"
    finally:
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".out.partial-{proc.pid}-")
    with atomic_directory(output) as staging:
        (staging / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(("args", "message"), [
    (["--tolerance", "nan"], "`tolerance` must be a finite float in (0, 1000], got nan"),
    (["--tolerance", "-1"], "`tolerance` must be a finite float"),
    (["--batch-size", "0"], "`batch_size` must be in [1, 1024]"),
    (["--num-annealed-steps", "1000000000"], "`num_annealed_steps` must be in [1, 10000]"),
    (["--num-inference-steps", "0"], "`num_inference_steps` must be in [1,"),
    (["--opset", "11"], "`opset` must be in [18,"),
    (["--model", "no-such-model"], "unknown `model` 'no-such-model'"),
    (["--model", "raising_module_for_tests:spec"], "cannot import module 'raising_module_for_tests'"),
    (["--model", "test_cli_reliability:raising_factory"], "loading `model` 'test_cli_reliability:raising_factory' failed: "
                                                          "RuntimeError: the factory broke"),
    (["--model", "test_cli_reliability:spec_missing_sigma_max"], "scheduler_config is missing required keys: sigma_max"),
    (["--model", "test_cli_reliability:spec_with_nan_eps"], "`sampling_eps` must be a finite float > 0, got nan"),
    (["--batch-size", "many"], "invalid int value: 'many'"),
])
def test_export_input_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    output = tmp_path / "out"
    try:
        code, err = run_export(capsys, "--output", str(output), *args)
    except SystemExit as exit_:  # argparse
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_module_that_raises_on_import(tmp_path, capsys, monkeypatch):
    (tmp_path / "broken_net.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, err = run_export(capsys, "--model", "broken_net:spec", "--output", str(tmp_path / "out"))
    assert code == 2 and "RuntimeError: import-time failure" in err and err.count("\n") == 1


def test_nan_never_reaches_a_manifest(tmp_path):
    with pytest.raises(ExportError, match="`tolerance` must be a finite float"):
        export_model("toy-gmm", tmp_path / "out", tolerance=float("nan"))
    with pytest.raises(ValueError, match="NaN and inf are not JSON"):
        write_json_atomic(tmp_path / "m.json", {"tolerance": float("nan")})
    assert not (tmp_path / "m.json").exists() and list(tmp_path.iterdir()) == []


def raising_factory() -> ModelSpec:
    raise RuntimeError("the factory broke")


def _toy_spec(**config_changes) -> ModelSpec:
    from ncsn_export.models.gmm import toy_gmm_spec

    spec = toy_gmm_spec()
    config = dict(spec.scheduler_config, **config_changes)
    spec.scheduler_config = {key: value for key, value in config.items() if value is not None}
    return spec


def spec_missing_sigma_max() -> ModelSpec:
    return _toy_spec(sigma_max=None)


def spec_with_nan_eps() -> ModelSpec:
    return _toy_spec(sampling_eps=float("nan"))


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "nan"], "`--lr` must be a finite float > 0"),
    (["--ema-decay", "1.5"], "`--ema-decay` must be in [0, 1)"),
    (["--num-levels", "0"], "`num_train_timesteps` must be in [1, 100000]"),
    (["--sigma-min", "2", "--sigma-max", "1"], "`sigma_min` must be < `sigma_max`"),
    (["--batch-size", "0"], "`--batch-size` must be in [1,"),
    (["--data", "/no/such/folder"], "--data must be 'mnist', 'mnist-full' or a folder of images"),
])
def test_train_cli_checks_arguments_first(tmp_path, capsys, args, message):
    assert train_main(["--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


# -- one atomic writer, file modes ------------------------------------------------------------------------------------
def test_atomic_write_mode_follows_umask_and_replaced_file(tmp_path):
    previous = os.umask(0o022)
    try:
        assert stat.S_IMODE(atomic_write(tmp_path / "a.bin", b"x").stat().st_mode) == 0o644
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write(tmp_path / "b.bin", b"x").stat().st_mode) == 0o600
        os.umask(0o002)
        (tmp_path / "c.bin").write_bytes(b"old")
        os.chmod(tmp_path / "c.bin", 0o640)
        atomic_write(tmp_path / "c.bin", b"new")
        assert (tmp_path / "c.bin").read_bytes() == b"new" and stat.S_IMODE((tmp_path / "c.bin").stat().st_mode) == 0o640
    finally:
        os.umask(previous)
    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(tmp_path / "d.bin", lambda handle: (handle.write(b"half"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "c.bin"]


def test_sample_outputs_follow_the_umask(tmp_path):
    from ncsn_runtime.images import save_grid_png, save_npy

    previous = os.umask(0o027)
    try:
        save_npy(np.zeros((2, 2), np.float32), tmp_path / "s.npy")
        save_grid_png(np.zeros((1, 4, 4, 1), np.float32), tmp_path / "g.png")
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o640}


def test_one_json_reader(tmp_path):
    path = tmp_path / "x.json"
    for text, message in [("[1]", "must hold a JSON object, got list"), ('{"a": NaN}', "NaN is not a JSON value"),
                          ("{", "is not valid JSON"), ('{"a": Infinity}', "Infinity is not a JSON value")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_json_object(path)
    path.write_bytes(b"{" + b" " * 100 + b"}")
    with pytest.raises(ValueError, match="at most 10 bytes"):
        read_json_object(path, max_bytes=10)


# -- Ctrl-C -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fused", "stepwise"])
def test_ctrl_c_stops_sampling_promptly(tmp_path, mode):
    """10 levels x 10000 steps of 2000 toy samples (far longer than 3 s); SIGINT after 3 s must end it within 3 s, exit 130.

    A small batch keeps each Loop iteration short: onnxruntime checks RunOptions.terminate between nodes, and at
    B=20000 under load it took 1.5-10 s to honour it in the fused sampler (no code of ours involved).
    """
    export = tampered(build_export("toy-gmm"), tmp_path / "long",
                      edit_config=lambda config: config.update(num_annealed_steps=10_000))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "runtime")]))
    command = [sys.executable, "-m", "ncsn_runtime.cli", str(export), "-n", "2000", "--mode", mode, "--no-progress",
               "-o", str(tmp_path / "out.npy")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    start = time.perf_counter()
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    waited = time.perf_counter() - start
    assert proc.returncode == 130, err
    assert err.strip() == f"ncsn-sample: interrupted; nothing was written to {tmp_path / 'out.npy'}"
    assert waited < 3.0, f"took {waited:.1f} s to stop"
    assert not (tmp_path / "out.npy").exists()


# -- schedulers: one level per sample ---------------------------------------------------------------------------------
def test_step_with_per_sample_levels_numpy_and_torch():
    config = {"num_train_timesteps": 10, "num_annealed_steps": 3, "sigma_min": 0.01, "sigma_max": 1.0, "sampling_eps": 1e-3}
    levels = [0, 5, 9]
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    score = np.ones_like(x) * 2
    noise = np.full_like(x, 0.5)
    numpy_scheduler = NumpyScheduler(**config)
    per_sample = numpy_scheduler.step(score, np.array(levels), x, noise=noise).prev_sample
    one_by_one = np.stack([numpy_scheduler.step(score[b:b + 1], level, x[b:b + 1], noise=noise[b:b + 1]).prev_sample[0]
                           for b, level in enumerate(levels)])
    np.testing.assert_array_equal(per_sample, one_by_one)
    torch_scheduler = TorchScheduler(**config)
    torch_out = torch_scheduler.step(torch.from_numpy(score), torch.tensor(levels), torch.from_numpy(x),
                                     noise=torch.from_numpy(noise)).prev_sample
    np.testing.assert_allclose(torch_out.numpy(), one_by_one, rtol=1e-6)
    for scheduler, wrap in ((numpy_scheduler, np.asarray), (torch_scheduler, torch.tensor)):
        sample = wrap(x) if scheduler is numpy_scheduler else torch.from_numpy(x)
        out = wrap(score) if scheduler is numpy_scheduler else torch.from_numpy(score)
        with pytest.raises(ValueError, match=r"one level per sample \(batch 3\), got shape \(2,\)"):
            scheduler.step(out, wrap([0, 5]), sample, noise=sample * 0)
        with pytest.raises(ValueError, match=r"got shape \(3, 1\)"):
            scheduler.step(out, wrap([[0], [5], [9]]), sample, noise=sample * 0)


def test_training_json_and_manifest_records_levels(tmp_path):
    manifest = json.loads((build_export("toy-gmm") / "manifest.json").read_text())
    assert manifest["model"]["num_train_timesteps"] == 10
