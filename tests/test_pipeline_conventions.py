"""The seed's (diffusers-ncsn's) pipeline conventions on ``ncsn_runtime.NCSNPipeline`` (issue 20, part 2).

The first test ports the flow of diffusers-ncsn's own ``tests/pipeline_ncsn_test.py`` onto a tiny export: a
``callback_on_step_end`` saves one grid at the first annealed step of every level, then the grids become a GIF.
The others pin each convention: callback names and returns, diffusers' ``PipelineCallback`` objects, ``to``,
the progress bar, ``decode_samples`` / ``numpy_to_pil`` and ``generator`` objects with ``initial_seed()``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from host_exports import build_export
from ncsn_runtime import NCSNPipeline, providers
from ncsn_runtime.noise import initial_sample, langevin_counter, seeds_for_batch
from ncsn_runtime.providers import CPU_PROVIDER, CUDA_PROVIDER, Device, ProviderError

ROWS = COLS = 4


@pytest.fixture(scope="module")
def conv_dir() -> Path:
    return build_export("tiny-conv")  # 1x8x8 images, 4 levels x 3 annealed steps, final denoising step


@pytest.fixture
def conv(conv_dir: Path) -> NCSNPipeline:
    pipe = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _raw(pipe: NCSNPipeline, **kwargs) -> np.ndarray:
    return pipe(output_type="raw", **kwargs).images


# -- the seed's flow ------------------------------------------------------------------------------------
def test_seed_flow_one_grid_per_level_then_a_gif(conv_dir: Path, tmp_path: Path):
    """tests/pipeline_ncsn_test.py of diffusers-ncsn, with the import changed and torch tensors -> numpy arrays."""
    torch = pytest.importorskip("torch")
    diffusers_utils = pytest.importorskip("diffusers.utils", reason="the diffusers extra is not installed")
    from PIL import Image

    pipe = NCSNPipeline.from_pretrained(conv_dir)
    pipe = pipe.to(torch.device("cpu"))
    pipe.set_progress_bar_config(disable=True)
    saved = {}

    def decode_samples(pipe, step_index, timestep, callback_kwargs):
        if step_index != 0:
            return callback_kwargs
        samples = callback_kwargs["samples"].copy()  # the seed: .detach().clone()
        saved[timestep] = samples
        images = pipe.numpy_to_pil(pipe.decode_samples(samples))  # the seed: samples.cpu().numpy()
        image = diffusers_utils.make_image_grid(images, rows=ROWS, cols=COLS)
        save_steps_dir = tmp_path / "timesteps"
        save_steps_dir.mkdir(parents=True, exist_ok=True)
        image.save(save_steps_dir / f"timestep={timestep:03d}_annealing={step_index:03d}.png")
        return callback_kwargs

    output = pipe(batch_size=ROWS * COLS, num_inference_steps=4, generator=torch.manual_seed(0),
                  callback_on_step_end=decode_samples, callback_on_step_end_tensor_inputs=["samples"])
    assert pipe.last_run.mode == "stepwise"  # the callback forced it
    final = diffusers_utils.make_image_grid(images=output.images, rows=ROWS, cols=COLS)
    final.save(tmp_path / "final.png")

    paths = sorted((tmp_path / "timesteps").glob("*.png"))
    assert [p.name for p in paths] == [f"timestep={level:03d}_annealing=000.png" for level in range(4)]  # one per level
    grids = [np.asarray(Image.open(p)) for p in paths]  # make_image_grid pastes the mode-L tiles on an RGB canvas
    assert all(g.shape == (ROWS * 8, COLS * 8, 3) and (g == g[..., :1]).all() for g in grids)  # 4 x 4 tiles of 8 x 8, gray
    assert final.size == (COLS * 8, ROWS * 8)

    # the first grid is the state after the first Langevin step of level 0, computed here without the callback
    seeds = seeds_for_batch(0, ROWS * COLS)
    timesteps, _, step_sizes = pipe._schedule(4)
    stepper = pipe.stepper(ROWS * COLS)
    stepper.reset(initial_sample(seeds, pipe.sample_shape, *pipe.init_range), seeds)
    stepper.step(int(timesteps[0]), float(step_sizes[0]), langevin_counter(0, 0, pipe.scheduler.num_annealed_steps))
    np.testing.assert_array_equal(saved[0], stepper.read())
    first_tile = np.asarray(pipe.numpy_to_pil(pipe.decode_samples(stepper.read()))[0])
    np.testing.assert_array_equal(grids[0][:8, :8, 0], first_tile)
    assert all(np.abs(saved[a] - saved[b]).max() > 1e-3 for a, b in ((0, 1), (1, 2), (2, 3)))  # the state moves

    # the callback returned the kwargs unchanged: the same samples as without it, and as seed=0
    plain = pipe(batch_size=ROWS * COLS, num_inference_steps=4, seed=0, mode="stepwise", output_type="raw").images
    np.testing.assert_allclose(_raw(pipe, batch_size=ROWS * COLS, num_inference_steps=4, generator=torch.manual_seed(0),
                                    callback_on_step_end=decode_samples), plain, atol=0)
    np.testing.assert_array_equal(np.asarray(final), np.asarray(diffusers_utils.make_image_grid(
        pipe.numpy_to_pil(pipe.decode_samples(plain)), rows=ROWS, cols=COLS)))

    # the GIF (the seed uses matplotlib's ArtistAnimation and repeats the last frame 5 times; Pillow does it alone)
    frames = [Image.open(p) for p in paths]
    gif = tmp_path / "mnist.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[300] * (len(frames) - 1) + [1500], loop=0)
    with Image.open(gif) as animation:
        assert animation.n_frames == 4 and animation.size == (COLS * 8, ROWS * 8)


# -- callbacks ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("names", "error", "match"),
    [
        (["latents"], ValueError, r"has to be in \['samples'\], but found \['latents'\]"),
        (["samples", "latents", "prompt_embeds"], ValueError, r"but found \['latents', 'prompt_embeds'\]"),
        (["sample"], ValueError, "ask for 'samples'"),
        ("samples", TypeError, "must be a list of names"),
        ([3], TypeError, "must be a list of names"),
    ],
)
def test_bad_callback_tensor_inputs_are_refused(conv: NCSNPipeline, names, error, match):
    calls = []
    with pytest.raises(error, match=match):
        conv(batch_size=1, seed=0, callback_on_step_end=lambda *a: calls.append(a),
             callback_on_step_end_tensor_inputs=names)
    with pytest.raises(error, match=match):  # checked even without a callback, as in diffusers' check_inputs
        conv(batch_size=1, seed=0, callback_on_step_end_tensor_inputs=names)
    assert calls == []  # refused before any step ran


def test_a_callback_must_be_callable_and_cannot_run_fused(conv: NCSNPipeline):
    with pytest.raises(TypeError, match="callback_on_step_end` must be callable"):
        conv(batch_size=1, seed=0, callback_on_step_end={"samples": None})
    with pytest.raises(ValueError, match="callback_on_step_end"):
        conv(batch_size=1, seed=0, mode="fused", callback_on_step_end=lambda *a: None)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda x: {"samples": x[:1]}, ValueError, r"shape \(1, 1, 8, 8\); the state is \(2, 1, 8, 8\)"),
        (lambda x: {"samples": x[..., 0]}, ValueError, "shape"),
        (lambda x: {"samples": np.zeros(x.shape, np.int32)}, TypeError, "dtype int32"),
        (lambda x: {"samples": np.where(np.arange(2)[:, None, None, None] == 1, np.nan, x)}, ValueError,
         r"NaN/inf .* in samples \[1\]"),
        (lambda x: {"samples": np.full(x.shape, 1e300)}, ValueError, "NaN/inf"),  # beyond float32
        (lambda x: {"samples": "zeros"}, TypeError, "dtype <U5"),
        (lambda x: [x], TypeError, "must return a dict"),
        (lambda x: {"samples": x * 0, "sample": x * 2}, ValueError, "different arrays under 'samples' and 'sample'"),
    ],
)
def test_bad_callback_returns_are_refused(conv: NCSNPipeline, make, error, match):
    def callback(pipe, step_index, timestep, kwargs):
        return make(kwargs["samples"]) if kwargs["global_step"] == 4 else kwargs

    with pytest.raises(error, match=match):
        conv(batch_size=2, seed=0, callback_on_step_end=callback)


def test_returned_samples_replace_the_state(conv: NCSNPipeline):
    from ncsn_runtime.sampling import denoise

    last_level = conv.scheduler.num_train_timesteps - 1
    expected = denoise(conv.graphs, np.zeros((2, 1, 8, 8), np.float32), last_level, conv.scheduler.train_sigmas[last_level])

    def replace(pipe, step_index, timestep, kwargs):  # float64 zeros at the last step: cast, then only the denoise is left
        if timestep == last_level and step_index == pipe.scheduler.num_annealed_steps - 1:
            return {"samples": np.zeros(kwargs["samples"].shape, np.float64)}
        return kwargs

    def in_place(pipe, step_index, timestep, kwargs):  # edits to the given array, returned in the kwargs, are kept
        if timestep == last_level and step_index == pipe.scheduler.num_annealed_steps - 1:
            kwargs["samples"] *= 0
        return kwargs

    for callback in (replace, in_place):
        np.testing.assert_allclose(_raw(conv, batch_size=2, seed=1, callback_on_step_end=callback), expected, atol=1e-6)
    reference = _raw(conv, batch_size=2, seed=1, mode="stepwise")
    np.testing.assert_array_equal(_raw(conv, batch_size=2, seed=1, callback_on_step_end=lambda *a: None), reference)


def test_diffusers_pipeline_callback_objects(conv: NCSNPipeline):
    callbacks = pytest.importorskip("diffusers.callbacks", reason="the diffusers extra is not installed")

    class Record(callbacks.PipelineCallback):
        tensor_inputs = ["samples"]  # noqa: RUF012 - diffusers' own callbacks declare it so

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            self.calls = [*getattr(self, "calls", []), (step_index, timestep)]
            return callback_kwargs

    class ZeroAtLevelEnd(Record):
        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            super().callback_fn(pipeline, step_index, timestep, callback_kwargs)
            if step_index == pipeline.scheduler.num_annealed_steps - 1 and timestep == self.config.cutoff_step_index:
                callback_kwargs["samples"] = np.zeros_like(callback_kwargs["samples"])
            return callback_kwargs

    record, zero = Record(), ZeroAtLevelEnd(cutoff_step_ratio=None, cutoff_step_index=3)
    both = callbacks.MultiPipelineCallbacks([record, zero])
    got = _raw(conv, batch_size=2, seed=1, callback_on_step_end=both)
    assert record.calls == zero.calls == [(t, level) for level in range(4) for t in range(3)]
    from ncsn_runtime.sampling import denoise

    expected = denoise(conv.graphs, np.zeros((2, 1, 8, 8), np.float32), 3, conv.scheduler.train_sigmas[3])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"SDCFGCutoffCallback.tensor_inputs has to be in \['samples'\].*prompt_embeds"):
        conv(batch_size=1, seed=0, callback_on_step_end=callbacks.SDCFGCutoffCallback(cutoff_step_ratio=0.5))


def test_inpaint_takes_the_same_callbacks(conv: NCSNPipeline):
    levels = []

    def first_step(pipe, step_index, timestep, kwargs):
        if step_index == 0:
            levels.append(timestep)
        return kwargs

    image = np.full((1, 8, 8), 0.5, np.float32)
    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1
    conv.inpaint(image, mask, seed=0, callback_on_step_end=first_step, callback_on_step_end_tensor_inputs=["samples"])
    assert levels == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="latents"):
        conv.inpaint(image, mask, seed=0, callback_on_step_end=first_step, callback_on_step_end_tensor_inputs=["latents"])


# -- pipe.to(device) --------------------------------------------------------------------------------------
class _CudaSession:
    """Stands in for InferenceSession on a machine whose CUDA works (records what was asked)."""

    opened: list = []  # noqa: RUF012

    def __init__(self, path, sess_options=None, providers=()):
        _CudaSession.opened.append([p[0] if isinstance(p, tuple) else p for p in providers])
        self._providers = [p[0] if isinstance(p, tuple) else p for p in providers]

    def get_providers(self):
        return self._providers


def test_to_accepts_device_strings_and_objects(conv: NCSNPipeline):
    reference = _raw(conv, batch_size=2, seed=3)
    assert conv.to("cpu") is conv and str(conv.device) == "cpu" and conv.device.type == "cpu" and conv.device.index is None

    class TorchDeviceLike:  # anything whose str() is a device string, e.g. torch.device("cpu")
        def __str__(self) -> str:
            return "cpu"

    assert conv.to(TorchDeviceLike()).provider == CPU_PROVIDER
    conv.device = "cpu:0"  # the setter takes the same strings
    np.testing.assert_array_equal(_raw(conv, batch_size=2, seed=3), reference)
    for bad, match in (("mps", "'cpu', 'cuda' or 'cuda:N'"), ("cuda:x", "'cuda:x'"), ("cpu:1", "'cpu:1'"),
                       ("torch.float16", "dtype cannot be changed")):
        with pytest.raises(ValueError, match=match):
            conv.to(bad)
    torch = pytest.importorskip("torch")
    assert conv.to(torch.device("cpu")) is conv


def test_to_cuda_switches_the_provider(conv: NCSNPipeline, monkeypatch):
    reference = _raw(conv, batch_size=2, seed=3)
    assert conv.graphs._sessions  # sessions are open on CPU
    monkeypatch.setattr(providers, "available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(providers, "session_factory", _CudaSession)
    _CudaSession.opened = []
    assert conv.to("cuda:1") is conv
    assert conv.device == Device("cuda", 1) and str(conv.device) == "cuda:1" and conv.provider == CUDA_PROVIDER
    assert _CudaSession.opened == [[CUDA_PROVIDER, CPU_PROVIDER]]  # one probe session, kept
    assert next(iter(conv.graphs._sessions.values())).get_providers()[0] == CUDA_PROVIDER
    assert conv.choose_graph("auto") in ("gpu_step", "step")  # the CUDA rules apply now
    monkeypatch.undo()
    conv.to("cpu")
    assert all(CUDA_PROVIDER not in s.get_providers() for s in conv.graphs._sessions.values() if hasattr(s, "get_providers"))
    np.testing.assert_array_equal(_raw(conv, batch_size=2, seed=3), reference)


def test_to_cuda_says_why_cuda_is_not_usable(conv: NCSNPipeline, monkeypatch):
    monkeypatch.setattr(providers, "available_providers", lambda: [CPU_PROVIDER])
    with pytest.raises(ProviderError, match=r"pipe.to\('cuda'\): CUDA is not usable: .*onnxruntime-gpu"):
        conv.to("cuda")
    monkeypatch.setattr(providers, "available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])

    class NoGpu(_CudaSession):
        def get_providers(self):
            return [CPU_PROVIDER]

    monkeypatch.setattr(providers, "session_factory", NoGpu)
    with pytest.raises(ProviderError, match=r"pipe.to\('cuda:0'\): CUDA is not usable: .*got only"):
        conv.to("cuda:0")
    assert conv.device == Device("cpu")  # it stays where it was


def test_to_cuda_on_a_real_gpu(conv_dir: Path):
    import onnxruntime as ort

    if CUDA_PROVIDER not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    cpu = NCSNPipeline.from_pretrained(conv_dir, provider="cpu")
    reference = _raw(cpu, batch_size=4, seed=2, progress=False)
    try:
        cpu.to("cuda")
    except ProviderError as error:
        pytest.skip(f"CUDA is listed but not usable: {error}")
    assert cpu.provider == CUDA_PROVIDER
    assert np.abs(_raw(cpu, batch_size=4, seed=2, progress=False) - reference).max() <= 1e-4


# -- progress bar ---------------------------------------------------------------------------------------
def test_progress_bar_config(conv: NCSNPipeline):
    pytest.importorskip("tqdm")
    bar = conv.progress_bar(range(3))  # disabled by the fixture's set_progress_bar_config(disable=True)
    assert list(bar) == [0, 1, 2] and bar.disable
    for mode in ("fused", "stepwise"):
        stream = io.StringIO()
        conv.set_progress_bar_config(file=stream, desc="mine", mininterval=0)
        conv(batch_size=1, seed=0, mode=mode)
        assert "mine" in stream.getvalue()
        conv.set_progress_bar_config(file=stream, disable=True)  # replaces the last config, as in diffusers
        stream.truncate(0)
        stream.seek(0)
        conv(batch_size=1, seed=0, mode=mode)
        assert stream.getvalue() == ""
    conv.set_progress_bar_config(file=stream, desc="mine")
    conv(batch_size=1, seed=0, progress=False)  # progress=False still hides it
    assert stream.getvalue() == ""
    with conv.progress_bar(total=2) as manual:
        manual.update(2)
    with pytest.raises(TypeError, match=r"tqdm does not take: \['colour_of_bar'\]"):
        conv.set_progress_bar_config(colour_of_bar="red")
    with pytest.raises(TypeError, match="`total`, which each bar sets itself"):
        conv.set_progress_bar_config(total=3)
    with pytest.raises(ValueError, match="iterable` or `total"):
        conv.progress_bar()


# -- decode_samples / numpy_to_pil ----------------------------------------------------------------------
def test_decode_samples_is_the_pipelines_decode(conv: NCSNPipeline):
    raw = _raw(conv, batch_size=3, seed=4)
    images = conv(batch_size=3, seed=4, output_type="np").images
    decoded = conv.decode_samples(raw)
    assert decoded.dtype == np.float32 and decoded.shape == (3, 8, 8, 1)
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    np.testing.assert_array_equal(decoded, images)
    np.testing.assert_array_equal(decoded, np.clip(raw.transpose(0, 2, 3, 1), 0, 1))  # data range (0, 1): clip, no min-max
    pils = conv.numpy_to_pil(decoded)
    direct = conv(batch_size=3, seed=4).images
    assert [p.mode for p in pils] == ["L"] * 3 and pils[0].size == (8, 8)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pils, direct, strict=True))
    rgb = NCSNPipeline.numpy_to_pil(np.full((4, 5, 3), 0.5, np.float32))  # one image, three channels
    assert len(rgb) == 1 and rgb[0].mode == "RGB" and rgb[0].getpixel((0, 0)) == (128, 128, 128)
    for bad in (raw[0], raw.astype(np.int64), raw[:, :, :4]):
        with pytest.raises(ValueError, match=r"samples` must be floating \[B, 1, 8, 8\]"):
            conv.decode_samples(bad)
    with pytest.raises(ValueError, match="C in"):
        conv.numpy_to_pil(np.zeros((2, 4, 4, 2), np.float32))


def test_decode_samples_needs_an_image_export():
    toy = NCSNPipeline.from_pretrained(build_export("toy-gmm"), provider="cpu")
    with pytest.raises(ValueError, match=r"sample_shape \(2,\) is not an image"):
        toy.decode_samples(np.zeros((1, 2), np.float32))


# -- generator objects ------------------------------------------------------------------------------------
class _SeedOnly:
    """Any object with initial_seed() (what a torch.Generator offers), without torch."""

    def __init__(self, seed) -> None:
        self.seed = seed

    def initial_seed(self):
        return self.seed


def test_generator_objects_give_the_samples_of_their_initial_seed(conv: NCSNPipeline):
    expected = conv(batch_size=3, seed=7, mode="fused", output_type="raw")
    got = conv(batch_size=3, generator=_SeedOnly(7), mode="fused", output_type="raw")
    np.testing.assert_array_equal(got.images, expected.images)
    np.testing.assert_array_equal(got.seeds, [7, 8, 9])
    listed = conv(batch_size=2, generator=[_SeedOnly(9), _SeedOnly(7)], mode="fused", output_type="raw")
    np.testing.assert_array_equal(listed.seeds, [9, 7])
    np.testing.assert_array_equal(listed.images, expected.images[[2, 0]])
    for bad, error, match in ((_SeedOnly(-1), ValueError, r"initial_seed\(\) is -1"),
                              (_SeedOnly(2**64 - 1), ValueError, r"\[0, 2\*\*63 - 1\]"),
                              (_SeedOnly(2**63 - 2), ValueError, "room for 3 samples"),
                              (_SeedOnly("0"), TypeError, "must return an int"),
                              ([_SeedOnly(1)], ValueError, "list of 1 generators but batch_size is 3"),
                              (object(), TypeError, "initial_seed")):
        with pytest.raises(error, match=match):
            conv(batch_size=3, generator=bad, mode="fused", output_type="raw")
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(conv(batch_size=3, generator=torch.manual_seed(7), mode="fused", output_type="raw").images,
                                  expected.images)
