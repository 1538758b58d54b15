"""Issue 18, part 5: the environment (a full disk, a name too long for the filesystem, a file where a folder
should be) and a user's broken files give every CLI one line naming the file and the cause, exit 1 or 2,
never a traceback, and leave nothing half-written."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ncsn_export.cli import main as export_main

TOY = ["--model", "toy-gmm", "--no-validate", "-q"]


def _full_disk_after(limit: int):
    """A stand-in for ``onnx.save`` that writes ``limit`` bytes of the file, then fails like a full disk."""

    def save(model, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(model.SerializeToString()[:limit])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """Before: a traceback ending in ``OSError: [Errno 28] No space left on device`` (exit 1)."""
    import onnx

    monkeypatch.setattr(onnx, "save", _full_disk_after(100))
    out = tmp_path / "out"
    code = export_main([*TOY, "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1
    assert line == f"ncsn-export: error: {out}: No space left on device [ENOSPC]; nothing was written to {out}", line
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory, no half-written graph


def test_export_full_disk_in_a_torch_artifact_fails_the_export(tmp_path, capsys, monkeypatch):
    """A full disk while writing sampler.pt is the machine's error, not "sampler.pt cannot be made" (a skip)."""
    from ncsn_export.exporters import api

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x" / "sampler.pt"))

    monkeypatch.setattr(api, "export_torchscript", no_space)
    out = tmp_path / "out"
    code = export_main([*TOY, "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1 and "sampler.pt: No space left on device [ENOSPC]" in line, line
    assert list(tmp_path.iterdir()) == []


def test_export_name_too_long_for_the_staging_name_is_refused_first(tmp_path, capsys, monkeypatch):
    """Before: a 240-byte name passed the checks, then the staging directory ``.NAME.partial-PID-XXXXXXXX`` failed."""
    from ncsn_export.exporters import api

    monkeypatch.setattr(api, "plan_export", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    out = tmp_path / ("a" * (limit - 15))
    code = export_main([*TOY, "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "is too long" in line and f"{limit}-byte limit" in line, line
    assert list(tmp_path.iterdir()) == []
    fits = tmp_path / ("b" * (limit - 26))  # the longest name the check lets through really stages and renames
    monkeypatch.undo()
    assert export_main([*TOY, "--artifacts", "score", "-o", str(fits)]) == 0
    assert (fits / "manifest.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == [fits.name]


def test_sample_output_name_too_long_is_refused(tmp_path):
    from ncsn_runtime.fileio import check_output_file

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(ValueError, match=r"--output: the name .* is too long"):
        check_output_file(tmp_path / ("c" * (limit - 5) + ".png"))
    assert check_output_file(tmp_path / ("c" * (limit - 22) + ".png")) == tmp_path / ("c" * (limit - 22) + ".png")


def test_os_error_line():
    from ncsn_runtime.fileio import os_error_line

    assert os_error_line(OSError(errno.EROFS, "Read-only file system", "/m/x")) == "/m/x: Read-only file system [EROFS]"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device"), Path("/o")) == \
        "/o: No space left on device [ENOSPC]"
    assert os_error_line(OSError("weird")) == "weird"


@pytest.fixture(scope="module")
def toy_export():
    pytest.importorskip("onnx", reason="ncsn-triton needs the onnx package (the [triton] extra)")
    from host_exports import build_export

    return build_export("toy-gmm")


def test_triton_on_a_full_disk_is_one_line_and_leaves_nothing(toy_export, tmp_path, capsys, monkeypatch):
    """Before: a traceback ending in ``OSError: [Errno 28] No space left on device``, and an empty REPO left behind."""
    import onnx
    from ncsn_runtime import triton

    monkeypatch.setattr(onnx, "save", _full_disk_after(100))
    repo = tmp_path / "repo"
    code = triton.main([str(toy_export), "-o", str(repo), "--model-name", "m"])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1
    assert line == f"ncsn-triton: error: {repo / 'm'}: No space left on device [ENOSPC]; nothing was written to {repo}"
    assert list(tmp_path.iterdir()) == []  # the repository folder this run made is gone too
    (repo / "other").mkdir(parents=True)  # an existing repository keeps its other models
    assert triton.main([str(toy_export), "-o", str(repo), "--model-name", "m"]) == 1
    assert [path.name for path in repo.iterdir()] == ["other"]


@pytest.mark.parametrize("case", ["file-parent", "file", "long-name"])
def test_triton_bad_output_is_refused_before_any_work(toy_export, tmp_path, capsys, monkeypatch, case):
    """Before: ``-o afile/sub`` raised NotADirectoryError, a 250-byte --model-name ``File name too long`` (tracebacks)."""
    from ncsn_runtime import triton

    monkeypatch.setattr(triton, "bake_schedule", lambda *a, **k: pytest.fail("work began before the check"))
    (tmp_path / "afile").write_text("x")
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    output, name = {"file-parent": (tmp_path / "afile" / "sub", "m"), "file": (tmp_path / "afile", "m"),
                    "long-name": (tmp_path / "repo", "a" * (limit - 5))}[case]
    code = triton.main([str(toy_export), "-o", str(output), "--model-name", name])
    line = _one_line_error(capsys.readouterr().err)
    expected = {"file-parent": f"--output {output}: {tmp_path / 'afile'} is not a directory",
                "file": f"--output {output} exists and is not a directory",
                "long-name": f"--model-name: the name 'aaaaaaaaaaaaaaaaaaaa...aaaaaaaaaaaa' is too long ({limit - 5} bytes"}
    assert code == 2 and expected[case] in line, line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile"]


def test_triton_longest_name_that_fits_is_written_and_replaced(toy_export, tmp_path):
    from ncsn_runtime import triton

    name = "a" * (os.pathconf(tmp_path, "PC_NAME_MAX") - 14)
    for force in (False, True):  # the second run goes through the ``.NAME.old.XXXXXXXX`` sibling
        model = triton.write_repository(toy_export, tmp_path, model_name=name, force=force, num_inference_steps=2)
        assert (model.directory / "config.pbtxt").is_file()
    assert [path.name for path in tmp_path.iterdir()] == [name]


def _train_args(data: Path, out: Path) -> list[str]:
    return ["--data", str(data), "--image-size", "8", "--channels", "1", "--out", str(out), "--iterations", "1",
            "--batch-size", "2", "--ngf", "2", "--num-levels", "3", "--sample-every", "0", "--log-every", "1",
            "--threads", "1", "--no-progress"]


def _images(folder: Path, count: int = 3, size: int = 12) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    for k in range(count):
        Image.fromarray(np.full((size, size), 40 * k, np.uint8)).save(folder / f"{k}.png")
    return folder


def test_train_on_a_decompression_bomb_is_one_line(tmp_path, capsys, monkeypatch):
    """Before: ``PIL.Image.DecompressionBombError`` (not an OSError) escaped as a traceback."""
    from PIL import Image

    from ncsn_export.training import cli

    data = _images(tmp_path / "images")
    Image.new("L", (200, 200)).save(data / "bomb.png")  # 40,000 pixels > 2 x the limit set here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    code = cli.main(_train_args(data, tmp_path / "run"))
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and f"image {data / 'bomb.png'} is refused as a possible decompression bomb" in line, line
    (data / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a broken PNG names its file too
    assert cli.main(_train_args(data, tmp_path / "run")) == 2
    assert f"image {data / 'bomb.png'} cannot be read" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign-weights", "missing-entry"])
def test_train_resume_from_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, damage):
    """Before: safetensors' SafetensorError / torch's RuntimeError / KeyError escaped as tracebacks."""
    from safetensors.torch import load_file, save_file

    from ncsn_export.training import cli

    data, out = _images(tmp_path / "images"), tmp_path / "run"
    assert cli.main(_train_args(data, out)) == 0
    capsys.readouterr()
    ckpt = out / "checkpoint"
    model = ckpt / "model.safetensors"
    if damage == "truncated":
        model.write_bytes(model.read_bytes()[:50])
    elif damage == "garbage":
        model.write_bytes(b"\xff" * 64)
    elif damage == "foreign-weights":
        save_file({"other.weight": load_file(str(model))[next(iter(load_file(str(model))))]}, str(model))
    else:
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        del tensors["rng.generator"]
        save_file(tensors, str(ckpt / "optimizer.safetensors"))
    code = cli.main([*_train_args(data, out), "--resume"])
    line = _one_line_error(capsys.readouterr().err)
    expected = {"truncated": f"{model} is not a readable safetensors file", "garbage": f"{model} is not a readable",
                "foreign-weights": "its weights do not fit this model", "missing-entry": "it has no entry 'rng.generator'"}
    assert code == 2 and line.startswith(f"ncsn-train: error: cannot resume from {ckpt}: ") and expected[damage] in line, line


@pytest.mark.parametrize("value", ["abc", "-3", "1.5", "99999"])
def test_bad_thread_variable_is_named_not_blamed_on_the_export(tmp_path, capsys, monkeypatch, value):
    """Before: ``NCSN_NUM_THREADS=abc`` gave "onnxruntime cannot load .../sampler.onnx (... the export itself is broken
    ...): invalid literal for int()"."""
    from host_exports import build_export
    from ncsn_runtime.cli import main as sample_main

    export = build_export("toy-gmm")
    monkeypatch.setenv("NCSN_NUM_THREADS", value)
    code = sample_main([str(export), "-o", str(tmp_path / "s.npy"), "-n", "1", "--no-progress"])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and line == ("ncsn-sample: error: environment variable NCSN_NUM_THREADS must be a whole number of "
                                  f"threads in 0..4096 (0: onnxruntime's default), got {value!r}"), line
    assert not (tmp_path / "s.npy").exists()
    for fine in ("2", "0", ""):
        monkeypatch.setenv("NCSN_NUM_THREADS", fine)
        assert sample_main([str(export), "-o", str(tmp_path / "s.npy"), "-n", "1", "--no-progress"]) == 0


def _tampered_copy(export: Path, destination: Path, tamper) -> Path:
    """A copy of ``export`` whose sampler.onnx is changed by ``tamper(model)``, with its manifest hash updated to match."""
    import hashlib
    import json
    import shutil

    import onnx

    shutil.copytree(export, destination)
    graph = destination / "sampler.onnx"
    model = onnx.load(str(graph))
    tamper(model)
    onnx.save(model, str(graph))
    manifest = json.loads((destination / "manifest.json").read_text())
    data = graph.read_bytes()
    manifest["files"]["sampler.onnx"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def test_triton_on_a_tampered_graph_whose_hash_matches_is_one_line(toy_export, tmp_path, capsys):
    """Before: ``onnx.checker.ValidationError: No Op registered for Bogus`` as a traceback."""
    from ncsn_runtime import triton

    def bogus(model):
        model.graph.node[0].op_type = "Bogus"

    export = _tampered_copy(toy_export, tmp_path / "export", bogus)
    code = triton.main([str(export), "-o", str(tmp_path / "repo")])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and f"{export / 'sampler.onnx'} is not a valid ONNX graph" in line and "Bogus" in line, line
    assert not (tmp_path / "repo").exists()


def test_triton_onnxruntime_load_error_is_one_line(toy_export, tmp_path, capsys, monkeypatch):
    import onnxruntime as ort
    from ncsn_runtime import triton
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    def fail(*args, **kwargs):
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : Load model failed:\nsomething\nmulti-line")

    monkeypatch.setattr(ort, "InferenceSession", fail)
    code = triton.main([str(toy_export), "-o", str(tmp_path / "repo"), "--model-name", "m"])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "onnxruntime cannot load model.onnx: [ONNXRuntimeError] : 1 : FAIL" in line, line
    assert not (tmp_path / "repo").exists()


def test_train_loss_becoming_nan_is_one_line_and_keeps_a_finite_checkpoint(tmp_path, capsys, monkeypatch):
    """Before: ``FloatingPointError: loss became nan at iteration 1`` as a traceback."""
    import torch

    from ncsn_export.training import cli, trainer

    real, calls = trainer.annealed_dsm_loss, []

    def nan_on_second_call(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(trainer, "annealed_dsm_loss", nan_on_second_call)
    data, out = _images(tmp_path / "images"), tmp_path / "run"
    args = _train_args(data, out)
    args[args.index("--iterations") + 1] = "3"
    code = cli.main(args)
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1 and line == (f"ncsn-train: error: loss became nan at iteration 1; {out / 'checkpoint'} holds "
                                  "iteration 1, the last finite one (try a lower --lr, then --resume)"), line
    from safetensors.torch import load_file

    weights = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_train_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    from ncsn_export.training import cli, trainer

    def no_space(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.out / "checkpoint" / "model.safetensors"))

    monkeypatch.setattr(trainer.Trainer, "save_checkpoint", no_space)
    data, out = _images(tmp_path / "images"), tmp_path / "run"
    code = cli.main(_train_args(data, out))
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1 and line == f"ncsn-train: error: {out / 'checkpoint' / 'model.safetensors'}: No space left on device " \
        "[ENOSPC]", line


def test_export_full_disk_while_writing_sampler_pt_is_one_line(tmp_path, capsys, monkeypatch):
    """sampler.pt goes through Python's write (torch's own zip writer aborts the process on a full disk)."""
    from ncsn_export.exporters import torchscript_export

    class FullDisk:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, data):
            assert len(data) > 0  # torch saved into memory first
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torchscript_export, "open", FullDisk, raising=False)
    out = tmp_path / "out"
    code = export_main([*TOY, "-o", str(out)])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 1 and "No space left on device [ENOSPC]" in line, line
    assert list(tmp_path.iterdir()) == []


def _tiny_tmpfs(path: Path, size: str) -> bool:
    import subprocess

    if os.geteuid() != 0:
        return False
    path.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("size", ["40k", "120k", "160k", "170k", "180k"])
def test_export_on_a_real_full_tmpfs(tmp_path, capsys, size):
    """A real full disk at several points of the export (170k hit sampler.pt on this build: before, the process
    aborted in torch's zip writer with SIGABRT and left its staging directory)."""
    import subprocess

    disk = tmp_path / "disk"
    if not _tiny_tmpfs(disk, size):
        pytest.skip("mounting a tmpfs needs root (run as root to try a real full disk)")
    try:
        code = export_main([*TOY, "-o", str(disk / "out")])
        err = capsys.readouterr().err
        assert code in (0, 1), err
        if code == 1:
            assert _one_line_error(err).endswith(f"No space left on device [ENOSPC]; nothing was written to {disk / 'out'}")
            assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_sample_on_a_full_disk_names_the_file_and_keeps_the_old_output(tmp_path, capsys, monkeypatch):
    """Before: ``ncsn-sample: error: OSError: [Errno 28] No space left on device`` (no file named)."""
    import numpy as np
    from host_exports import build_export
    from ncsn_runtime.cli import main as sample_main

    export = build_export("toy-gmm")
    output = tmp_path / "s.npy"
    output.write_bytes(b"old samples")

    def no_space(handle, array):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", no_space)
    code = sample_main([str(export), "-o", str(output), "-n", "1", "--no-progress"])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and line == f"ncsn-sample: error: {output}: No space left on device [ENOSPC]", line
    assert output.read_bytes() == b"old samples" and sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]
