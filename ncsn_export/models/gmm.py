"""The exact score of a Gaussian mixture perturbed by N(0, sigma^2 I), as a level-conditioned ``nn.Module``.

``toy_gmm_spec()`` is the paper's toy problem (Song & Ermon 2019, section 3): the mixture
1/5 N((-5,-5), I) + 4/5 N((5,5), I) with L=10 levels from sigma 20 to 1, T=100, eps=0.1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ncsn_runtime.schedule import check_positive_float, geometric_sigmas
from torch import nn

from .registry import ModelSpec

TOY_MEANS = ((-5.0, -5.0), (5.0, 5.0))
TOY_WEIGHTS = (0.2, 0.8)
TOY_SCHEDULER_CONFIG = {
    "num_train_timesteps": 10,
    "num_annealed_steps": 100,
    "sigma_min": 1.0,
    "sigma_max": 20.0,
    "sampling_eps": 0.1,
}


class GaussianMixtureScore(nn.Module):
    """Score of ``sum_k w_k N(mu_k, v I)`` convolved with ``N(0, sigma_l^2 I)`` at trained level ``l``.

    Args:
        means: [K, D] component means.
        weights: [K] positive mixture weights (normalised here).
        sigmas: [L] trained noise levels; ``timestep`` indexes them.
        variance: isotropic component variance ``v`` (> 0).

    ``forward(sample f32[B, D], timestep i64[B]) -> score f32[B, D]``:
    ``-sum_k r_k(x) (x - mu_k) / (v + sigma^2)`` with responsibilities ``r_k`` (a softmax).
    Scriptable, traceable and exportable.
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor,
        sigmas: Sequence[float] | torch.Tensor,
        variance: float = 1.0,
    ) -> None:
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        weights = torch.as_tensor(weights, dtype=torch.float32)
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
        if means.ndim != 2 or means.shape[0] == 0:
            raise ValueError(f"`means` must be [K, D] with K >= 1, got shape {tuple(means.shape)}")
        if weights.shape != (means.shape[0],) or not bool((weights > 0).all()):
            raise ValueError(f"`weights` must be {means.shape[0]} positive numbers, got {weights.tolist()}")
        if sigmas.ndim != 1 or sigmas.numel() == 0 or not bool((sigmas > 0).all()):
            raise ValueError(f"`sigmas` must be a non-empty 1-D list of positive floats, got {sigmas.tolist()}")
        self.variance = check_positive_float("variance", variance)
        self.register_buffer("means", means)
        self.register_buffer("log_weights", torch.log(weights / weights.sum()))
        self.register_buffer("sigmas", sigmas)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        sigma = torch.index_select(self.sigmas, 0, timestep.reshape(-1))  # [B]
        total_variance = (self.variance + sigma * sigma).unsqueeze(1).unsqueeze(2)  # [B, 1, 1]
        diff = sample.unsqueeze(1) - self.means.unsqueeze(0)  # [B, K, D]
        logits = self.log_weights.unsqueeze(0) - 0.5 * (diff * diff).sum(-1) / total_variance.squeeze(2)  # [B, K]
        resp = torch.softmax(logits, dim=1).unsqueeze(2)  # [B, K, 1]
        return -(resp * diff).sum(1) / total_variance.squeeze(2)


def toy_gmm_spec() -> ModelSpec:
    """The paper's toy mixture 1/5 N((-5,-5), I) + 4/5 N((5,5), I) with its toy schedule."""
    config = dict(TOY_SCHEDULER_CONFIG)
    sigmas = geometric_sigmas(config["sigma_max"], config["sigma_min"], config["num_train_timesteps"])
    model = GaussianMixtureScore(TOY_MEANS, TOY_WEIGHTS, torch.from_numpy(sigmas), variance=1.0).eval()
    return ModelSpec(
        name="toy-gmm",
        model=model,
        scheduler_config=config,
        sample_shape=(2,),
        is_image=False,
        init_range=(-8.0, 8.0),
        data_range=(-8.0, 8.0),
        final_denoise=False,
        description="exact score of 1/5 N((-5,-5), I) + 4/5 N((5,5), I) (Song & Ermon 2019, toy)",
    )
