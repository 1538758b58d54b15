"""Inpainting (Song & Ermon 2019, Algorithm 2) in the runtime: semantics, reproducibility, mask shapes, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from host_exports import build_export
from ncsn_runtime import NCSNPipeline
from ncsn_runtime.inpaint import INPAINT_STREAM, KnownRegionProjection, prepare_image_and_mask
from ncsn_runtime.noise import counter_normal, initial_sample, langevin_counter, seeds_for_batch
from ncsn_runtime.schedule import denoise_update


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")


@pytest.fixture(scope="module")
def conv(conv_dir: Path) -> NCSNPipeline:
    return NCSNPipeline.from_pretrained(conv_dir, provider="cpu")


def _left_half_mask() -> np.ndarray:
    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1.0
    return mask


def _reference_inpaint(export_dir: Path, pipe: NCSNPipeline, image: np.ndarray, mask: np.ndarray, seeds: np.ndarray):
    """Algorithm 2 written out with score.onnx and plain numpy, as a check on the pipeline's plumbing."""
    session = ort.InferenceSession(str(export_dir / "score.onnx"), providers=["CPUExecutionProvider"])
    pipe.scheduler.set_timesteps(pipe.scheduler.num_train_timesteps)
    timesteps, sigmas, step_sizes = pipe.scheduler.schedule_arrays()
    steps = pipe.scheduler.num_annealed_steps
    x = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)
    for i, (level, sigma, alpha) in enumerate(zip(timesteps, sigmas, step_sizes, strict=True)):
        y = image + sigma * counter_normal(seeds, i, pipe.sample_shape, stream=INPAINT_STREAM)
        x = x * (1 - mask) + y * mask
        for t in range(steps):
            score = session.run(None, {"sample": x, "timestep": np.full(len(x), level, np.int64)})[0]
            z = counter_normal(seeds, langevin_counter(i, t, steps), pipe.sample_shape)
            x = x + 0.5 * alpha * score + np.sqrt(alpha) * z
            x = x * (1 - mask) + y * mask
    last = int(timesteps[-1])
    score = session.run(None, {"sample": x, "timestep": np.full(len(x), last, np.int64)})[0]
    x = denoise_update(x, score, pipe.scheduler.train_sigmas[last] ** 2)  # the export's final denoising step
    return x * (1 - mask) + image * mask


def test_inpaint_matches_algorithm_2_and_keeps_the_known_region(conv: NCSNPipeline, conv_dir: Path):
    image = np.random.default_rng(0).uniform(0, 1, (1, 8, 8)).astype(np.float32)
    mask = _left_half_mask()
    out = conv.inpaint(image, mask, seed=4, batch_size=3, output_type="raw", progress=False)
    samples = out.images
    assert samples.shape == (3, 1, 8, 8) and np.isfinite(samples).all()
    np.testing.assert_array_equal(samples[..., :4], np.broadcast_to(image[..., :4], (3, 1, 8, 4)))  # known: reproduced
    assert np.abs(samples[..., 4:] - image[..., 4:]).max(axis=(1, 2, 3)).min() > 0.05  # unknown: filled in, per sample
    assert np.abs(samples[0, ..., 4:] - samples[1, ..., 4:]).max() > 1e-3  # each seed fills differently
    reference = _reference_inpaint(conv_dir, conv, np.broadcast_to(image, (3, 1, 8, 8)), mask, seeds_for_batch(4, 3))
    np.testing.assert_allclose(samples, reference, atol=1e-4)
    assert conv.last_run.graph == "inpaint" and conv.last_run.mode == "fused (inpaint)"  # auto: inpaint.onnx
    stepwise = conv.inpaint(image, mask, seed=4, batch_size=3, output_type="raw", progress=False, mode="stepwise").images
    assert conv.last_run.graph == "step" and conv.last_run.mode == "stepwise (inpaint)"
    np.testing.assert_allclose(stepwise, reference, atol=1e-4)
    by_score = NCSNPipeline.from_pretrained(conv_dir, provider="cpu", stepwise_graph="score")
    np.testing.assert_allclose(by_score.inpaint(image, mask, seed=4, batch_size=3, output_type="raw", progress=False,
                                                mode="stepwise").images, samples, atol=1e-4)
    assert by_score.last_run.graph == "score"
    again = conv.inpaint(image, mask, seed=4, batch_size=3, output_type="raw", progress=False).images
    np.testing.assert_array_equal(again, samples)


