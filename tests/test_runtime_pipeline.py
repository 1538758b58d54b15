"""NCSNPipeline on real exports: fused == stepwise == torch eager, outputs, callbacks, NaN location, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from host_exports import build_export, tiny_conv_spec
from ncsn_runtime import NCSNPipeline, NCSNPipelineOutput
from ncsn_runtime.manifest import ExportDirectoryError, file_entry, load_manifest, write_manifest
from ncsn_runtime.noise import initial_sample, seeds_for_batch
from ncsn_runtime.steppers import NonFiniteSampleError, langevin_loop

TOL = 1e-4


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")


@pytest.fixture(scope="module")
def toy_dir() -> Path:
    return build_export("toy-gmm")


@pytest.fixture(scope="module")
def conv(conv_dir: Path) -> NCSNPipeline:
    return NCSNPipeline.from_pretrained(conv_dir, provider="cpu")


@pytest.fixture(scope="module")
def toy(toy_dir: Path) -> NCSNPipeline:
    return NCSNPipeline.from_pretrained(toy_dir, provider="cpu")


def _raw(pipe: NCSNPipeline, mode: str, **kwargs) -> np.ndarray:
    return pipe(mode=mode, output_type="raw", progress=False, **kwargs).images


def _torch_eager(spec, pipe: NCSNPipeline, seeds: np.ndarray, num_inference_steps: int | None) -> np.ndarray:
    """The export issue's torch eager sampler on the same initial sample, seeds and schedule."""
    import torch

    from ncsn_export.sampler import AnnealedLangevinSampler

    pipe.scheduler.set_timesteps(num_inference_steps or pipe.scheduler.num_train_timesteps)
    timesteps, _, step_sizes = pipe.scheduler.schedule_arrays()
    x0 = initial_sample(seeds, pipe.sample_shape, *pipe.init_range)
    sampler = AnnealedLangevinSampler(spec.model, torch.from_numpy(pipe.scheduler.train_sigmas), spec.final_denoise).eval()
    with torch.no_grad():
        out = sampler(torch.from_numpy(x0), torch.from_numpy(seeds), torch.from_numpy(timesteps), torch.from_numpy(step_sizes),
                      torch.tensor(pipe.scheduler.num_annealed_steps))
    return out.numpy()


def test_conv_fused_equals_stepwise_equals_torch_eager(conv: NCSNPipeline, conv_dir: Path):
    seeds = [11, 3, 2**40 + 5]
    fused = _raw(conv, "fused", batch_size=3, seed=seeds)
    stepwise = _raw(conv, "stepwise", batch_size=3, seed=seeds)
    assert conv.last_run.engine == "step.onnx + IO binding"
    by_score_pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu", stepwise_graph="score")
    by_score = _raw(by_score_pipe, "stepwise", batch_size=3, seed=seeds)
    eager = _torch_eager(tiny_conv_spec(), conv, np.array(seeds, dtype=np.int64), None)
    assert conv.final_denoise  # the denoising step is part of both paths
    assert fused.shape == (3, 1, 8, 8) and np.isfinite(fused).all()
    assert np.abs(fused - stepwise).max() <= TOL
    assert np.abs(fused - by_score).max() <= TOL
    assert np.abs(fused - eager).max() <= TOL
    assert np.abs(fused[0] - fused[1]).max() > 1e-3  # different seeds, different samples


def test_toy_fused_equals_stepwise_equals_torch_eager(toy: NCSNPipeline, toy_dir: Path):
    from ncsn_export.models.gmm import toy_gmm_spec

    fused = _raw(toy, "fused", batch_size=4, seed=7, num_inference_steps=3)
    stepwise = _raw(toy, "stepwise", batch_size=4, seed=7, num_inference_steps=3)
    eager = _torch_eager(toy_gmm_spec(), toy, seeds_for_batch(7, 4), 3)
    assert fused.shape == (4, 2)
    assert np.abs(fused - stepwise).max() <= TOL
    assert np.abs(fused - eager).max() <= TOL


def test_toy_recovers_mode_weights(toy: NCSNPipeline):
    """The paper's toy result: annealed Langevin puts ~0.8 of the samples in the (5, 5) mode."""
    samples = _raw(toy, "fused", batch_size=500, seed=0)
    upper = ((samples[:, 0] > 0) & (samples[:, 1] > 0)).mean()
    assert 0.74 <= upper <= 0.86, upper
    assert np.abs(np.abs(samples).mean(0) - 5.0).max() < 0.5


def test_sample_depends_only_on_its_seed(conv: NCSNPipeline):
    batch = _raw(conv, "stepwise", batch_size=4, seed=100)
    single = _raw(conv, "stepwise", batch_size=1, seed=[102])
    again = _raw(conv, "stepwise", batch_size=4, seed=100)  # the cached stepper's buffers are reused
    assert np.abs(batch[2] - single[0]).max() <= TOL
    np.testing.assert_array_equal(batch, again)


