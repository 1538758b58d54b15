"""Pictures from ``ncsn-sample``: enlarged grids with a gap (``--scale``), and the annealing as a picture / animation
(``--trajectory OUT.png|OUT.gif``), all checked pixel by pixel on a real (tiny) export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from host_exports import TINY_CONFIG, build_export
from ncsn_runtime import arguments
from ncsn_runtime.cli import main
from ncsn_runtime.images import (
    GRID_GAP,
    MAX_PICTURE_PIXELS,
    MAX_SCALE,
    check_scale,
    default_scale,
    make_grid,
    save_grid_png,
    to_uint8,
)
from ncsn_runtime.pipeline import NCSNPipeline
from ncsn_runtime.trajectory import LevelRecorder
from PIL import Image, ImageSequence

LEVELS, STEPS = TINY_CONFIG["num_train_timesteps"], TINY_CONFIG["num_annealed_steps"]
TINY = 8  # tiny-conv images are 1 x 8 x 8, so the automatic scale is 8 (64 px)
CELL = TINY * 8 + GRID_GAP  # one enlarged image and the gap after it


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")


def cell(picture: np.ndarray, row: int, col: int, size: int, gap: int = GRID_GAP) -> np.ndarray:
    """The image at (row, col) of a grid of ``size`` x ``size`` images separated by ``gap`` pixels."""
    top, left = gap + row * (size + gap), gap + col * (size + gap)
    return picture[top : top + size, left : left + size]


def level_states(conv_dir: Path, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [L, N, 8, 8] the samples after every level, uint8 [N, 8, 8] the returned samples) from a stepwise run
    whose callback records every step (independent of LevelRecorder's choice of steps)."""
    pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    every: list[np.ndarray] = []
    output = pipe(batch_size=count, seed=seed, mode="stepwise", output_type="np", progress=False,
                  callback_on_step_end=lambda _p, _i, _t, kwargs: every.append(np.array(kwargs["sample"])) or {})
    assert len(every) == LEVELS * STEPS
    levels = np.stack([every[(level + 1) * STEPS - 1] for level in range(LEVELS)])  # last step of each level
    return to_uint8(levels[:, :, 0]), to_uint8(output.images[..., 0])


