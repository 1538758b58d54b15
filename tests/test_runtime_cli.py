"""``ncsn-sample``: PNG grid / scatter plot / .npy on real exports, stable seeds across batch sizes, errors, no torch."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from host_exports import build_export
from ncsn_runtime.cli import main
from ncsn_runtime.pipeline import NCSNPipeline
from PIL import Image


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")


def test_toy_export_to_npy_and_scatter_png(toy_dir: Path, tmp_path: Path, capsys):
    npy = tmp_path / "toy.npy"
    assert main([str(toy_dir), "--num-samples", "7", "--seed", "5", "--steps", "3", "--output", str(npy), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {npy}: 7 raw samples" in printed and "seeds 5..11" in printed
    assert "provider CPUExecutionProvider, graph sampler (sampler.onnx (fused Loop)), mode fused" in printed
    assert "time:" in printed
    samples = np.load(npy)
    pipe = NCSNPipeline.from_pretrained(toy_dir, provider="cpu")
    expected = pipe(batch_size=7, seed=5, num_inference_steps=3, mode="fused", output_type="raw", progress=False).images
    assert samples.shape == (7, 2) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, expected)

    chunked = tmp_path / "chunked.npy"
    assert main([str(toy_dir), "-n", "7", "-s", "5", "--steps", "3", "--batch-size", "3", "--mode", "stepwise",
                 "-o", str(chunked), "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(chunked), samples, atol=1e-4)  # sample n uses seed S + n whatever the batch

    png = tmp_path / "toy.png"
    assert main([str(toy_dir), "-n", "200", "-s", "0", "-o", str(png), "--no-progress"]) == 0
    assert "a scatter plot of 200 2-D samples" in capsys.readouterr().out
    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape == (512, 512, 3)
    blue = (picture[..., 2] > 150) & (picture[..., 0] < 100)
    rows, cols = np.nonzero(blue)
    # the (5, 5) mode is up-right of the centre and holds most points; the (-5, -5) mode down-left
    up_right = ((cols > 256) & (rows < 256)).sum()
    down_left = ((cols < 256) & (rows > 256)).sum()
    assert up_right > 2 * down_left > 0


def test_image_export_to_png_grid(conv_dir: Path, tmp_path: Path, capsys):
    png = tmp_path / "grid.png"
    assert main([str(conv_dir), "-n", "5", "-s", "1", "-o", str(png), "--no-progress"]) == 0
    assert "a grid of 5 images (1x8x8, shown 8x)" in capsys.readouterr().out
    grid = np.asarray(Image.open(png))
    assert grid.shape == (2 * (64 + 2) + 2, 3 * (64 + 2) + 2)  # 3 per row, 8x8 enlarged 8x to 64 px, 2 px gaps
    pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    first = pipe(batch_size=1, seed=1, mode="fused", output_type="np", progress=False).images[0, ..., 0]
    expected = np.floor(first * 255 + 0.5).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1)  # nearest-neighbour
    np.testing.assert_array_equal(grid[2:66, 2:66], expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "out.jpg"], "must end in .png or .npy"),
        (["-o", "out.npy", "-n", "0"], "--num-samples must be >= 1"),
        (["-o", "out.npy", "--steps", "99"], r"\[1, 4\]"),
        (["-o", "out.npy", "--batch-size", "0"], "--batch-size"),
        (["-o", "out.npy", "--provider", "cuda"], "cuda"),
    ],
)
def test_cli_errors_exit_2_with_a_message(conv_dir: Path, tmp_path: Path, capsys, args, message):
    if "--provider" in args:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            pytest.skip("onnxruntime-gpu is installed: provider='cuda' may work here")
    args = [a if not a.startswith("out.") else str(tmp_path / a) for a in args]
    assert main([str(conv_dir), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncsn-sample: error:")
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_missing_export_dir(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nope"), "-o", str(tmp_path / "x.npy")]) == 2
    assert "export directory not found" in capsys.readouterr().err


def test_full_sampling_never_imports_torch(toy_dir: Path, conv_dir: Path, tmp_path: Path):
    """ncsn-sample (fused + stepwise), the pipeline and inpainting, in a fresh process: torch never loads."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from ncsn_runtime.cli import main
        from ncsn_runtime import NCSNPipeline
        assert main([{str(toy_dir)!r}, "-n", "8", "-o", {str(tmp_path / "t.png")!r}, "--no-progress"]) == 0
        assert main([{str(conv_dir)!r}, "-n", "4", "--mode", "stepwise", "-o", {str(tmp_path / "c.npy")!r}]) == 0
        pipe = NCSNPipeline.from_pretrained({str(conv_dir)!r}, provider="auto")
        images = pipe(batch_size=2, seed=0, progress=False).images
        filled = pipe.inpaint(np.zeros((1, 8, 8), np.float32), np.eye(8), seed=0, progress=False).images
        assert len(images) == 2 and filled.shape == (1, 8, 8, 1)
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "ncsn_export")))
        assert not loaded, loaded
        print("torch-free")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch-free")
    assert np.load(tmp_path / "c.npy").shape == (4, 1, 8, 8)
