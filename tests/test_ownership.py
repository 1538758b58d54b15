"""No user data lost (issue 18, part 1): a directory is deleted or replaced only when this package provably wrote it.

Proof is the ownership marker (:mod:`ncsn_runtime.ownership`) inside each staging directory of ncsn-export and each
Triton model directory of ncsn-triton; a name that merely looks like one of ours is never enough. Also here: the
ncsn-triton items of part 4 (the manifest's scheduler_config through the one typed reader, config.pbtxt numbers
range-checked) and its self-check deadline (part 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from host_exports import build_export
from ncsn_runtime.ownership import MARKER_NAME, new_token, read_marker, write_marker
from untrusted import copy_export, read_manifest_json, rehash, write_manifest_json

from ncsn_export.cli import main as export_main
from ncsn_export.exporters.directory import remove_stale_staging

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes").write_text("x")
    return path


# -- ncsn-export's sweep of stale staging folders ---------------------------------------------------------------------
def test_export_keeps_user_folders_that_look_like_staging_names(tmp_path, capsys):
    """Before: `.keep.old-2023-01` was read as staging dir of dead pid 2023 and deleted; `.keep.old-v1` by an age rule."""
    dated = user_folder(tmp_path / ".keep.old-2023-01")
    legacy = user_folder(tmp_path / ".keep.old-v1")
    os.utime(legacy, (time.time() - 10 * 86400,) * 2)  # days old: the legacy age rule removed it
    assert export_main(["--model", "toy-gmm", "--no-validate", "-q", "-o", str(tmp_path / "keep")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (dated / "notes").read_text() == "x" and (legacy / "notes").read_text() == "x"
    assert not (tmp_path / "keep" / MARKER_NAME).exists(), "the marker belongs to the staging dir, not the export"
    assert MARKER_NAME not in read_manifest_json(tmp_path / "keep")["files"]


def test_sweep_needs_a_marker_that_matches_the_directory(tmp_path):
    pid = dead_pid()
    output = tmp_path / "out"

    def staging(kind: str = "partial", **marker) -> Path:
        token = new_token()
        path = tmp_path / f".out.{kind}-{pid}-{token[:8]}"
        path.mkdir()
        (path / "notes").write_text("x")
        if marker.pop("write", True):
            fields = {"kind": kind, "name": path.name, "pid": pid, **marker}
            write_marker(path, marker.pop("writer", "ncsn-export"), marker.pop("token", token),
                         **{key: value for key, value in fields.items() if key not in ("writer", "token")})
        return path

    kept = {
        "no marker": staging(write=False),
        "foreign writer": staging(writer="someone-else"),
        "other token": staging(token=new_token()),
        "other pid": staging(pid=pid + 1),
        "other name": staging(name=".out.partial-1-deadbeef"),
        "other host": staging(host="elsewhere"),
    }
    symlinked = staging(write=False)  # a marker that is a symlink to a real marker elsewhere
    real = staging()
    os.symlink(real / MARKER_NAME, symlinked / MARKER_NAME)
    kept["symlinked marker"] = symlinked
    hugepid = tmp_path / ".out.partial-99999999999999999999-deadbeef"
    user_folder(hugepid)
    kept["huge pid"] = hugepid
    removed = remove_stale_staging(output)
    assert removed == [real]
    for why, path in kept.items():
        assert (path / "notes").read_text() == "x", why


def test_marker_reader_refuses_foreign_or_malformed_markers(tmp_path):
    token = new_token()
    write_marker(tmp_path, "ncsn-export", token, kind="partial")
    assert read_marker(tmp_path, "ncsn-export")["token"] == token
    assert read_marker(tmp_path, "ncsn-triton") is None
    for text in ("{", "[]", json.dumps({"writer": "ncsn-export", "token": "short"}), "x" * (5 << 20)):
        (tmp_path / MARKER_NAME).write_text(text)
        assert read_marker(tmp_path, "ncsn-export") is None


# -- ncsn-triton --force ----------------------------------------------------------------------------------------------
triton = pytest.importorskip("ncsn_runtime.triton")
pytest.importorskip("onnx", reason="ncsn-triton needs the onnx package (the [triton] extra)")


@pytest.fixture(scope="module")
def toy() -> Path:
    return build_export("toy-gmm")


def run_triton(capsys, *args: str) -> tuple[int, str]:
    code = triton.main([str(arg) for arg in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_triton_force_refuses_a_directory_it_did_not_write(toy, tmp_path, capsys):
    """Before: `--model-name important --force` replaced r/important and its thesis.tex."""
    repo = tmp_path / "r"
    user_folder(repo / "important")
    code, err = run_triton(capsys, toy, "-o", repo, "--model-name", "important", "--force")
    assert code == 2 and "refusing to replace" in err and "not written by ncsn-triton" in err, err
    assert (repo / "important" / "notes").read_text() == "x"
    assert sorted(p.name for p in repo.iterdir()) == ["important"], "a refused run left files behind"


def test_triton_force_refuses_a_name_taken_from_the_manifest(toy, tmp_path, capsys):
    """Without --model-name the name comes from the untrusted manifest's model.name: same rule."""
    export = copy_export(toy, tmp_path / "export")
    manifest = read_manifest_json(export)
    manifest["model"]["name"] = "important"
    write_manifest_json(export, manifest)
    repo = tmp_path / "r"
    user_folder(repo / "important")
    code, err = run_triton(capsys, export, "-o", repo, "--force")
    assert code == 2 and "not written by ncsn-triton" in err, err
    assert (repo / "important" / "notes").read_text() == "x"
    (repo / "elsewhere").mkdir()
    os.symlink(repo / "elsewhere", repo / "linked")
    code, err = run_triton(capsys, toy, "-o", repo, "--model-name", "linked", "--force")
    assert code == 2 and "refusing to replace" in err, err
    assert (repo / "linked").is_symlink()