@pytest.mark.parametrize("shape", [(8, 8), (1, 8, 8), (2, 1, 8, 8)])
def test_any_broadcastable_mask_shape(conv: NCSNPipeline, shape):
    image = np.full((2, 1, 8, 8), 0.5, np.float32)
    mask = np.zeros(shape, bool)
    mask[..., 2:5, 1:7] = True  # a box, not the original code's left half
    samples = conv.inpaint(image, mask, seed=0, output_type="raw", progress=False).images
    box = np.broadcast_to(mask, (2, 1, 8, 8))
    assert (samples[box] == 0.5).all() and np.abs(samples[~box] - 0.5).max() > 0.05
    images = conv.inpaint(image, mask, seed=0, output_type="np", progress=False).images
    assert images.shape == (2, 8, 8, 1)


def test_toy_inpainting_completes_the_right_mode():
    """Known x-coordinate -5 or +5: the free y-coordinate is drawn from that mixture component."""
    toy = NCSNPipeline.from_pretrained(build_export("toy-gmm"), provider="cpu")
    image = np.array([[-5.0, 0.0]] * 32 + [[5.0, 0.0]] * 32, np.float32)
    samples = toy.inpaint(image, np.array([1.0, 0.0]), seed=0, progress=False).images
    assert samples.shape == (64, 2)
    np.testing.assert_array_equal(samples[:, 0], image[:, 0])
    assert abs(samples[:32, 1].mean() + 5) < 1.0 and abs(samples[32:, 1].mean() - 5) < 1.0


@pytest.mark.parametrize(
    ("image", "mask", "batch_size", "error", "match"),
    [
        (np.zeros((1, 7, 8)), _left_half_mask(), None, ValueError, "`image` must have shape"),
        (np.zeros((3, 1, 8, 8)), _left_half_mask(), 2, ValueError, "3 images but batch_size is 2"),
        (np.zeros((1, 8, 8)), np.ones((7, 8)), None, ValueError, "does not broadcast"),
        (np.zeros((1, 8, 8)), np.full((8, 8), 2.0), None, ValueError, r"only 0 and 1 .* in \[2, 2\]"),
        (np.zeros((1, 8, 8)), np.where(np.arange(8) < 4, 1.0, 0.5)[None].repeat(8, 0), None, ValueError,
         r"32 other values in \[0.5, 0.5\]"),
        (np.zeros((1, 8, 8)), np.ones((8, 8)), None, ValueError, "all 1 .*nothing to fill in"),
        (np.zeros((1, 8, 8)), np.zeros((8, 8)), None, ValueError, "all 0 .*plain sampling"),
        (np.zeros((2, 1, 8, 8)), np.stack([_left_half_mask(), np.ones((8, 8))])[:, None], None, ValueError, "sample 1 is all 1"),
        (np.full((1, 8, 8), np.nan), _left_half_mask(), None, ValueError, "NaN"),
        (np.zeros((1, 8, 8)), np.array(["a"]), None, TypeError, "mask"),
        (np.zeros((1, 8, 8)), _left_half_mask(), 0, ValueError, "batch_size"),
    ],
)
@pytest.mark.parametrize("mode", ["fused", "stepwise"])
def test_inpaint_bad_input(conv: NCSNPipeline, image, mask, batch_size, error, match, mode):
    with pytest.raises(error, match=match):
        conv.inpaint(image, mask, seed=0, batch_size=batch_size, progress=False, mode=mode)


def test_projection_uses_sigma_of_the_level_and_its_own_stream():
    image, mask = prepare_image_and_mask(np.ones((2,)), np.array([1.0, 0.0]), (2,), batch_size=3)
    seeds = np.array([1, 2, 3])
    projection = KnownRegionProjection(image, mask, seeds, np.array([4.0, 0.5], np.float32))
    x = np.full((3, 2), 9.0, np.float32)
    out = projection.project(1, x)
    z = counter_normal(seeds, 1, (2,), stream=INPAINT_STREAM)
    np.testing.assert_allclose(out[:, 0], 1.0 + 0.5 * z[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], x[:, 1])
    assert not np.allclose(z, counter_normal(seeds, 1, (2,)))  # not the Langevin stream
