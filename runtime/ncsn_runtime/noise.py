"""Counter-based Gaussian noise: the reference (numpy) implementation of the noise contract.

One draw is a pure function of ``(seed, counter, element index, stream)``; there is no hidden
state, so the same seed gives the same noise in numpy, torch, an ONNX graph, JavaScript and C,
and a sample's noise never depends on the batch it is generated in.

Definition (the contract every host implements):

* Philox4x32-10 (Salmon et al. 2011, the generator of cuRAND and TensorFlow) with
  key ``(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF)`` and
  counter ``(block, counter & 0xFFFFFFFF, (counter >> 32) & 0xFFFFFFFF, stream)``.
  Element ``e`` of a flattened sample uses block ``e // 4``, output word ``e % 4``.
* A word ``w`` becomes a uniform ``u = (2 * (w >> 9) + 1) * 2**-24`` in (0, 1), exact in float32.
* Gaussian: Box-Muller on the word pairs (0, 1) and (2, 3) of a block, computed in float64 and
  rounded to float32: ``r = sqrt(-2 ln u_a)``, ``z_a = r cos(2 pi u_b)``, ``z_b = r sin(2 pi u_b)``.
* Streams: :data:`LANGEVIN_STREAM` for the Langevin ``z``, :data:`INIT_STREAM` for the uniform
  initial sample, :data:`INPAINT_STREAM` for inpainting's noisy known region. The Langevin counter
  of annealed step ``t`` at schedule position ``i`` is
  :func:`langevin_counter` ``= i * num_annealed_steps + t``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10

LANGEVIN_STREAM = 0
INIT_STREAM = 1
INPAINT_STREAM = 2  # z_i of the known region's target image + sigma_i * z_i (counter = schedule position i)

MAX_SEED = 2**63 - 1
MAX_COUNTER = 2**63 - 1
MAX_STREAM = MASK32


def philox4x32(counter: Sequence[np.ndarray], key: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 block function.

    Args:
        counter: four uint32-valued arrays (any broadcastable shapes), the counter words.
        key: two uint32-valued arrays, the key words.

    Returns:
        Four uint64 arrays holding uint32 values, broadcast to a common shape.
    """
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) & MASK32 for k in key)
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for round_index in range(PHILOX_ROUNDS):
        if round_index:
            k0 = (k0 + np.uint64(PHILOX_W0)) & MASK32
            k1 = (k1 + np.uint64(PHILOX_W1)) & MASK32
        p0 = c0 * m0  # < 2**64: exact in uint64
        p1 = c2 * m1
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & MASK32,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & MASK32,
        )
    return np.broadcast_arrays(c0, c1, c2, c3)


def _check_seeds(seeds: np.ndarray | Sequence[int] | int) -> np.ndarray:
    array = np.asarray(seeds)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"`seed` must be a non-empty 1-D sequence of integers, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"`seed` must hold integers in [0, 2**63 - 1], got dtype {array.dtype}")
    if array.dtype.kind == "i" and (array < 0).any():
        raise ValueError(f"`seed` must be in [0, 2**63 - 1], got {array.min()}")
    if array.dtype.kind == "u" and (array > MAX_SEED).any():
        raise ValueError(f"`seed` must be in [0, 2**63 - 1], got {array.max()}")
    return array.astype(np.uint64)


def _check_int(name: str, value: int, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int in [0, {upper}], got {type(value).__name__}")
    if not 0 <= int(value) <= upper:
        raise ValueError(f"`{name}` must be in [0, {upper}], got {value}")
    return int(value)


def philox_words(seeds: np.ndarray | Sequence[int], counter: int, num_elements: int, stream: int) -> np.ndarray:
    """Raw uint32 words, shape [B, num_elements] (uint64 dtype holding uint32 values)."""
    seeds = _check_seeds(seeds)
    counter = _check_int("counter", counter, MAX_COUNTER)
    stream = _check_int("stream", stream, MAX_STREAM)
    num_elements = _check_int("num_elements", num_elements, 2**32 * 4)
    num_blocks = -(-num_elements // 4)
    block = np.arange(num_blocks, dtype=np.uint64)[None, :]
    key = (seeds[:, None] & MASK32, seeds[:, None] >> np.uint64(32))
    words = philox4x32((block, counter & MASK32, counter >> 32, stream), key)
    return np.stack(words, axis=-1).reshape(len(seeds), num_blocks * 4)[:, :num_elements]


def words_to_uniform(words: np.ndarray) -> np.ndarray:
    """uint32 words -> float64 uniforms in (0, 1) on the 2**-23 grid offset by 2**-24."""
    return ((words >> np.uint64(9)).astype(np.float64) * 2.0 + 1.0) * 2.0**-24


def counter_normal(
    seeds: np.ndarray | Sequence[int], counter: int, shape: Sequence[int], stream: int = LANGEVIN_STREAM
) -> np.ndarray:
    """Standard normal noise, float32 [B, *shape], a pure function of (seed[b], counter, element, stream)."""
    num_elements = math.prod(shape)
    padded = num_elements + (-num_elements) % 4
    uniform = words_to_uniform(philox_words(seeds, counter, padded, stream)).reshape(-1, padded // 4, 2, 2)
    radius = np.sqrt(-2.0 * np.log(uniform[..., 0]))
    angle = 2.0 * math.pi * uniform[..., 1]
    normal = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    # block layout: (word0, word1) -> (z0, z1) and (word2, word3) -> (z2, z3)
    normal = normal.reshape(len(normal), padded)[:, :num_elements]
    return normal.astype(np.float32).reshape(len(normal), *shape)


def counter_uniform(
    seeds: np.ndarray | Sequence[int], counter: int, shape: Sequence[int], stream: int = INIT_STREAM
) -> np.ndarray:
    """Uniform noise in (0, 1), float32 [B, *shape]; used for the initial sample (stream INIT_STREAM)."""
    num_elements = math.prod(shape)
    uniform = words_to_uniform(philox_words(seeds, counter, num_elements, stream))
    return uniform.astype(np.float32).reshape(len(uniform), *shape)


def langevin_counter(level_position: int, annealed_step: int, num_annealed_steps: int) -> int:
    """Noise counter of annealed step ``annealed_step`` at schedule position ``level_position``."""
    return level_position * num_annealed_steps + annealed_step


def seeds_for_batch(seed: int | Sequence[int], batch_size: int) -> np.ndarray:
    """Per-sample seeds: an int gives ``seed + b``; a sequence is taken as is (length must match)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if not 0 <= int(seed) <= MAX_SEED - (batch_size - 1):  # the last sample's seed seed + B - 1 <= 2**63 - 1
            raise ValueError(f"`seed` must be in [0, 2**63 - batch_size] = [0, {MAX_SEED - (batch_size - 1)}], got {seed}")
        return np.arange(batch_size, dtype=np.int64) + np.int64(seed)
    seeds = _check_seeds(seed).astype(np.int64)
    if len(seeds) != batch_size:
        raise ValueError(f"`seed` has {len(seeds)} entries but batch_size is {batch_size}")
    return seeds


def initial_sample(
    seeds: np.ndarray | Sequence[int], shape: Sequence[int], low: float = 0.0, high: float = 1.0
) -> np.ndarray:
    """The initial x of sampling, uniform in (low, high), float32 [B, *shape].

    Drawn at counter 0 of :data:`INIT_STREAM`: ``low + (high - low) * u`` evaluated in float64.
    """
    num_elements = math.prod(shape)
    uniform = words_to_uniform(philox_words(seeds, 0, num_elements, INIT_STREAM))
    return (low + (high - low) * uniform).astype(np.float32).reshape(len(uniform), *shape)
