"""``inpaint.onnx``: the fused annealed loop of ``sampler.onnx`` conditioned on a known image and a mask.

Song & Ermon 2019, Section 5 (Algorithm 2), as :mod:`ncsn_runtime.inpaint` runs it stepwise, in the same
float32 order, so one seed gives the same completion on every host (<= 1e-4)::

    keep = 1 - mask                                   # once
    for i in positions:                               # outer Loop
        y_i = known + sigma_i * z_i                   # z_i: counter noise, INPAINT_STREAM, counter i
        ym  = y_i * mask
        x   = x * keep + ym                           # before the level
        for t in range(T):                            # inner Loop (the sampler's, noise counters i*T + t)
            x = langevin(x, s(x, level_i)) * keep + ym  # after every step
    [x = x + sigma_last**2 * s(x, level_last)]        # final_denoise: the inner loop's extra iteration, not projected
    final_sample = x * keep + known * mask

I/O (:data:`ncsn_runtime.contract.GRAPHS` ``["inpaint"]``): the sampler's inputs plus ``sigmas f32[N]`` (the
schedule's noise levels, aligned with ``timesteps``), ``known f32[B, ...]`` and ``mask f32[B, ...]``
(1 = known, 0 = fill; hosts check it is binary); output ``final_sample f32[B, ...]``. Noise: ``bitwise``
Philox (:mod:`.onnx_noise`), like ``sampler``. The network is inlined once, in the inner loop body, with its
weights as external-data references into ``weights.onnx.data`` (no bytes copied), as in every composed graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from ncsn_runtime.contract import BATCH, GraphSpec
from ncsn_runtime.noise import INPAINT_STREAM
from onnx import TensorProto

from .compose import _batch_levels, _io, half, inline_network, langevin
from .onnx_builder import GraphBuilder, tensor_info
from .onnx_noise import counter_normal

__all__ = ["inpaint_graph"]


def inpaint_graph(score: onnx.GraphProto, shape: tuple[int, ...], train_sigmas: np.ndarray, final_denoise: bool,
                  spec: GraphSpec, noise_variant: str = "bitwise") -> onnx.GraphProto:
    """The ``inpaint`` graph around the score network ``score`` (see the module docstring).

    Args:
        score: the (renamed-on-inline) score network graph, ``sample, timestep -> score``.
        shape: per-sample shape; train_sigmas: float32 [L] (for ``final_denoise``).
        spec: the contract's ``inpaint`` spec (I/O names, dtypes, shapes).
    """
    sample_dims = [BATCH, *shape]
    main = GraphBuilder("main/")
    num_positions = main.op("Size", "timesteps")
    steps = main.op("Reshape", "num_annealed_steps", main.const([], np.int64))  # T, scalar
    keep = main.op("Sub", main.const(1.0, np.float32), "mask")
    if final_denoise:
        last_step = main.op("Sub", steps, main.const(1, np.int64))
        last_position = main.op("Sub", num_positions, main.const(1, np.int64))
        sigma_last = main.op("Gather", main.const(train_sigmas, np.float32, hint="train_sigmas"),
                             main.op("Gather", "timesteps", last_position))
        denoise_half_step = main.op("Mul", sigma_last, sigma_last)  # 0.5 * (2 * sigma_last**2), exactly

    # outer body: position i -- the known region's target y_i, projected before the level
    outer = GraphBuilder("outer/")
    level = outer.op("Gather", "timesteps", "outer/i")
    alpha = outer.op("Gather", "step_sizes", "outer/i")
    sigma = outer.op("Gather", "sigmas", "outer/i")
    sqrt_alpha = outer.op("Sqrt", alpha)
    half_alpha = half(outer, alpha)
    target_noise = counter_normal(outer, "seed", outer.op("Reshape", "outer/i", outer.const([1], np.int64)), shape,
                                  noise_variant, stream=INPAINT_STREAM)  # [1, B, ...]
    target = outer.op("Add", "known", outer.op("Mul", sigma, outer.op("Squeeze", target_noise, outer.const([0], np.int64))))
    known_part = outer.op("Mul", target, "mask")
    start_x = outer.op("Add", outer.op("Mul", "outer/x", keep), known_part)
    start = outer.op("Mul", "outer/i", steps)
    counters = outer.op("Add", start, outer.op("Range", outer.const(0, np.int64), steps, outer.const(1, np.int64)))
    noise_all = counter_normal(outer, "seed", counters, shape, noise_variant)  # [T, B, ...], the sampler's noise
    levels = _batch_levels(outer, "outer/x", level)
    if final_denoise:
        is_last = outer.op("Cast", outer.op("Equal", "outer/i", last_position), to=TensorProto.INT64)
        trip_count = outer.op("Add", steps, is_last)
    else:
        trip_count = steps

    # inner body: annealed step t, then the known region again (t == T: the final denoising step, kept as is)
    inner = GraphBuilder("inner/")
    if final_denoise:
        noise = inner.op("Gather", noise_all, inner.op("Min", "inner/t", last_step), axis=0)
        denoising = inner.op("Equal", "inner/t", steps)
        half_step = inner.op("Where", denoising, denoise_half_step, half_alpha)
        noise_scale = inner.op("Where", denoising, inner.const(0.0, np.float32), sqrt_alpha)
    else:
        noise = inner.op("Gather", noise_all, "inner/t", axis=0)
        half_step, noise_scale = half_alpha, sqrt_alpha
    network_score = inline_network(inner, score, "inner/x", levels)
    stepped = inner.fresh("stepped")
    langevin(inner, "inner/x", network_score, half_step, noise_scale, noise, stepped)
    projected = inner.op("Add", inner.op("Mul", stepped, keep), known_part)
    if final_denoise:
        inner.op("Where", denoising, stepped, projected, outputs=["inner/x_next"])
    else:
        inner.op("Identity", projected, outputs=["inner/x_next"])
    inner.op("Identity", "inner/cond", outputs=["inner/cond_out"])
    inner_body = inner.graph(
        "annealed_step",
        [tensor_info("inner/t", TensorProto.INT64, []), tensor_info("inner/cond", TensorProto.BOOL, []),
         tensor_info("inner/x", TensorProto.FLOAT, sample_dims)],
        [tensor_info("inner/cond_out", TensorProto.BOOL, []), tensor_info("inner/x_next", TensorProto.FLOAT, sample_dims)],
    )
    outer.op("Loop", trip_count, outer.const(True, np.bool_), start_x, outputs=["outer/x_next"], body=inner_body)
    outer.op("Identity", "outer/cond", outputs=["outer/cond_out"])
    outer_body = outer.graph(
        "inpaint_level",
        [tensor_info("outer/i", TensorProto.INT64, []), tensor_info("outer/cond", TensorProto.BOOL, []),
         tensor_info("outer/x", TensorProto.FLOAT, sample_dims)],
        [tensor_info("outer/cond_out", TensorProto.BOOL, []), tensor_info("outer/x_next", TensorProto.FLOAT, sample_dims)],
    )
    looped = main.op("Loop", num_positions, main.const(True, np.bool_), "sample", body=outer_body)
    main.op("Add", main.op("Mul", looped, keep), main.op("Mul", "known", "mask"), outputs=[spec.outputs[0].name])
    inputs, outputs = _io(spec, shape)
    return main.graph(spec.key, inputs, outputs)
