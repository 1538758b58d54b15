"""NCSN's conditional RefineNet with dilated convolutions (Song & Ermon 2019, section 4.1 / appendix B.1).

Written from the paper's description (the original is ``CondRefineNetDilated`` in ermongroup/ncsn):

* every normalisation is a *conditional instance norm++*: instance norm whose per-level scale
  ``gamma``, shift ``beta`` and channel-mean correction ``alpha`` are looked up from the noise-level
  index (:class:`ConditionalInstanceNorm2dPlus`);
* an encoder of four stages of pre-activation conditional residual blocks (ELU); stage 2 halves
  the resolution, stages 3 and 4 keep it and widen the receptive field with dilation 2 and 4;
* a RefineNet decoder: a cascade of refine blocks (residual conv units, multi-resolution fusion,
  chained residual pooling) from the coarsest stage back to full resolution;
* an output head ``norm -> ELU -> conv`` giving the score with the input's shape.

``sigmas`` turns on the NCSNv2 parameterisation ``s(x, i) = net(x, i) / sigma_i``.

Export: ``torch.onnx.export(..., dynamo=True)`` works. The legacy TorchScript-based exporter
(``dynamo=False``) fails on ``nn.InstanceNorm2d`` without affine parameters with
"unknown channel size" (it needs a static channel count for ONNX ``InstanceNormalization``'s
scale/bias), so always export with the dynamo exporter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Instance norm++ conditioned on a level index.

    ``y = gamma_i * (IN(x) + alpha_i * m~) + beta_i`` where ``m~`` are the per-channel spatial means
    of ``x`` standardised across channels (so the channel-mean information that instance norm
    removes is put back, scaled per level).

    Args:
        num_features: channels C.
        num_classes: number of noise levels L.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        self.embed = nn.Embedding(num_classes, 3 * num_features)
        with torch.no_grad():
            self.embed.weight[:, : 2 * num_features].normal_(1.0, 0.02)  # gamma, alpha around 1
            self.embed.weight[:, 2 * num_features :].zero_()  # beta = 0

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """x: f32 [B, C, H, W]; level: i64 [B] -> f32 [B, C, H, W]."""
        means = x.mean(dim=(2, 3))
        mu = means.mean(dim=1, keepdim=True)
        var = means.var(dim=1, keepdim=True)
        means = (means - mu) / torch.sqrt(var + 1e-5)
        gamma, alpha, beta = self.embed(level).chunk(3, dim=1)
        h = self.instance_norm(x) + (means * alpha)[:, :, None, None]
        return gamma[:, :, None, None] * h + beta[:, :, None, None]


def _conv3x3(in_ch: int, out_ch: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """Convolution followed by 2x2 mean pooling (halves H and W; odd sizes are padded first)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2, ceil_mode=True, count_include_pad=False)


class ConditionalResidualBlock(nn.Module):
    """Pre-activation residual block ``x + conv(act(norm(conv(act(norm(x))))))``.

    Args:
        in_ch, out_ch: channels in / out.
        num_classes: noise levels L.
        downsample: halve the resolution (mean pooling after the second conv and on the shortcut).
        dilation: dilation of both 3x3 convs (keeps the resolution; ignored when downsampling).
    """

    def __init__(self, in_ch: int, out_ch: int, num_classes: int, downsample: bool = False, dilation: int = 1) -> None:
        super().__init__()
        self.norm1 = ConditionalInstanceNorm2dPlus(in_ch, num_classes)
        self.act = nn.ELU()
        if downsample:
            self.conv1 = _conv3x3(in_ch, in_ch)
            self.norm2 = ConditionalInstanceNorm2dPlus(in_ch, num_classes)
            self.conv2: nn.Module = ConvMeanPool(in_ch, out_ch, 3)
            self.shortcut: nn.Module = ConvMeanPool(in_ch, out_ch, 1)
        else:
            self.conv1 = _conv3x3(in_ch, out_ch, dilation)
            self.norm2 = ConditionalInstanceNorm2dPlus(out_ch, num_classes)
            self.conv2 = _conv3x3(out_ch, out_ch, dilation)
            self.shortcut = nn.Identity() if in_ch == out_ch else _conv3x3(in_ch, out_ch, dilation)

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, level)))
        h = self.conv2(self.act(self.norm2(h, level)))
        return self.shortcut(x) + h


class CondRCU(nn.Module):
    """Residual conv units: ``n_blocks`` x (``n_stages`` x [norm, ELU, conv3x3]) with a skip per block."""

    def __init__(self, channels: int, n_blocks: int, n_stages: int, num_classes: int) -> None:
        super().__init__()
        self.n_blocks = n_blocks
        self.n_stages = n_stages
        self.norms = nn.ModuleList(ConditionalInstanceNorm2dPlus(channels, num_classes) for _ in range(n_blocks * n_stages))
        self.convs = nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(n_blocks * n_stages))
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        for block in range(self.n_blocks):
            h = x
            for stage in range(self.n_stages):
                k = block * self.n_stages + stage
                h = self.convs[k](self.act(self.norms[k](h, level)))
            x = x + h
        return x


class CondMSF(nn.Module):
    """Multi-resolution fusion: ``sum_k upsample(conv(norm(x_k)))`` at the finest input's size."""

    def __init__(self, in_channels: Sequence[int], features: int, num_classes: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(ConditionalInstanceNorm2dPlus(c, num_classes) for c in in_channels)
        self.convs = nn.ModuleList(_conv3x3(c, features) for c in in_channels)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor, size: list[int]) -> torch.Tensor:
        out = xs[0]
        for k, (norm, conv) in enumerate(zip(self.norms, self.convs, strict=True)):
            h = conv(norm(xs[k], level))
            if list(h.shape[2:]) != size:
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=True)
            out = h if k == 0 else out + h
        return out