def test_output_types(conv: NCSNPipeline, toy: NCSNPipeline):
    output = conv(batch_size=2, seed=0, mode="fused", progress=False)
    assert isinstance(output, NCSNPipelineOutput) and output.seeds.tolist() == [0, 1]
    assert len(output.images) == 2 and output.images[0].size == (8, 8) and output.images[0].mode == "L"
    images = conv(batch_size=2, seed=0, mode="fused", output_type="np", progress=False).images
    raw = _raw(conv, "fused", batch_size=2, seed=0)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], np.clip(raw[:, 0], 0, 1), atol=1e-6)
    assert np.asarray(output.images[1]).tolist() == np.floor(images[1, ..., 0] * 255 + 0.5).astype(np.uint8).tolist()
    (tuple_images,) = conv(batch_size=2, seed=0, mode="fused", output_type="np", return_dict=False, progress=False)
    np.testing.assert_array_equal(tuple_images, images)
    toy_out = toy(batch_size=3, seed=0, num_inference_steps=2, mode="fused", output_type="pil", progress=False).images
    assert isinstance(toy_out, np.ndarray) and toy_out.shape == (3, 2)  # non-image models give raw samples


def test_generator_and_random_seeds(conv: NCSNPipeline):
    first = conv(batch_size=2, generator=np.random.default_rng(5), mode="fused", output_type="raw", progress=False)
    second = conv(batch_size=2, generator=np.random.default_rng(5), mode="fused", output_type="raw", progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    replay = conv(batch_size=2, seed=first.seeds.tolist(), mode="fused", output_type="raw", progress=False)
    np.testing.assert_array_equal(first.images, replay.images)
    unseeded = conv(batch_size=2, mode="fused", output_type="raw", progress=False)
    assert unseeded.seeds.dtype == np.int64 and unseeded.seeds.shape == (2,)


def test_callback_on_step_end(conv: NCSNPipeline):
    calls = []

    def record(pipe, step_index, timestep, kwargs):
        calls.append((step_index, timestep, kwargs["position"], kwargs["annealed_step"], kwargs["sample"].shape,
                      kwargs["global_step"]))
        assert kwargs["samples"] is kwargs["sample"]

    reference = _raw(conv, "stepwise", batch_size=2, seed=1)
    with_callback = conv(batch_size=2, seed=1, output_type="raw", progress=False, callback_on_step_end=record)
    assert conv.last_run.mode == "stepwise"  # auto switches to stepwise for callbacks
    np.testing.assert_allclose(with_callback.images, reference, atol=1e-6)
    # step_index is the annealed step within its level (the seed's convention); global_step what it was before
    assert [c[0] for c in calls] == [t for _ in range(4) for t in range(3)]
    assert [c[5] for c in calls] == list(range(4 * 3))
    assert [c[1] for c in calls] == [level for level in range(4) for _ in range(3)]
    assert calls[-1][2:5] == (3, 2, (2, 1, 8, 8))

    def zero_at_end(pipe, step_index, timestep, kwargs):  # the earlier API: "sample" in the returned dict replaces the state
        return {"sample": np.zeros_like(kwargs["sample"])} if kwargs["global_step"] == 11 else None

    zeroed = conv(batch_size=2, seed=1, mode="stepwise", output_type="raw", progress=False, callback_on_step_end=zero_at_end)
    from ncsn_runtime.sampling import denoise

    # only the final denoising step remains
    expected = denoise(conv.graphs, np.zeros((2, 1, 8, 8), np.float32), 3, conv.scheduler.train_sigmas[3])
    np.testing.assert_allclose(zeroed.images, expected, atol=1e-6)
    with pytest.raises(ValueError, match="callback_on_step_end"):
        conv(batch_size=1, seed=0, mode="fused", callback_on_step_end=record)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size.*\[1, 8388608\]"),
        ({"batch_size": -2}, ValueError, "batch_size"),
        ({"batch_size": 1.5}, TypeError, "batch_size"),
        ({"num_inference_steps": 5}, ValueError, r"\[1, 4\].*trained on 4 noise levels"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps"),
        ({"mode": "turbo"}, ValueError, "mode"),
        ({"output_type": "pt"}, ValueError, "output_type"),
        ({"seed": 1, "generator": np.random.default_rng(0)}, ValueError, "not both"),
        ({"generator": 3}, TypeError, "generator"),
        ({"seed": -1}, ValueError, "seed"),
        ({"batch_size": 2, "seed": [1, 2, 3]}, ValueError, "3 entries"),
    ],
)
def test_bad_arguments(conv: NCSNPipeline, kwargs, error, match):
    with pytest.raises(error, match=match):
        conv(progress=False, **kwargs)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_and_corrupt_export_dirs(conv_dir: Path, tmp_path: Path):
    with pytest.raises(ExportDirectoryError, match="not found"):
        NCSNPipeline.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportDirectoryError, match=r"manifest\.json is missing"):
        NCSNPipeline.from_pretrained(tmp_path / "empty")
    flipped = _copy(conv_dir, tmp_path / "flipped")
    data = bytearray((flipped / "score.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (flipped / "score.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportDirectoryError, match=r"score\.onnx sha256"):
        NCSNPipeline.from_pretrained(flipped, provider="cpu")
    truncated = _copy(conv_dir, tmp_path / "truncated")
    (truncated / "sampler.onnx").write_bytes((truncated / "sampler.onnx").read_bytes()[:1000])
    with pytest.raises(ExportDirectoryError, match=r"sampler\.onnx is 1000 bytes.*truncated"):
        NCSNPipeline.from_pretrained(truncated, provider="cpu")  # every graph is checked up front
    missing = _copy(conv_dir, tmp_path / "missing")
    (missing / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ExportDirectoryError, match=r"scheduler_config\.json is listed .* but missing"):
        NCSNPipeline.from_pretrained(missing)


def test_unloadable_graph_with_matching_hash_is_an_export_error(conv_dir: Path, tmp_path: Path):
    broken = _copy(conv_dir, tmp_path / "broken")
    (broken / "sampler.onnx").write_bytes(b"not a protobuf at all")
    manifest = load_manifest(broken)
    manifest["files"]["sampler.onnx"] = file_entry(broken / "sampler.onnx")
    write_manifest(broken, manifest)
    # the external-data walk reads every graph before onnxruntime does: refused when the pipeline is made
    with pytest.raises(ExportDirectoryError, match=r"sampler\.onnx is not a readable ONNX model"):
        NCSNPipeline.from_pretrained(broken, provider="cpu")


def _with_scheduler(src: Path, dst: Path, **overrides) -> Path:
    """Copy of an export with changed scheduler config (manifest hashes updated)."""
    _copy(src, dst)
    path = dst / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **overrides}))
    manifest = load_manifest(dst)
    manifest["files"]["scheduler/scheduler_config.json"] = file_entry(path)
    write_manifest(dst, manifest)
    return dst


