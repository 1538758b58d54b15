"""The documented scheduler API, on both sides (numpy runtime and torch), with the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ncsn_runtime import AnnealedLangevinDynamicsOutput as NumpyOutput
from ncsn_runtime import AnnealedLangevinDynamicsScheduler as NumpyScheduler
from ncsn_runtime.noise import counter_normal

from ncsn_export import AnnealedLangevinDynamicsOutput as TorchOutput
from ncsn_export import AnnealedLangevinDynamicsScheduler as TorchScheduler

PAPER = dict(num_train_timesteps=10, num_annealed_steps=100, sigma_min=0.01, sigma_max=1.0, sampling_eps=2e-5)


def to_numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def as_side(array: np.ndarray, side):
    return torch.from_numpy(array) if side is TorchScheduler else array


@pytest.fixture(params=[NumpyScheduler, TorchScheduler], ids=["numpy", "torch"])
def side(request):
    return request.param


def test_constructor_schedule_is_geometric_and_aligned(side):
    scheduler = side(**PAPER)
    sigmas, steps, levels = map(to_numpy, (scheduler.sigmas, scheduler.step_size, scheduler.timesteps))
    assert levels.tolist() == list(range(10)) and levels.dtype == np.int64
    assert sigmas.dtype == np.float32 and steps.dtype == np.float32
    np.testing.assert_allclose(sigmas, np.geomspace(1.0, 0.01, 10), rtol=1e-6)
    np.testing.assert_allclose(steps, 2e-5 * (np.geomspace(1.0, 0.01, 10) / 0.01) ** 2, rtol=1e-6)
    assert scheduler.order == 1
    assert dict(scheduler.config) == PAPER and scheduler.config.sigma_max == 1.0
    assert to_numpy(scheduler.scale_model_input(as_side(np.ones(3, np.float32), side), 2)).tolist() == [1, 1, 1]


def test_config_is_read_only(side):
    scheduler = side(**PAPER)
    with pytest.raises(TypeError):
        scheduler.config["sigma_min"] = 0.5


def test_both_sides_give_identical_schedules():
    a, b = NumpyScheduler(**PAPER), TorchScheduler(**PAPER)
    for n in (1, 3, 7, 10):
        a.set_timesteps(n, sampling_eps=3e-5)
        b.set_timesteps(n, sampling_eps=3e-5)
        for x, y in ((a.sigmas, b.sigmas), (a.step_size, b.step_size), (a.timesteps, b.timesteps)):
            assert np.array_equal(x, to_numpy(y))


def test_set_timesteps_spans_the_trained_levels(side):
    """Reference defect: set_timesteps(n) used the first n levels instead of spanning the range."""
    scheduler = side(**PAPER)
    scheduler.set_timesteps(4)
    assert to_numpy(scheduler.timesteps).tolist() == [0, 3, 6, 9]
    trained = np.geomspace(1.0, 0.01, 10)
    np.testing.assert_allclose(to_numpy(scheduler.sigmas), trained[[0, 3, 6, 9]], rtol=1e-6)
    # the last level is the trained sigma_min, so step sizes keep the paper's scale
    np.testing.assert_allclose(to_numpy(scheduler.step_size), 2e-5 * (trained[[0, 3, 6, 9]] / 0.01) ** 2, rtol=1e-6)
    assert scheduler.num_inference_steps == 4


def test_step_uses_the_step_size_of_the_level_it_is_given(side):
    scheduler = side(**PAPER)
    scheduler.set_timesteps(4)
    x = np.zeros((2, 3), np.float32)
    score = np.ones((2, 3), np.float32)
    z = np.zeros((2, 3), np.float32)
    for level, alpha in zip(to_numpy(scheduler.timesteps), to_numpy(scheduler.step_size), strict=True):
        out = scheduler.step(as_side(score, side), int(level), as_side(x, side), noise=as_side(z, side))
        np.testing.assert_allclose(to_numpy(out.prev_sample), 0.5 * alpha, rtol=1e-6)
    with pytest.raises(ValueError, match="not in the current schedule"):
        scheduler.step(as_side(score, side), 1, as_side(x, side), noise=as_side(z, side))


def test_custom_timesteps_are_honoured_and_validated(side):
    scheduler = side(**PAPER)
    scheduler.set_timesteps(timesteps=[0, 2, 5])
    assert to_numpy(scheduler.timesteps).tolist() == [0, 2, 5]
    trained = np.geomspace(1.0, 0.01, 10)
    np.testing.assert_allclose(to_numpy(scheduler.sigmas), trained[[0, 2, 5]], rtol=1e-6)
    # alpha is relative to the smallest sigma of this schedule (level 5)
    np.testing.assert_allclose(to_numpy(scheduler.step_size), 2e-5 * (trained[[0, 2, 5]] / trained[5]) ** 2, rtol=1e-6)
    for bad, error in (([3, 1], ValueError), ([0, 10], ValueError), ([-1, 2], ValueError), ([], ValueError),
                       ([0.5, 1.0], TypeError), ([2, 2], ValueError)):
        with pytest.raises(error, match="timesteps"):
            scheduler.set_timesteps(timesteps=bad)
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.set_timesteps(3, timesteps=[0, 1, 2])
    with pytest.raises(ValueError, match="exactly one"):
        scheduler.set_timesteps()


def test_zero_is_a_value_not_missing(side):
    """Reference defect: `x or default` turned 0.0 into the default; here 0.0 is rejected as a value."""
    scheduler = side(**PAPER)
    with pytest.raises(ValueError, match="sampling_eps"):
        scheduler.set_timesteps(5, sampling_eps=0.0)
    with pytest.raises(ValueError, match="sigma_min"):
        scheduler.set_sigmas(5, sigma_min=0.0)
    with pytest.raises(ValueError, match="sampling_eps"):
        scheduler.set_sigmas(5, sampling_eps=0.0)
    # and None still means "the config value"
    scheduler.set_sigmas(10, sigma_min=None, sigma_max=None, sampling_eps=None)
    np.testing.assert_allclose(to_numpy(scheduler.sigmas), np.geomspace(1.0, 0.01, 10), rtol=1e-6)


def test_set_sigmas_overrides(side):
    scheduler = side(**PAPER)
    scheduler.set_sigmas(5, sigma_min=0.05, sigma_max=50.0, sampling_eps=1e-3)
    np.testing.assert_allclose(to_numpy(scheduler.sigmas), np.geomspace(50.0, 0.05, 5), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(scheduler.step_size), 1e-3 * (np.geomspace(50.0, 0.05, 5) / 0.05) ** 2, rtol=1e-6)
    assert to_numpy(scheduler.timesteps).tolist() == [0, 2, 4, 7, 9]  # aligned with the sigmas


def test_step_with_given_noise_matches_formula_on_both_sides():
    rng = np.random.default_rng(0)
    x, score, z = (rng.standard_normal((2, 1, 4, 4)).astype(np.float32) for _ in range(3))
    a, b = NumpyScheduler(**PAPER), TorchScheduler(**PAPER)
    out_a = a.step(score, 3, x, noise=z)
    out_b = b.step(torch.from_numpy(score), torch.tensor(3), torch.from_numpy(x), noise=torch.from_numpy(z))
    assert isinstance(out_a, NumpyOutput) and isinstance(out_b, TorchOutput)
    alpha = np.float32(a.step_size[3])
    expected = x + 0.5 * alpha * score + np.sqrt(alpha) * z
    np.testing.assert_array_equal(out_a.prev_sample, expected)
    np.testing.assert_allclose(out_b.prev_sample.numpy(), expected, rtol=0, atol=1e-6)  # last-bit differences
    (tuple_a,) = a.step(score, 3, x, noise=z, return_dict=False)
    np.testing.assert_array_equal(tuple_a, expected)


def test_step_honours_the_generator():
    """Reference defect: step drew z with the global RNG whatever generator was passed."""
    x = torch.zeros(3, 5)
    scheduler = TorchScheduler(**PAPER)
    first = scheduler.step(x, 0, x, generator=torch.Generator().manual_seed(7)).prev_sample
    torch.manual_seed(123)  # the global RNG must not matter
    second = scheduler.step(x, 0, x, generator=torch.Generator().manual_seed(7)).prev_sample
    third = scheduler.step(x, 0, x, generator=torch.Generator().manual_seed(8)).prev_sample
    assert torch.equal(first, second) and not torch.equal(first, third)
    expected = torch.sqrt(scheduler.step_size[0]) * torch.randn(3, 5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, expected, rtol=0, atol=0)

    numpy_scheduler = NumpyScheduler(**PAPER)
    xn = np.zeros((3, 5), np.float32)
    one = numpy_scheduler.step(xn, 0, xn, generator=np.random.default_rng(7)).prev_sample
    two = numpy_scheduler.step(xn, 0, xn, generator=np.random.default_rng(7)).prev_sample
    three = numpy_scheduler.step(xn, 0, xn, generator=np.random.default_rng(8)).prev_sample
    assert np.array_equal(one, two) and not np.array_equal(one, three)


def test_counter_noise_step_equal_across_sides():
    seeds = np.array([5, 6])
    z = counter_normal(seeds, 17, (1, 4, 4))
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 1, 4, 4)
    a = NumpyScheduler(**PAPER).step(-x, 4, x, noise=z).prev_sample
    b = TorchScheduler(**PAPER).step(torch.from_numpy(-x), 4, torch.from_numpy(x), noise=torch.from_numpy(z)).prev_sample
    np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-6)


def test_device_is_honoured_on_the_torch_side():
    scheduler = TorchScheduler(**PAPER)
    scheduler.set_timesteps(5, device="meta")
    assert scheduler.timesteps.device.type == "meta" and scheduler.sigmas.device.type == "meta"
    scheduler.set_timesteps(5, device=torch.device("cpu"))
    assert scheduler.step_size.device.type == "cpu"


@pytest.mark.parametrize("rank", [1, 2, 4, 5])
def test_add_noise_any_rank(side, rank):
    scheduler = side(**PAPER)
    shape = (3,) + (2,) * (rank - 1)
    x = np.ones(shape, np.float32)
    noise = np.full(shape, 2.0, np.float32)
    levels = np.array([0, 4, 9])
    out = to_numpy(scheduler.add_noise(as_side(x, side), as_side(noise, side), as_side(levels, side)))
    sigma = np.geomspace(1.0, 0.01, 10)[levels].reshape((-1,) + (1,) * (rank - 1))
    np.testing.assert_allclose(out, 1.0 + 2.0 * sigma * np.ones(shape), rtol=1e-6)
    scalar = to_numpy(scheduler.add_noise(as_side(x, side), as_side(noise, side), 9))
    np.testing.assert_allclose(scalar, 1.0 + 2.0 * 0.01, rtol=1e-6)


def test_save_and_load_roundtrip(side, tmp_path):
    scheduler = side(**PAPER)
    path = scheduler.save_pretrained(tmp_path / "scheduler")
    payload = json.loads(path.read_text())
    assert payload["_class_name"] == "AnnealedLangevinDynamicsScheduler"
    assert {k: payload[k] for k in PAPER} == PAPER
    loaded = side.from_pretrained(tmp_path / "scheduler")
    assert dict(loaded.config) == PAPER
    # a pipeline directory with a scheduler/ subfolder works too, like diffusers
    assert dict(side.from_pretrained(tmp_path).config) == PAPER
    assert dict(side.from_pretrained(tmp_path, subfolder="scheduler").config) == PAPER
    assert not list((tmp_path / "scheduler").glob(".*")), "temporary files left behind"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"_class_name": "DDPMScheduler", **PAPER}), "DDPMScheduler"),
        (json.dumps({k: v for k, v in PAPER.items() if k != "sigma_max"}), "sigma_max"),
    ],
)
def test_from_pretrained_rejects_bad_files(side, tmp_path, content, message):
    (tmp_path / "scheduler_config.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        side.from_pretrained(tmp_path)


def test_from_pretrained_missing_directory(side, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        side.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"scheduler_config\.json"):
        side.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "override, error, name",
    [
        (dict(num_train_timesteps=0), ValueError, "num_train_timesteps"),
        (dict(num_train_timesteps=2.5), TypeError, "num_train_timesteps"),
        (dict(num_train_timesteps=True), TypeError, "num_train_timesteps"),
        (dict(num_annealed_steps=-1), ValueError, "num_annealed_steps"),
        (dict(sigma_min=0.0), ValueError, "sigma_min"),
        (dict(sigma_min=-1.0), ValueError, "sigma_min"),
        (dict(sigma_min=2.0), ValueError, "sigma_min"),
        (dict(sigma_max=float("inf")), ValueError, "sigma_max"),
        (dict(sigma_max=float("nan")), ValueError, "sigma_max"),
        (dict(sampling_eps=0.0), ValueError, "sampling_eps"),
        (dict(sampling_eps="1e-5"), TypeError, "sampling_eps"),
    ],
)
def test_constructor_rejects_bad_values(side, override, error, name):
    with pytest.raises(error, match=name):
        side(**{**PAPER, **override})


def test_set_timesteps_range(side):
    scheduler = side(**PAPER)
    for bad in (0, 11, -3):
        with pytest.raises(ValueError, match=r"num_inference_steps.*\[1, 10\]"):
            scheduler.set_timesteps(bad)
    with pytest.raises(TypeError, match="num_inference_steps"):
        scheduler.set_timesteps(2.0)


def test_step_rejects_bad_inputs(side):
    scheduler = side(**PAPER)
    x = as_side(np.zeros((2, 3), np.float32), side)
    with pytest.raises(ValueError, match="model_output"):
        scheduler.step(as_side(np.zeros((2, 4), np.float32), side), 0, x)
    with pytest.raises(ValueError, match="noise"):
        scheduler.step(x, 0, x, noise=as_side(np.zeros((3, 3), np.float32), side))
    with pytest.raises(TypeError, match="sample"):
        scheduler.step(x, 0, as_side(np.zeros((2, 3), np.int64), side))
    with pytest.raises(ValueError, match=r"trained level in \[0, 9\]"):
        scheduler.step(x, 10, x)
    with pytest.raises(ValueError, match=r"trained level in \[0, 9\]"):
        scheduler.step(x, -1, x)
    with pytest.raises(TypeError, match="generator"):
        scheduler.step(x, 0, x, generator="seed")
    with pytest.raises(ValueError, match="original_samples"):
        scheduler.add_noise(x, as_side(np.zeros((2, 4), np.float32), side), as_side(np.array([0, 1]), side))
    with pytest.raises(ValueError, match="batch"):
        scheduler.add_noise(x, x, as_side(np.array([0, 1, 2]), side))
