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

The loop itself is the sampler's (:func:`.compose.annealed_loop_graph`); this module only adds the three
projections above as its hooks.

I/O (:data:`ncsn_runtime.contract.GRAPHS` ``["inpaint"]``): the sampler's inputs plus ``sigmas f32[N]`` (the
schedule's noise levels, aligned with ``timesteps``), ``known f32[B, ...]`` and ``mask f32[B, ...]``
(1 = known, 0 = fill; hosts check it is binary); output ``final_sample f32[B, ...]``. Noise: ``bitwise``
Philox (:mod:`.onnx_noise`), like ``sampler``. The network is inlined once, in the inner loop body, with its
weights as external-data references into ``weights.onnx.data`` (no bytes copied), as in every composed graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from ncsn_runtime.contract import GraphSpec
from ncsn_runtime.noise import INPAINT_STREAM

from .compose import LoopHooks, annealed_loop_graph
from .onnx_builder import GraphBuilder
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
    names: dict[str, str] = {}

    def prepare(main: GraphBuilder) -> None:
        names["keep"] = main.op("Sub", main.const(1.0, np.float32), "mask")

    def start_level(outer: GraphBuilder, x: str) -> str:
        """The known region's target ``y_i * mask`` for this level, and ``x`` projected onto it."""
        sigma = outer.op("Gather", "sigmas", "outer/i")
        target_noise = counter_normal(outer, "seed", outer.op("Reshape", "outer/i", outer.const([1], np.int64)), shape,
                                      noise_variant, stream=INPAINT_STREAM)  # [1, B, ...]
        squeezed = outer.op("Squeeze", target_noise, outer.const([0], np.int64))
        names["known_part"] = outer.op("Mul", outer.op("Add", "known", outer.op("Mul", sigma, squeezed)), "mask")
        return outer.op("Add", outer.op("Mul", x, names["keep"]), names["known_part"])

    def after_step(inner: GraphBuilder, stepped: str, denoising: str | None, output: str) -> None:
        """Every step ends on the known region again, except the final denoising step (kept as is)."""
        if denoising is None:
            inner.op("Add", inner.op("Mul", stepped, names["keep"]), names["known_part"], outputs=[output])
        else:
            projected = inner.op("Add", inner.op("Mul", stepped, names["keep"]), names["known_part"])
            inner.op("Where", denoising, stepped, projected, outputs=[output])

    def finish(main: GraphBuilder, looped: str, output: str) -> None:
        main.op("Add", main.op("Mul", looped, names["keep"]), main.op("Mul", "known", "mask"), outputs=[output])

    hooks = LoopHooks(level_body="inpaint_level", prepare=prepare, start_level=start_level, after_step=after_step,
                      finish=finish)
    return annealed_loop_graph(score, shape, train_sigmas, final_denoise, spec, noise_variant, hooks)
