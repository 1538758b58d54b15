"""Counter-based Gaussian noise in torch, from exportable int64 ops only.

The contract (Philox4x32-10 keyed by the seed, Box-Muller in float64) is defined in
:mod:`ncsn_runtime.noise`; this is its torch twin, written so that ``torch.onnx.export(dynamo=True)``
and ``torch.jit.script`` both take it: every integer stays in [0, 2**48] (a 32x32-bit product is
split into 16-bit halves), so int64 never overflows, and no integer division is used (the dynamo
exporter lowers int64 floor division through float32, exact only below 2**24).
"""

from __future__ import annotations

import math
from typing import List

import torch
from ncsn_runtime.noise import (
    INIT_STREAM,
    LANGEVIN_STREAM,
    MASK32,
    PHILOX_M0,
    PHILOX_M1,
    PHILOX_ROUNDS,
    PHILOX_W0,
    PHILOX_W1,
)

__all__ = ["INIT_STREAM", "LANGEVIN_STREAM", "counter_normal", "counter_uniform", "philox4x32"]


def _mulhilo(a: torch.Tensor, multiplier: int, mask32: int = MASK32) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of ``a * multiplier`` for ``a`` in [0, 2**32), without overflow."""
    product_low = a * (multiplier & 0xFFFF)  # < 2**48
    product_high = a * (multiplier >> 16)  # < 2**48
    lo = (product_low + (product_high & 0xFFFF) * 65536) & mask32
    hi = torch.bitwise_right_shift(product_high + torch.bitwise_right_shift(product_low, 16), 16)
    return hi, lo


def philox4x32(
    c0: torch.Tensor,
    c1: torch.Tensor,
    c2: torch.Tensor,
    c3: torch.Tensor,
    k0: torch.Tensor,
    k1: torch.Tensor,
    # The constants come in as defaults so that torch.jit.script sees them (it cannot read globals).
    rounds: int = PHILOX_ROUNDS,
    m0: int = PHILOX_M0,
    m1: int = PHILOX_M1,
    w0: int = PHILOX_W0,
    w1: int = PHILOX_W1,
    mask32: int = MASK32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on int64 tensors holding uint32 values (broadcastable shapes)."""
    for round_index in range(rounds):
        if round_index > 0:
            k0 = (k0 + w0) & mask32
            k1 = (k1 + w1) & mask32
        hi0, lo0 = _mulhilo(c0, m0)
        hi1, lo1 = _mulhilo(c2, m1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _words(seed: torch.Tensor, counter: torch.Tensor, num_blocks: int, stream: int, mask32: int = MASK32) -> torch.Tensor:
    """Philox words int64 [B, num_blocks, 4] for per-sample ``seed`` [B] and a scalar ``counter``."""
    seed = seed.to(torch.int64).reshape(-1, 1)
    counter = counter.to(torch.int64).reshape(1, 1)
    block = torch.arange(num_blocks, dtype=torch.int64, device=seed.device).reshape(1, -1)
    zero = torch.zeros_like(block)
    words = philox4x32(
        block,
        zero + (counter & mask32),
        zero + torch.bitwise_right_shift(counter, 32),
        zero + stream,
        seed & mask32,
        torch.bitwise_right_shift(seed, 32) & mask32,
    )
    return torch.stack(words, dim=-1)


def _uniform(words: torch.Tensor) -> torch.Tensor:
    """uint32 words (int64) -> float64 uniforms in (0, 1): ``(2 * (w >> 9) + 1) * 2**-24``."""
    return (torch.bitwise_right_shift(words, 9) * 2 + 1).to(torch.float64) * (2.0**-24)


def _numel(shape: List[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def counter_normal(
    seed: torch.Tensor, counter: torch.Tensor, shape: List[int], stream: int = LANGEVIN_STREAM
) -> torch.Tensor:
    """Standard normal noise float32 [B, *shape]; equals :func:`ncsn_runtime.noise.counter_normal`.

    Args:
        seed: int64 [B], one seed per sample, in [0, 2**63 - 1].
        counter: int64 scalar tensor, the draw counter (Langevin step index).
        shape: per-sample shape.
        stream: stream id (``LANGEVIN_STREAM`` for the Langevin z).
    """
    num_elements = _numel(shape)
    num_blocks = (num_elements + 3) // 4
    uniform = _uniform(_words(seed, counter, num_blocks, stream))  # [B, blocks, 4]
    radius = torch.sqrt(-2.0 * torch.log(uniform[:, :, 0::2]))  # words 0 and 2
    angle = (2.0 * math.pi) * uniform[:, :, 1::2]  # words 1 and 3
    # (z0, z1, z2, z3) = (r_a cos t_a, r_a sin t_a, r_b cos t_b, r_b sin t_b)
    normal = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    normal = normal.reshape(seed.shape[0], num_blocks * 4)[:, :num_elements]
    return normal.to(torch.float32).reshape([seed.shape[0]] + shape)


def counter_uniform(seed: torch.Tensor, counter: torch.Tensor, shape: List[int], stream: int = INIT_STREAM) -> torch.Tensor:
    """Uniform noise in (0, 1), float32 [B, *shape]; equals :func:`ncsn_runtime.noise.counter_uniform`."""
    num_elements = _numel(shape)
    num_blocks = (num_elements + 3) // 4
    uniform = _uniform(_words(seed, counter, num_blocks, stream)).reshape(seed.shape[0], num_blocks * 4)
    return uniform[:, :num_elements].to(torch.float32).reshape([seed.shape[0]] + shape)