def test_triton_force_replaces_its_own_unchanged_model_only(toy, tmp_path, capsys):
    repo = tmp_path / "r"
    assert run_triton(capsys, toy, "-o", repo, "--model-name", "toy")[0] == 0
    first = read_marker(repo / "toy", "ncsn-triton")
    assert first is not None and {"config.pbtxt", "1/model.onnx", "ncsn.json"} <= set(first["files"])
    code, err = run_triton(capsys, toy, "-o", repo, "--model-name", "toy", "--force", "--max-batch-size", "4")
    assert code == 0, err
    second = read_marker(repo / "toy", "ncsn-triton")
    assert second["token"] != first["token"] and "max_batch_size: 4" in (repo / "toy" / "config.pbtxt").read_text()

    (repo / "toy" / "2").mkdir()
    (repo / "toy" / "2" / "model.onnx").write_bytes(b"a user's own version")
    code, err = run_triton(capsys, toy, "-o", repo, "--model-name", "toy", "--force")
    assert code == 2 and "holds files ncsn-triton did not write (2/model.onnx)" in err, err
    assert (repo / "toy" / "2" / "model.onnx").read_bytes() == b"a user's own version"
    (repo / "toy" / "2" / "model.onnx").unlink()
    (repo / "toy" / "2").rmdir()

    config = repo / "toy" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size: 4", "max_batch_size: 5"))  # a user's hand edit
    code, err = run_triton(capsys, toy, "-o", repo, "--model-name", "toy", "--force")
    assert code == 2 and "config.pbtxt changed since ncsn-triton wrote it" in err, err
    assert "max_batch_size: 5" in config.read_text()
    assert sorted(p.name for p in repo.iterdir()) == ["toy"]


# -- ncsn-triton: the typed reader, config.pbtxt ranges, the self-check deadline --------------------------------------
def test_triton_reads_the_manifests_scheduler_config(toy, tmp_path, capsys):
    """Before: Triton read scheduler/scheduler_config.json (T=100) where ncsn-sample read the manifest's key (T=3)."""
    export = copy_export(toy, tmp_path / "export")
    config = json.loads((export / "scheduler" / "scheduler_config.json").read_text())
    assert config["num_annealed_steps"] != 3
    (export / "other.json").write_text(json.dumps({**config, "num_annealed_steps": 3}))
    rehash(export, "other.json")
    manifest = read_manifest_json(export)
    manifest["scheduler_config"] = "other.json"
    write_manifest_json(export, manifest)
    assert run_triton(capsys, export, "-o", tmp_path / "r", "--model-name", "toy")[0] == 0
    assert json.loads((tmp_path / "r" / "toy" / "ncsn.json").read_text())["num_annealed_steps"] == 3