# -- grids ------------------------------------------------------------------------------------------------------
def test_grid_scale_and_gap_from_pixels():
    images = np.arange(5 * 3 * 4, dtype=np.uint8).reshape(5, 3, 4, 1) + 1  # 5 distinct 3x4 images, no pixel = gap
    grid = make_grid(images, nrow=3, scale=2)
    assert grid.shape == (2 * (6 + 2) + 2, 3 * (8 + 2) + 2, 1)  # 2 rows x 3 columns of 6x8, 2 px gaps and frame
    gap = np.ones(grid.shape[:2], dtype=bool)
    for index, image in enumerate(images):
        top, left = 2 + (index // 3) * 8, 2 + (index % 3) * 10
        block = grid[top : top + 6, left : left + 8, 0]
        np.testing.assert_array_equal(block[::2, ::2], image[..., 0])  # nearest-neighbour: 2x2 blocks of one value
        np.testing.assert_array_equal(block, image[..., 0].repeat(2, 0).repeat(2, 1))
        gap[top : top + 6, left : left + 8] = False
    assert (grid[gap, 0] == 128).all() and gap.sum() == grid.shape[0] * grid.shape[1] - 5 * 48  # grey gap everywhere else


@pytest.mark.parametrize(("size", "scale"), [(28, 3), (8, 8), (32, 2), (64, 1), (100, 1), (3, 16), (1, 16)])
def test_default_scale_reaches_64_px(size, scale):
    assert default_scale(size, size) == scale
    assert default_scale(size, 4 * size) == scale  # the shorter side decides
    assert size * scale >= 64 or scale == MAX_SCALE


def test_save_grid_png_default_is_at_least_64_px(tmp_path: Path):
    images = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    path = save_grid_png(images, tmp_path / "g.png")
    with Image.open(path) as picture:
        assert picture.size == (4 * (84 + 2) + 2, 4 * (84 + 2) + 2)  # 28 px digits shown at 84 px
        pixels = np.asarray(picture)
    np.testing.assert_array_equal(cell(pixels, 3, 1, 84), to_uint8(images[13, ..., 0]).repeat(3, 0).repeat(3, 1))
    with Image.open(save_grid_png(images, tmp_path / "one.png", scale=1)) as picture:
        assert picture.size == (4 * 30 + 2, 4 * 30 + 2)


@pytest.mark.parametrize("bad", [0, -1, MAX_SCALE + 1, 2.5, True, "3", None])
def test_check_scale_refuses(bad):
    with pytest.raises(ValueError, match=r"`scale` must be an integer in \[1, 16\]"):
        check_scale(bad)


def test_scale_bounds_have_one_source():
    assert arguments.MAX_SCALE is MAX_SCALE


# -- ncsn-sample --scale ----------------------------------------------------------------------------------------
def test_cli_scale_writes_the_asked_size(conv_dir: Path, tmp_path: Path, capsys):
    png = tmp_path / "g.png"
    assert main([str(conv_dir), "-n", "4", "-s", "2", "--scale", "3", "-o", str(png), "--no-progress"]) == 0
    assert "a grid of 4 images (1x8x8, shown 3x)" in capsys.readouterr().out
    pixels = np.asarray(Image.open(png))
    assert pixels.shape == (2 * (24 + 2) + 2, 2 * (24 + 2) + 2)
    _, final = level_states(conv_dir, 2, 4)
    for index in range(4):
        np.testing.assert_array_equal(cell(pixels, index // 2, index % 2, 24), final[index].repeat(3, 0).repeat(3, 1))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scale", "0"], r"--scale must be in \[1, 16\].*got 0"),
        (["--scale", "-2"], r"--scale must be in \[1, 16\].*got -2"),
        (["--scale", "17"], r"--scale must be in \[1, 16\].*got 17"),
        (["--scale", "abc"], r"argument --scale: invalid int value: 'abc'"),
        (["--scale", "2.5"], r"argument --scale: invalid int value: '2.5'"),
        (["-n", "20000", "--scale", "16"], r"--output: 20000 images of 8x8 at scale 16 make a .* picture, over the "
                                           rf"{MAX_PICTURE_PIXELS:,}-pixel limit"),
        (["--trajectory", "t.jpg"], r"--trajectory must end in \.png or \.gif, got 't\.jpg'"),
        (["--trajectory", "out.png"], "--trajectory and --output must be different files"),
        (["--trajectory", "t.png", "--mode", "fused"], "--trajectory needs the stepwise path, and --mode fused is fused: the "
                                                      "fused graph runs every noise level in one call"),
        (["--trajectory", "t.gif", "--graph", "sampler"], "--trajectory needs the stepwise path, and --graph sampler is fused"),
        (["--trajectory", "t.png", "--engine", "ray"], "--trajectory needs --engine local"),
    ],
)
def test_cli_refuses_bad_pictures(conv_dir: Path, tmp_path: Path, capsys, args, message):
    args = [str(tmp_path / a) if a.endswith((".png", ".gif", ".jpg")) else a for a in args]
    try:
        code = main([str(conv_dir), "-o", str(tmp_path / "out.png"), "--no-progress", *args])
    except SystemExit as exit_:  # argparse's own errors (a non-integer) and parser.error
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ncsn-sample: error:") and err.count("\n") == 1, err  # one line, no traceback
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())  # refused before sampling: nothing written


def test_cli_trajectory_refused_for_non_image_models(tmp_path: Path, capsys):
    toy = build_export("toy-gmm")
    assert main([str(toy), "-n", "4", "-o", str(tmp_path / "t.npy"), "--trajectory", str(tmp_path / "a.png"),
                 "--no-progress"]) == 2
    assert "--trajectory needs an image model; this export's samples have shape [2]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# -- the annealing ----------------------------------------------------------------------------------------------
def test_level_recorder_keeps_the_last_step_of_each_level(conv_dir: Path):
    pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    recorder = LevelRecorder(pipe.scheduler.num_annealed_steps)
    output = pipe(batch_size=3, seed=7, output_type="raw", progress=False, callback_on_step_end=recorder)
    assert pipe.last_run.mode == "stepwise"  # a callback means stepwise
    fused = pipe(batch_size=3, seed=7, mode="fused", output_type="raw", progress=False).images
    np.testing.assert_allclose(output.images, fused, atol=1e-4)  # the recorder changes nothing
    expected, _ = level_states(conv_dir, 7, 3)
    assert len(recorder.levels) == LEVELS
    np.testing.assert_array_equal(to_uint8(np.stack(recorder.levels)[:, :, 0]), expected)
    assert recorder.sigmas == pytest.approx(list(pipe.scheduler.schedule_arrays()[1]))


