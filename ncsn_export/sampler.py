"""The whole annealed Langevin loop plus the score network as one ``nn.Module``.

:class:`AnnealedLangevinSampler` runs ``N * T`` Langevin steps in a single flat loop over the global
step index ``k = i * T + t`` (level position ``i``, annealed step ``t``), which is also the noise
counter of :func:`ncsn_runtime.noise.langevin_counter`. The position ``i`` is carried and bumped
when ``t`` wraps, so no integer division appears in the graph (the dynamo exporter lowers int64
floor division through float32).

With ``final_denoise`` the loop runs one more iteration, ``k = N * T``, whose update is NCSNv2's
``x + sigma_last**2 * score`` instead of a Langevin step; the score network thus appears once in an
exported graph, inside the loop body, and its weights can live in the body (see the ONNX exporter).

Two forms of the same loop, over the same ``body``:

* under ``torch.export`` / ``torch.onnx.export(dynamo=True)``: ``torch._higher_order_ops.while_loop``
  (becomes an ONNX ``Loop``);
* eager and ``torch.jit.script``: a plain ``for`` loop over the same body (``while_loop``'s own
  eager path would ``torch.compile`` the body first, which takes tens of seconds for a RefineNet).
"""

from __future__ import annotations

import torch
from ncsn_runtime.schedule import denoise_update
from torch import nn

from .step import LangevinStep


class AnnealedLangevinSampler(nn.Module):
    """Annealed Langevin dynamics with counter noise around any score network.

    Args:
        score_model: ``forward(sample f32[B, ...], timestep i64[B]) -> score f32[B, ...]``.
        train_sigmas: float32 [L], the network's trained noise levels (needed for ``final_denoise``).
        final_denoise: after the loop, apply NCSNv2's ``x + sigma_last**2 * score`` with
            ``sigma_last = train_sigmas[timesteps[-1]]`` and no noise.

    ``forward(sample, seed, timesteps, step_sizes, num_annealed_steps)``:
        sample: float32 [B, ...], the initial x (see :func:`ncsn_runtime.noise.initial_sample`).
        seed: int64 [B], one seed per sample.
        timesteps: int64 [N], level indices fed to the network, in schedule order.
        step_sizes: float32 [N], alpha of each schedule position.
        num_annealed_steps: int64 scalar tensor T >= 1.
    Returns float32 [B, ...], the final sample. Step ``t`` of position ``i`` draws noise at counter ``i*T + t``.
    """

    def __init__(self, score_model: nn.Module, train_sigmas: torch.Tensor | None = None, final_denoise: bool = False) -> None:
        super().__init__()
        if final_denoise and train_sigmas is None:
            raise ValueError("`final_denoise=True` needs `train_sigmas` (the network's trained sigmas, float32 [L])")
        self.score_model = score_model
        self.step = LangevinStep()
        self.final_denoise = bool(final_denoise)
        sigmas = torch.ones(1) if train_sigmas is None else torch.as_tensor(train_sigmas, dtype=torch.float32).reshape(-1)
        self.register_buffer("train_sigmas", sigmas.clone(), persistent=False)

    def body(
        self,
        k: torch.Tensor,
        i: torch.Tensor,
        t: torch.Tensor,
        x: torch.Tensor,
        seed: torch.Tensor,
        timesteps: torch.Tensor,
        step_sizes: torch.Tensor,
        num_annealed_steps: torch.Tensor,
        num_langevin_steps: torch.Tensor,
        sigma_last_squared: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Iteration ``k`` (position ``i``, annealed step ``t``; int64 []): one Langevin step, or at
        ``k == num_langevin_steps`` (only reached with ``final_denoise``) the denoising step.

        The score network is called once per iteration, so it appears once in an exported graph.
        """
        position = torch.minimum(i, torch.full_like(i, timesteps.shape[0] - 1)).reshape(1)
        level = torch.index_select(timesteps, 0, position).expand(x.shape[0])
        alpha = torch.index_select(step_sizes, 0, position).reshape(())
        score = self.score_model(x, level)
        next_x = self.step(x, score, alpha, seed, k)
        if self.final_denoise:
            next_x = torch.where(k == num_langevin_steps, denoise_update(x, score, sigma_last_squared), next_x)
        t = t + 1
        wrapped = t == num_annealed_steps
        i = torch.where(wrapped, i + 1, i)
        t = torch.where(wrapped, torch.zeros_like(t), t)
        return k + 1, i, t, next_x

    def sigma_last_squared(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``train_sigmas[timesteps[-1]] ** 2`` (float32 []), the denoising step's factor."""
        last = torch.index_select(timesteps, 0, torch.full((1,), timesteps.shape[0] - 1, dtype=torch.int64))
        sigma = torch.index_select(self.train_sigmas, 0, last).reshape(())
        return sigma * sigma

    @torch.jit.unused
    def _while_loop(
        self,
        sample: torch.Tensor,
        seed: torch.Tensor,
        timesteps: torch.Tensor,
        step_sizes: torch.Tensor,
        num_annealed_steps: torch.Tensor,
    ) -> torch.Tensor:
        from torch._higher_order_ops.while_loop import while_loop

        num_annealed_steps = num_annealed_steps.reshape(())
        num_langevin_steps = timesteps.shape[0] * num_annealed_steps
        total = num_langevin_steps + 1 if self.final_denoise else num_langevin_steps
        sigma_last_squared = self.sigma_last_squared(timesteps) if self.final_denoise else torch.zeros(())
        zero = torch.zeros((), dtype=torch.int64)

        def cond_fn(k, i, t, x):
            return k < total

        def body_fn(k, i, t, x):
            return self.body(k, i, t, x, seed, timesteps, step_sizes, num_annealed_steps, num_langevin_steps, sigma_last_squared)

        _, _, _, x = while_loop(cond_fn, body_fn, (zero, zero.clone(), zero.clone(), sample))
        return x

    def forward(
        self,
        sample: torch.Tensor,
        seed: torch.Tensor,
        timesteps: torch.Tensor,
        step_sizes: torch.Tensor,
        num_annealed_steps: torch.Tensor,
    ) -> torch.Tensor:
        if not torch.jit.is_scripting() and torch.compiler.is_compiling():  # torch.export / torch.onnx.export(dynamo=True)
            return self._while_loop(sample, seed, timesteps, step_sizes, num_annealed_steps)
        # eager (a plain Python loop: while_loop's eager path would torch.compile the body) and TorchScript
        num_annealed_steps = num_annealed_steps.reshape(())
        num_langevin_steps = timesteps.shape[0] * num_annealed_steps
        total = int(num_langevin_steps) + 1 if self.final_denoise else int(num_langevin_steps)
        sigma_last_squared = self.sigma_last_squared(timesteps) if self.final_denoise else torch.zeros(())
        k = torch.zeros((), dtype=torch.int64)
        i = torch.zeros((), dtype=torch.int64)
        t = torch.zeros((), dtype=torch.int64)
        x = sample
        for _ in range(total):
            k, i, t, x = self.body(k, i, t, x, seed, timesteps, step_sizes, num_annealed_steps, num_langevin_steps,
                                   sigma_last_squared)
        return x