def test_triton_refuses_a_level_count_ncsn_sample_refuses(toy, tmp_path, capsys):
    export = copy_export(toy, tmp_path / "export")
    manifest = read_manifest_json(export)
    manifest["model"]["num_train_timesteps"] += 1
    write_manifest_json(export, manifest)
    code, err = run_triton(capsys, export, "-o", tmp_path / "r")
    assert code == 2 and "num_train_timesteps" in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.parametrize(("args", "message"), [
    (["--max-batch-size", str(2**40)], "`--max-batch-size` must be in [1, 2147483647]"),
    (["--instance-count", str(2**31)], "`--instance-count` must be in [1, 2147483647]"),
    (["--max-queue-delay-us", "-1"], "`--max-queue-delay-us` must be in [0, 18446744073709551615]"),
    (["--max-queue-delay-us", str(2**64)], "`--max-queue-delay-us` must be in [0, 18446744073709551615]"),
    (["--check-timeout", "0"], "--check-timeout must be a finite number of seconds > 0"),
    (["--check-timeout", "nan"], "--check-timeout must be a finite number of seconds > 0"),
])
def test_triton_config_numbers_fit_model_config_fields(toy, tmp_path, capsys, args, message):
    """Before: --max-batch-size 2^40 was written into config.pbtxt's int32 max_batch_size."""
    code, err = run_triton(capsys, toy, "-o", tmp_path / "r", *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "r").exists()


def test_triton_self_check_has_a_deadline(toy, tmp_path, capsys):
    """Before: the self-check ran the baked graph without a time bound (here: a sampler graph that never returns)."""
    from test_hangs import with_slow_graph

    export = with_slow_graph(toy, tmp_path / "slow", "sampler")
    start = time.perf_counter()
    code, err = run_triton(capsys, export, "-o", tmp_path / "r", "--check-timeout", "1")
    assert time.perf_counter() - start < 30
    assert code == 2 and "did not finish within 1 s; raise --check-timeout" in err, err
    assert not (tmp_path / "r").exists(), "the staging directory (or the REPO folder this run made) was left behind"


# -- ncsn-train's checkpoint directories ------------------------------------------------------------------------------
def test_train_never_deletes_a_checkpoint_folder_it_did_not_write(tmp_path, capsys):
    """Before: `.checkpoint.tmp` / `.checkpoint.old` in --out were rmtree'd by name, and `checkpoint/` replaced."""
    import numpy as np
    from PIL import Image

    from ncsn_export.training.cli import main as train_main
    from ncsn_export.training.trainer import TrainConfig, Trainer

    run = tmp_path / "run"
    data = (np.random.default_rng(0).random((8, 1, 8, 8)) * 255).astype(np.uint8)

    def trainer(iterations: int = 2) -> Trainer:
        config = TrainConfig(out_dir=str(run), iterations=iterations, batch_size=4, ngf=2, num_levels=3, sigma_min=0.1,
                             sigma_max=1.0, checkpoint_every=1, sample_every=0, log_every=1)
        return Trainer(config, data, dataset_name="random")

    for name in (".checkpoint.tmp", ".checkpoint.old", "checkpoint"):
        user_folder(run / name)
        with pytest.raises(FileExistsError, match=f"refusing to replace {run / name}"):
            trainer()
        assert (run / name / "notes").read_text() == "x"
        (run / name / "notes").unlink()
        (run / name).rmdir()
    first = trainer()
    first.train(progress=False)
    assert read_marker(run / "checkpoint", "ncsn-train") is not None
    again = trainer(iterations=3)
    again.resume()
    again.train(progress=False)  # replaces its own checkpoint
    assert sorted(p.name for p in run.iterdir() if "checkpoint" in p.name) == ["checkpoint"]

    images = tmp_path / "images"
    images.mkdir()
    for index in range(4):
        Image.fromarray(data[index, 0]).save(images / f"{index}.png")
    user_folder(tmp_path / "run2" / ".checkpoint.old")
    code = train_main(["--data", str(images), "--image-size", "8", "--channels", "1", "--out", str(tmp_path / "run2"),
                       "--iterations", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to replace" in err and err.count("\n") == 1, err
    assert (tmp_path / "run2" / ".checkpoint.old" / "notes").read_text() == "x"