def test_cli_trajectory_png_rows_are_samples_columns_are_levels(conv_dir: Path, tmp_path: Path, capsys):
    grid_png, trajectory_png = tmp_path / "grid.png", tmp_path / "traj.png"
    assert main([str(conv_dir), "-n", "3", "-s", "5", "-o", str(grid_png), "--trajectory", str(trajectory_png),
                 "--no-progress"]) == 0
    printed = capsys.readouterr()
    wrote = f"wrote {trajectory_png}: the annealing of 3 samples (3 rows) over {LEVELS} noise levels ({LEVELS} columns"
    assert wrote in printed.out
    assert "sampled stepwise (step.onnx) because the fused graph cannot stop between noise levels" in printed.out
    assert "mode stepwise" in printed.out
    trajectory, grid = np.asarray(Image.open(trajectory_png)), np.asarray(Image.open(grid_png))
    assert trajectory.shape == (3 * CELL + GRID_GAP, LEVELS * CELL + GRID_GAP)  # N rows x L columns of 64 px
    levels, final = level_states(conv_dir, 5, 3)
    for sample in range(3):
        for level in range(LEVELS - 1):
            np.testing.assert_array_equal(cell(trajectory, sample, level, 64), levels[level, sample].repeat(8, 0).repeat(8, 1))
        last = cell(trajectory, sample, LEVELS - 1, 64)
        np.testing.assert_array_equal(last, final[sample].repeat(8, 0).repeat(8, 1))  # after the final denoising step
        np.testing.assert_array_equal(last, cell(grid, sample // 2, sample % 2, 64))  # = the --output grid's image
    assert not np.array_equal(levels[-1], final)  # the export's final denoising step shows in the last column

    chunked = tmp_path / "chunked.png"
    assert main([str(conv_dir), "-n", "3", "-s", "5", "--batch-size", "2", "-o", str(tmp_path / "g2.png"),
                 "--trajectory", str(chunked), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(chunked)), trajectory)  # sample n is seed S + n in any batch


def test_cli_trajectory_gif_one_frame_per_level(conv_dir: Path, tmp_path: Path, capsys):
    grid_png, gif = tmp_path / "grid.png", tmp_path / "anneal.gif"
    assert main([str(conv_dir), "-n", "4", "-s", "1", "--num-inference-steps", "3", "--scale", "4", "-o", str(grid_png),
                 "--trajectory", str(gif), "--no-progress"]) == 0
    assert "an animation of 3 frames (one per noise level" in capsys.readouterr().out
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.info.get("loop") == 0
        frames = [np.asarray(frame.convert("L")) for frame in ImageSequence.Iterator(animation)]
    grid = np.asarray(Image.open(grid_png))
    assert len(frames) == 3  # --num-inference-steps 3: three levels, three frames
    assert all(frame.shape == grid.shape == (2 * (32 + 2) + 2,) * 2 for frame in frames)
    np.testing.assert_array_equal(frames[-1], grid)  # the last frame is the written grid
    assert not np.array_equal(frames[0], frames[-1])


@pytest.mark.parametrize("graph", ["score", "gpu_step"])
def test_cli_trajectory_through_every_stepwise_graph(conv_dir: Path, tmp_path: Path, capsys, graph):
    """Any stepwise graph records the same annealing (the hosts agree to 1e-4, so 8-bit pixels to one count)."""
    reference, other = tmp_path / "step.png", tmp_path / f"{graph}.png"
    for path, name in ((reference, "step"), (other, graph)):
        assert main([str(conv_dir), "-n", "2", "-s", "9", "--graph", name, "-o", str(tmp_path / f"g-{name}.png"),
                     "--trajectory", str(path), "--no-progress"]) == 0
        assert f"sampled stepwise ({name}.onnx)" in capsys.readouterr().out
    first, second = (np.asarray(Image.open(path), dtype=int) for path in (reference, other))
    assert first.shape == second.shape == (2 * CELL + GRID_GAP, LEVELS * CELL + GRID_GAP)
    assert np.abs(first - second).max() <= 1


def test_help_says_trajectory_runs_stepwise():
    from ncsn_runtime.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "--trajectory OUT.png|OUT.gif" in text and "Runs stepwise" in text and "cannot stop between levels" in text
    assert "--scale K" in text and "at least 64 px" in text
