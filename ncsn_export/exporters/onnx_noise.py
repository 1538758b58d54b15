"""The counter noise of :mod:`ncsn_runtime.noise` (Philox4x32-10 + Box-Muller) written directly as ONNX nodes.

Integers are ``uint64`` holding uint32 words, so a 32x32-bit Philox product is exact (< 2**64) and one
``Mul`` + ``Div`` by ``2**32`` gives its high word. Two variants, bit-identical words:

* ``"bitwise"`` (CPU graphs ``step`` / ``sampler``): masks are ``BitwiseAnd``, XOR is ``BitwiseXor``,
  ``>>`` is ``BitShift`` (onnxruntime's CPU kernel takes uint64; a uint64 ``Div`` is 10x slower).
* ``"arithmetic"`` (``gpu_sampler``): only ops with CUDA kernels in onnxruntime. Masks are ``Mod`` by
  ``2**k`` and ``>>`` is ``Div`` by ``2**k`` (exact on unsigned ints). XOR (``xor_method``):

  - ``"lut"`` (default): each word split into 4 bytes (``Mod(Div(x, 256**j), 256)``), byte pairs
    looked up in a 256x256 XOR table (one ``Gather`` per extra operand);
  - ``"planes"``: bit-plane parity, 32 bits per word (``Mod(Div(x, 2**j), 2)``) added, ``Mod 2``.

  Either way the digits are packed again by a float64 ``MatMul`` with their place values (every
  partial sum is an integer below 2**32, exact in float64; no int64 ``ReduceSum``, which onnxruntime
  CUDA evaluates through float32). ``lut`` moves 8x less data and ran 1.6x faster on CPU.

Box-Muller's float64 ``Log``/``Cos``/``Sin``/``Sqrt`` have CUDA kernels too. Their libm differs from the
host's by a few float64 ulp (CUDA documents <= 1 ulp for log, <= 2 for sin/cos; sqrt is exact), so a
float32 result can differ only where the float64 value lies within a few ulp of a float32 rounding
boundary (about 1e-8 of the elements), and then by one float32 ulp (< 5e-7 for |z| < 8).

A draw covers several counters at once: ``counters`` int64 [T] gives noise float32 [T, B, *shape]
(one Langevin level's T steps in one pass). Box-Muller runs in float64 and is rounded to float32,
as the contract defines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from ncsn_runtime.noise import LANGEVIN_STREAM, PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1
from onnx import TensorProto, helper

from .onnx_builder import GraphBuilder, tensor_info

VARIANTS = ("bitwise", "arithmetic")
_U64 = np.uint64
_TWO32 = 2**32


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


class _Philox:
    """Emits Philox4x32-10 nodes for one variant into a :class:`GraphBuilder`."""

    def __init__(self, b: GraphBuilder, variant: str, xor_method: str = "lut") -> None:
        self.b = b
        self.variant = check_variant(variant)
        self.xor_method = xor_method

    def low_bits(self, x: str, bits: int) -> str:
        """``x mod 2**bits`` (``x & (2**bits - 1)``)."""
        if self.variant == "bitwise":
            return self.b.op("BitwiseAnd", x, self.b.const(2**bits - 1, _U64))
        return self.b.op("Mod", x, self.b.const(2**bits, _U64))

    def shift_right(self, x: str, bits: int) -> str:
        """``x >> bits``: ``BitShift`` on CPU (uint64 kernel), ``Div`` by ``2**bits`` for CUDA (exact on unsigned ints)."""
        if self.variant == "bitwise":
            return self.b.op("BitShift", x, self.b.const(bits, _U64), direction="RIGHT")
        return self.b.op("Div", x, self.b.const(2**bits, _U64))

    def high_word(self, x: str) -> str:
        return self.shift_right(x, 32)

    def mulhilo(self, a: str, multiplier: int) -> tuple[str, str]:
        product = self.b.op("Mul", a, self.b.const(multiplier, _U64))  # < 2**64: exact
        return self.high_word(product), self.low_bits(product, 32)

    def xor(self, *words: str | None) -> str:
        """XOR of 2 or 3 uint32 words (None: a word known to be zero, skipped)."""
        words = tuple(word for word in words if word is not None)
        if len(words) == 1:
            return words[0]
        if self.variant == "bitwise":
            out = words[0]
            for word in words[1:]:
                out = self.b.op("BitwiseXor", out, word)
            return out
        if self.xor_method == "lut":
            return self._xor_bytes(words)
        return self._xor_planes(words)

    def _xor_planes(self, words: tuple[str, ...]) -> str:
        """Bit-plane parity: 32 bits per word, summed, ``Mod 2``, packed by a float64 MatMul with [2**0 .. 2**31]."""
        planes = self.b.const(2 ** np.arange(32, dtype=np.uint64), _U64, hint="bit_planes")
        two = self.b.const(2, _U64)
        last_axis = self.b.const([-1], np.int64)
        total = None
        for word in words:
            bits = self.b.op("Mod", self.b.op("Div", self.b.op("Unsqueeze", word, last_axis), planes), two)
            total = bits if total is None else self.b.op("Add", total, bits)
        parity = self.b.op("Cast", self.b.op("Mod", total, two), to=TensorProto.DOUBLE)
        packed = self.b.op("MatMul", parity, self.b.const(2.0 ** np.arange(32), np.float64, hint="bit_values"))
        return self.b.op("Cast", packed, to=TensorProto.UINT64)

    def _xor_bytes(self, words: tuple[str, ...]) -> str:
        """Byte-wise lookup: 4 bytes per word, ``table[a * 256 + b] = a ^ b`` (a 256x256 Gather), packed by a float64 MatMul."""
        places = self.b.const(256 ** np.arange(4, dtype=np.uint64), _U64, hint="byte_places")
        byte = self.b.const(256, _U64)
        last_axis = self.b.const([-1], np.int64)
        # uint8 entries (64 KiB, not 512 KiB of uint64): each lookup is cast back to uint64
        table = self.b.const(np.bitwise_xor.outer(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8)).reshape(-1),
                             np.uint8, hint="xor_table")
        out = None
        for word in words:
            digits = self.b.op("Mod", self.b.op("Div", self.b.op("Unsqueeze", word, last_axis), places), byte)
            if out is None:
                out = digits
            else:
                index = self.b.op("Cast", self.b.op("Add", self.b.op("Mul", out, byte), digits), to=TensorProto.INT64)
                out = self.b.op("Cast", self.b.op("Gather", table, index), to=TensorProto.UINT64)
        packed = self.b.op("MatMul", self.b.op("Cast", out, to=TensorProto.DOUBLE),
                           self.b.const(256.0 ** np.arange(4), np.float64, hint="byte_values"))
        return self.b.op("Cast", packed, to=TensorProto.UINT64)

    def rounds(self, c0: str, c1: str, c2: str, c3: str | None, k0: str, k1: str) -> tuple[str, str, str, str]:
        """Ten Philox rounds; round r uses the key ``(k + r * W) mod 2**32`` (the reference's running sum)."""
        for round_index in range(PHILOX_ROUNDS):
            if round_index:
                key0 = self.low_bits(self.b.op("Add", k0, self.b.const(round_index * PHILOX_W0, _U64)), 32)
                key1 = self.low_bits(self.b.op("Add", k1, self.b.const(round_index * PHILOX_W1, _U64)), 32)
            else:
                key0, key1 = k0, k1
            hi0, lo0 = self.mulhilo(c0, PHILOX_M0)
            hi1, lo1 = self.mulhilo(c2, PHILOX_M1)
            c0, c1, c2, c3 = self.xor(hi1, c1, key0), lo1, self.xor(hi0, c3, key1), lo0
        assert c3 is not None
        return c0, c1, c2, c3


def philox_words(b: GraphBuilder, seed: str, counters: str, num_blocks: int, variant: str,
                 stream: int = LANGEVIN_STREAM, xor_method: str = "lut") -> str:
    """Philox words uint64 [T, B, num_blocks, 4] for ``seed`` int64 [B] (>= 0) and ``counters`` int64 [T] (>= 0)."""
    philox = _Philox(b, variant, xor_method)
    seed64 = b.op("Cast", b.op("Unsqueeze", seed, b.const([0, 2], np.int64)), to=TensorProto.UINT64)  # [1, B, 1]
    counter64 = b.op("Cast", b.op("Unsqueeze", counters, b.const([1, 2], np.int64)), to=TensorProto.UINT64)  # [T, 1, 1]
    key0, key1 = philox.low_bits(seed64, 32), philox.high_word(seed64)
    block = b.const(np.arange(num_blocks, dtype=np.uint64).reshape(1, 1, num_blocks), hint="block")
    c3 = None if stream == 0 else b.const(np.full((1, 1, 1), stream, dtype=np.uint64), hint="stream")
    words = philox.rounds(block, philox.low_bits(counter64, 32), philox.high_word(counter64), c3, key0, key1)
    last_axis = b.const([-1], np.int64)
    return b.op("Concat", *(b.op("Unsqueeze", word, last_axis) for word in words), axis=-1)


def counter_normal(b: GraphBuilder, seed: str, counters: str, sample_shape: Sequence[int], variant: str,
                   stream: int = LANGEVIN_STREAM, words_out: list[str] | None = None, xor_method: str = "lut") -> str:
    """Standard normal noise float32 [T, B, *sample_shape] equal to ``ncsn_runtime.noise.counter_normal``
    for each counter of ``counters`` int64 [T] and each seed of ``seed`` int64 [B].

    ``words_out``, when given, receives the name of the Philox words (uint64 [T, B, blocks, 4]) for tests.
    """
    num_elements = math.prod(sample_shape)
    num_blocks = -(-num_elements // 4)
    words = philox_words(b, seed, counters, num_blocks, variant, stream, xor_method)
    philox = _Philox(b, variant, xor_method)
    if words_out is not None:
        words_out.append(words)
    # u = (2 * (w >> 9) + 1) * 2**-24, exact in float64
    odd = b.op("Add", b.op("Mul", philox.shift_right(words, 9), b.const(2, _U64)), b.const(1, _U64))
    uniform = b.op("Mul", b.op("Cast", odd, to=TensorProto.DOUBLE), b.const(2.0**-24, np.float64))
    pairs = b.op("Reshape", uniform, b.const([0, 0, 0, 2, 2], np.int64))  # [T, B, blocks, pair, (radius word, angle word)]
    radius_u = b.op("Gather", pairs, b.const(0, np.int64), axis=-1)
    angle_u = b.op("Gather", pairs, b.const(1, np.int64), axis=-1)
    radius = b.op("Sqrt", b.op("Mul", b.op("Log", radius_u), b.const(-2.0, np.float64)))
    angle = b.op("Mul", angle_u, b.const(2.0 * math.pi, np.float64))
    last_axis = b.const([-1], np.int64)
    cos_part = b.op("Unsqueeze", b.op("Mul", radius, b.op("Cos", angle)), last_axis)
    sin_part = b.op("Unsqueeze", b.op("Mul", radius, b.op("Sin", angle)), last_axis)
    normal = b.op("Cast", b.op("Concat", cos_part, sin_part, axis=-1), to=TensorProto.FLOAT)  # [T, B, blocks, 2, 2]
    flat = b.op("Reshape", normal, b.const([0, 0, num_blocks * 4], np.int64))
    if num_blocks * 4 != num_elements:
        flat = b.op("Slice", flat, b.const([0], np.int64), b.const([num_elements], np.int64), b.const([2], np.int64))
    return b.op("Reshape", flat, b.const([0, 0, *sample_shape], np.int64), hint="noise")


def noise_model(sample_shape: Sequence[int], variant: str, opset: int = 18, xor_method: str = "lut") -> onnx.ModelProto:
    """A standalone noise graph (tests, benchmarks).

    ``(seed int64 [B], counters int64 [T]) -> (noise float32 [T, B, *shape], words int64 [T, B, blocks, 4])``.
    """
    b = GraphBuilder("noise/")
    words: list[str] = []
    noise = counter_normal(b, "seed", "counters", sample_shape, variant, words_out=words, xor_method=xor_method)
    b.op("Identity", noise, outputs=["noise"])
    b.op("Cast", words[0], outputs=["words"], to=TensorProto.INT64)
    num_blocks = -(-math.prod(sample_shape) // 4)
    graph = b.graph(
        f"counter_noise_{variant}",
        [tensor_info("seed", TensorProto.INT64, ["batch"]), tensor_info("counters", TensorProto.INT64, ["steps"])],
        [tensor_info("noise", TensorProto.FLOAT, ["steps", "batch", *sample_shape]),
         tensor_info("words", TensorProto.INT64, ["steps", "batch", num_blocks, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def count_nodes(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> number of nodes (top-level graph)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
