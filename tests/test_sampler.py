"""AnnealedLangevinSampler (eager, TorchScript) against a plain loop over scheduler.step; the analytic GMM score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ncsn_runtime.noise import initial_sample, langevin_counter, seeds_for_batch
from test_export_nets import TinyConvScore, tiny_conv_spec

from ncsn_export import AnnealedLangevinDynamicsScheduler
from ncsn_export.models.gmm import GaussianMixtureScore, toy_gmm_spec
from ncsn_export.noise import counter_normal
from ncsn_export.sampler import AnnealedLangevinSampler


def plain_loop(model, scheduler, x, seeds, num_steps, final_denoise=False):
    """The reference: a Python loop over scheduler.step with counter noise i*T + t."""
    shape = list(x.shape[1:])
    for position, level in enumerate(scheduler.timesteps.tolist()):
        levels = torch.full((len(x),), level, dtype=torch.int64)
        for t in range(num_steps):
            z = counter_normal(seeds, torch.tensor(langevin_counter(position, t, num_steps)), shape)
            x = scheduler.step(model(x, levels), level, x, noise=z).prev_sample
    if final_denoise:
        sigma = float(scheduler.sigmas[-1])
        x = x + sigma**2 * model(x, torch.full((len(x),), int(scheduler.timesteps[-1]), dtype=torch.int64))
    return x


def sampler_inputs(scheduler, seeds, x, num_steps):
    return (x, seeds, scheduler.timesteps.clone(), scheduler.step_size.clone(), torch.tensor(num_steps))


@pytest.mark.parametrize("final_denoise", [False, True])
def test_eager_sampler_equals_plain_scheduler_loop_toy(final_denoise):
    spec = toy_gmm_spec()
    scheduler = AnnealedLangevinDynamicsScheduler(**spec.scheduler_config)
    scheduler.set_timesteps(4, sampling_eps=0.05)
    seeds = torch.from_numpy(seeds_for_batch(7, 3))
    x0 = torch.from_numpy(initial_sample(seeds.numpy(), (2,), -8.0, 8.0))
    sampler = AnnealedLangevinSampler(spec.model, torch.from_numpy(scheduler.train_sigmas), final_denoise).eval()
    with torch.no_grad():
        fused = sampler(*sampler_inputs(scheduler, seeds, x0, 6))
        reference = plain_loop(spec.model, scheduler, x0, seeds, 6, final_denoise)
    assert fused.shape == (3, 2)
    assert torch.max(torch.abs(fused - reference)).item() <= 1e-6
    assert not torch.equal(fused, x0)


def test_eager_and_scripted_sampler_equal_plain_loop_conv():
    spec = tiny_conv_spec()
    scheduler = AnnealedLangevinDynamicsScheduler(**spec.scheduler_config)
    scheduler.set_timesteps(timesteps=[0, 2, 5])
    seeds = torch.tensor([3, 2**40 + 1], dtype=torch.int64)
    x0 = torch.from_numpy(initial_sample(seeds.numpy(), spec.sample_shape))
    sampler = AnnealedLangevinSampler(spec.model, torch.from_numpy(scheduler.train_sigmas), final_denoise=True).eval()
    args = sampler_inputs(scheduler, seeds, x0, 3)
    with torch.no_grad():
        fused = sampler(*args)
        reference = plain_loop(spec.model, scheduler, x0, seeds, 3, final_denoise=True)
        scripted = torch.jit.script(sampler)(*args)
    assert torch.max(torch.abs(fused - reference)).item() <= 1e-6
    assert torch.max(torch.abs(scripted - fused)).item() <= 1e-6


def test_sampler_runs_nothing_for_zero_steps_and_checks_arguments():
    model = GaussianMixtureScore([[0.0, 0.0]], [1.0], [1.0, 0.5])
    sampler = AnnealedLangevinSampler(model)
    x0 = torch.ones(2, 2)
    out = sampler(x0, torch.arange(2), torch.tensor([0, 1]), torch.tensor([0.1, 0.1]), torch.tensor(0))
    assert torch.equal(out, x0)
    with pytest.raises(ValueError, match="train_sigmas"):
        AnnealedLangevinSampler(model, final_denoise=True)


def test_gmm_score_is_gradient_of_perturbed_log_density():
    means = torch.tensor([[-2.0, 1.0, 0.5], [3.0, 0.0, -1.0], [0.0, 2.0, 2.0]])
    weights = torch.tensor([0.5, 1.0, 2.5])  # unnormalised on purpose
    sigmas = torch.tensor([3.0, 1.0, 0.2])
    variance = 0.7
    model = GaussianMixtureScore(means, weights, sigmas, variance=variance)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    for level in range(3):
        var = variance + float(sigmas[level]) ** 2
        xg = x.clone().requires_grad_(True)
        diff = xg[:, None, :] - means.double()[None]
        log_density = torch.logsumexp(torch.log(weights.double() / weights.sum()) - 0.5 * (diff**2).sum(-1) / var, dim=1)
        (expected,) = torch.autograd.grad(log_density.sum(), xg)
        score = model(x.float(), torch.full((5,), level, dtype=torch.int64))
        assert torch.allclose(score.double(), expected, atol=1e-5, rtol=1e-5)


def test_gmm_rejects_bad_parameters():
    with pytest.raises(ValueError, match="means"):
        GaussianMixtureScore([1.0, 2.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixtureScore([[0.0, 0.0]], [-1.0], [1.0])
    with pytest.raises(ValueError, match="sigmas"):
        GaussianMixtureScore([[0.0, 0.0]], [1.0], [])
    with pytest.raises(ValueError, match="variance"):
        GaussianMixtureScore([[0.0, 0.0]], [1.0], [1.0], variance=0.0)


def test_toy_spec_matches_the_paper():
    spec = toy_gmm_spec()
    assert spec.scheduler_config == {"num_train_timesteps": 10, "num_annealed_steps": 100, "sigma_min": 1.0,
                                     "sigma_max": 20.0, "sampling_eps": 0.1}
    assert spec.sample_shape == (2,) and spec.is_image is False and spec.init_range == (-8.0, 8.0)
    model = spec.model
    assert torch.allclose(torch.exp(model.log_weights), torch.tensor([0.2, 0.8]))
    assert math.isclose(float(model.sigmas[0]), 20.0, rel_tol=1e-6) and math.isclose(float(model.sigmas[-1]), 1.0, rel_tol=1e-6)
    # far from both modes at the smallest level the score points at the nearer mean
    score = model(torch.tensor([[-5.0, -5.0], [5.0, 5.0]]), torch.tensor([9, 9]))
    assert np.allclose(score.numpy(), 0.0, atol=1e-4)


def test_tiny_conv_net_is_level_conditioned():
    model = TinyConvScore().eval()
    x = torch.rand(2, 1, 8, 8)
    a = model(x, torch.tensor([0, 0]))
    b = model(x, torch.tensor([5, 5]))
    assert not torch.allclose(a, b)