def test_non_finite_samples_are_located(conv_dir: Path, tmp_path: Path):
    pipe = NCSNPipeline.from_pretrained(_with_scheduler(conv_dir, tmp_path / "blowup", sampling_eps=1e37), provider="cpu")
    with pytest.raises(NonFiniteSampleError, match=r"position 0 .*annealed step 0") as stepwise:
        pipe(batch_size=2, seed=0, mode="stepwise", progress=False)
    assert (stepwise.value.position, stepwise.value.level, stepwise.value.annealed_step) == (0, 0, 0)
    assert stepwise.value.samples == [0, 1]
    with pytest.raises(NonFiniteSampleError, match=r"final samples .*mode='stepwise'"):
        pipe(batch_size=2, seed=0, mode="fused", progress=False)


class _FakeStepper:
    """x <- x + 1 per step; NaN in sample 1 from (position 2, step 1) on."""

    def __init__(self, nan_from: int | None = 2 * 4 + 1) -> None:
        self.x = np.zeros((3, 2), np.float32)
        self.steps = []
        self.nan_from = nan_from

    def step(self, level, step_size, counter):
        self.steps.append(counter)
        self.x = self.x + 1
        if self.nan_from is not None and counter >= self.nan_from:
            self.x[1, 0] = np.nan

    def read(self):
        return self.x.copy()

    def write(self, x):
        self.x = np.array(x)


def test_langevin_loop_locates_first_non_finite_step_by_replay():
    stepper = _FakeStepper()
    with pytest.raises(NonFiniteSampleError) as info:
        langevin_loop(stepper, np.arange(5), np.ones(5, np.float32), 4)
    assert (info.value.position, info.value.level, info.value.annealed_step, info.value.samples) == (2, 2, 1, [1])
    assert stepper.steps == list(range(12)) + [8, 9]  # ran level 2 once, then replayed it up to the bad step


def test_stepwise_loop_reads_once_per_level_without_callback():
    class Counting(_FakeStepper):
        reads = 0

        def read(self):
            Counting.reads += 1
            return super().read()

    langevin_loop(Counting(nan_from=None), np.arange(3), np.ones(3, np.float32), 5)
    assert Counting.reads == 3 + 1  # once per level (+ the start): no per-step device-to-host copies