class CondCRP(nn.Module):
    """Chained residual pooling: ``x = act(x); p = x; repeat: p = conv(avgpool5(norm(p))); x = x + p``."""

    def __init__(self, channels: int, n_stages: int, num_classes: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(ConditionalInstanceNorm2dPlus(channels, num_classes) for _ in range(n_stages))
        self.convs = nn.ModuleList(_conv3x3(channels, channels, bias=False) for _ in range(n_stages))
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs, strict=True):
            path = conv(F.avg_pool2d(norm(path, level), 5, stride=1, padding=2))
            x = x + path
        return x


class CondRefineBlock(nn.Module):
    """RefineNet block: RCU per input -> fusion (if several inputs) -> chained pooling -> RCU out."""

    def __init__(self, in_channels: Sequence[int], features: int, num_classes: int, end: bool = False) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(CondRCU(c, 2, 2, num_classes) for c in in_channels)
        self.fuse = CondMSF(in_channels, features, num_classes) if len(in_channels) > 1 else None
        if self.fuse is None and in_channels[0] != features:
            raise ValueError(f"a single-input refine block needs in_channels == features, got {in_channels[0]} != {features}")
        self.crp = CondCRP(features, 2, num_classes)
        self.out = CondRCU(features, 3 if end else 1, 2, num_classes)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor) -> torch.Tensor:
        hs = [adapt(x, level) for adapt, x in zip(self.adapt, xs, strict=True)]
        h = hs[0] if self.fuse is None else self.fuse(hs, level, list(hs[0].shape[2:]))
        return self.out(self.crp(h, level), level)


class CondRefineNetDilated(nn.Module):
    """NCSN score network ``s(x, i)`` for images.

    Args:
        in_channels: image channels C.
        image_size: H = W; used only to validate inputs (any even size works).
        num_classes: number of trained noise levels L (``timestep`` in [0, L)).
        ngf: base width; stages use ngf, 2*ngf, 2*ngf, 2*ngf channels.
        sigmas: optional float [L]; when given the output is divided by ``sigmas[timestep]`` (NCSNv2).
        centered: map inputs from [0, 1] to [-1, 1] before the first conv (as the paper's code does).

    ``forward(sample f32[B, C, H, W], timestep i64[B]) -> score f32[B, C, H, W]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        ngf: int = 32,
        sigmas: Sequence[float] | torch.Tensor | None = None,
        centered: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size), ("num_classes", num_classes), ("ngf", ngf)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "image_size": image_size,
            "num_classes": num_classes,
            "ngf": ngf,
            "centered": centered,
            "ncsnv2": sigmas is not None,
        }
        self.in_channels = in_channels
        self.image_size = image_size
        self.centered = centered
        self.ncsnv2 = sigmas is not None
        if sigmas is not None:
            sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten()
            if sigmas.numel() != num_classes:
                raise ValueError(f"`sigmas` must have num_classes={num_classes} entries, got {sigmas.numel()}")
        self.register_buffer("sigmas", sigmas if sigmas is not None else torch.ones(num_classes), persistent=self.ncsnv2)

        c1, c2 = ngf, 2 * ngf
        self.begin_conv = _conv3x3(in_channels, c1)
        self.stage1 = nn.ModuleList(
            [ConditionalResidualBlock(c1, c1, num_classes), ConditionalResidualBlock(c1, c1, num_classes)]
        )
        self.stage2 = nn.ModuleList(
            [ConditionalResidualBlock(c1, c2, num_classes, downsample=True), ConditionalResidualBlock(c2, c2, num_classes)]
        )
        self.stage3 = nn.ModuleList(
            [ConditionalResidualBlock(c2, c2, num_classes, dilation=2), ConditionalResidualBlock(c2, c2, num_classes, dilation=2)]
        )
        self.stage4 = nn.ModuleList(
            [ConditionalResidualBlock(c2, c2, num_classes, dilation=4), ConditionalResidualBlock(c2, c2, num_classes, dilation=4)]
        )
        self.refine1 = CondRefineBlock([c2], c2, num_classes)
        self.refine2 = CondRefineBlock([c2, c2], c2, num_classes)
        self.refine3 = CondRefineBlock([c2, c2], c1, num_classes)
        self.refine4 = CondRefineBlock([c1, c1], c1, num_classes, end=True)
        self.out_norm = ConditionalInstanceNorm2dPlus(c1, num_classes)
        self.act = nn.ELU()
        self.end_conv = _conv3x3(c1, in_channels)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Per-sample shape (C, H, W)."""
        return (self.in_channels, self.image_size, self.image_size)

    @staticmethod
    def _run(blocks: nn.ModuleList, h: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            h = block(h, level)
        return h

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """sample: f32 [B, C, H, W] in [0, 1]; timestep: i64 [B] level indices -> score f32 [B, C, H, W]."""
        x = 2.0 * sample - 1.0 if self.centered else sample
        h = self.begin_conv(x)
        s1 = self._run(self.stage1, h, timestep)
        s2 = self._run(self.stage2, s1, timestep)
        s3 = self._run(self.stage3, s2, timestep)
        s4 = self._run(self.stage4, s3, timestep)
        r = self.refine1([s4], timestep)
        r = self.refine2([s3, r], timestep)
        r = self.refine3([s2, r], timestep)
        r = self.refine4([s1, r], timestep)
        out = self.end_conv(self.act(self.out_norm(r, timestep)))
        if self.ncsnv2:
            out = out / self.sigmas[timestep].reshape(-1, 1, 1, 1)
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
