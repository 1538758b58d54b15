"""Small score networks for the export tests (importable as ``test_export_nets:tiny_conv_spec``)."""

from __future__ import annotations

import torch
from ncsn_runtime.schedule import geometric_sigmas
from torch import nn

from ncsn_export.models.registry import ModelSpec

TINY_CONFIG = {"num_train_timesteps": 6, "num_annealed_steps": 4, "sigma_min": 0.05, "sigma_max": 1.0, "sampling_eps": 2e-5}


class TinyConvScore(nn.Module):
    """3 convs, a level embedding and instance norm; ``forward(x f32[B,C,H,W], level i64[B]) -> score / sigma``."""

    def __init__(self, channels: int = 1, width: int = 8, num_levels: int = 6, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.norm = nn.InstanceNorm2d(width, affine=True)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)
        self.embedding = nn.Embedding(num_levels, width)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
        sigmas = geometric_sigmas(TINY_CONFIG["sigma_max"], TINY_CONFIG["sigma_min"], num_levels)
        self.register_buffer("sigmas", torch.from_numpy(sigmas))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(sample) + self.embedding(timestep)[:, :, None, None]
        h = self.conv_mid(torch.nn.functional.elu(self.norm(h)))
        sigma = torch.index_select(self.sigmas, 0, timestep).reshape(-1, 1, 1, 1)
        return self.conv_out(torch.nn.functional.elu(h)) / sigma


def tiny_conv_spec(final_denoise: bool = True) -> ModelSpec:
    """A 1x8x8 image model with final denoising on (exercises the NCSNv2 path)."""
    return ModelSpec(name="tiny-conv", model=TinyConvScore().eval(), scheduler_config=dict(TINY_CONFIG), sample_shape=(1, 8, 8),
                     is_image=True, init_range=(0.0, 1.0), data_range=(0.0, 1.0), final_denoise=final_denoise,
                     description="3-conv test network")


def ort_session(path):
    """A CPU session with the runtime's own options (ncsn_runtime.providers)."""
    from ncsn_runtime.providers import Device, open_session

    return open_session(path, Device("cpu"))
