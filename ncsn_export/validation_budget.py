"""How much of the full default schedule the export's validation can afford: :func:`plan_full_check`.

The full check runs the fused sampler over a long trajectory in onnxruntime and again in torch eager. At the
whole default schedule (every trained level x the scheduler's T steps, B=16) that is 1000 score calls of a
73 M-parameter UNet, twice: 40+ minutes on a 2-core machine. So, in ``auto`` mode, the cost is estimated from
the per-sample, per-call time measured in the dynamic check, and the largest check that fits the budget is
taken, in this order of preference:

1. the whole schedule (every level, every step) at the largest batch in 16, 8, 4, 2, 1 that fits;
2. every level with fewer annealed steps each, at B=1;
3. fewer levels, spread over the trained range (always the first and the last), one step each, at B=1;
4. nothing, with the reason (the budget cannot pay one score call).

``full`` mode runs the whole schedule at the full batch whatever it costs (its estimate is logged first).
The plan says exactly what it runs and what it leaves out (:meth:`FullCheckPlan.describe`), for the table
and the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_VALIDATION_BUDGET = 120.0  # seconds for the whole validation (dynamic + full check)
MAX_VALIDATION_BUDGET = 7 * 24 * 3600.0
VALIDATE_MODES = ("auto", "full", "none")
BATCH_LADDER = (16, 8, 4, 2, 1)


def check_validate_mode(validate: object) -> str:
    """``validate`` as a mode: True -> ``auto``, False -> ``none``, or one of :data:`VALIDATE_MODES`."""
    if validate is True:
        return "auto"
    if validate is False or validate is None:
        return "none"
    if isinstance(validate, str) and validate in VALIDATE_MODES:
        return validate
    raise ValueError(f"`validate` must be True, False or one of {', '.join(VALIDATE_MODES)}, got {validate!r}")


def check_validation_budget(seconds: object) -> float:
    """A budget in seconds, a finite number in [0, one week] (0: the full check is skipped in auto mode)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"`validation_budget` must be a number of seconds in [0, {MAX_VALIDATION_BUDGET:g}], "
                         f"got {seconds!r}")
    value = float(seconds)
    if not math.isfinite(value) or not 0.0 <= value <= MAX_VALIDATION_BUDGET:
        raise ValueError(f"`validation_budget` must be in [0, {MAX_VALIDATION_BUDGET:g}] seconds, got {seconds!r}")
    return value


@dataclass(frozen=True)
class FullCheckPlan:
    """The full check to run: its batch, levels and steps, its estimated cost, and the whole schedule it stands for.

    ``batch_size == 0`` means the check is skipped (``reason`` says why).
    """

    batch_size: int
    timesteps: tuple[int, ...]  # level indices into the trained levels, in schedule order
    num_annealed_steps: int
    estimated_seconds: float
    budget_seconds: float | None  # None: no budget (``full`` mode)
    full_levels: int  # the whole default schedule it is cut from
    full_steps: int
    full_batch: int
    reason: str = ""

    @property
    def skipped(self) -> bool:
        return self.batch_size == 0

    @property
    def is_whole(self) -> bool:
        return (not self.skipped and len(self.timesteps) == self.full_levels and self.num_annealed_steps == self.full_steps
                and self.batch_size == self.full_batch)

    def summary(self) -> str:
        """One line: what runs, e.g. ``levels 0-9 (10 of 10), 100 of 100 steps each, B=16``."""
        if self.skipped:
            return f"full check skipped: {self.reason}"
        return (f"levels {_levels_text(self.timesteps)} ({len(self.timesteps)} of {self.full_levels}), "
                f"{self.num_annealed_steps} of {self.full_steps} steps each, B={self.batch_size}")

    def left_out(self) -> str:
        """What of the whole default schedule does not run (``nothing`` for the whole schedule)."""
        if self.skipped:
            return f"the whole schedule ({self.full_levels} levels x {self.full_steps} steps, B={self.full_batch})"
        parts = []
        missing = sorted(set(range(self.full_levels)) - set(self.timesteps))
        if missing:
            parts.append(f"levels {_levels_text(missing)}")
        if self.num_annealed_steps < self.full_steps:
            parts.append(f"steps {self.num_annealed_steps + 1}-{self.full_steps} of every level")
        if self.batch_size < self.full_batch:
            parts.append(f"samples {self.batch_size + 1}-{self.full_batch} of the batch")
        return "; ".join(parts) or "nothing"

    def describe(self) -> dict[str, Any]:
        """The manifest's record of the plan (``validation_schedule.full_plan``)."""
        return {"ran": self.summary(), "left_out": self.left_out(), "reason": self.reason,
                "batch_size": self.batch_size, "timesteps": list(self.timesteps),
                "num_annealed_steps": self.num_annealed_steps, "estimated_seconds": round(self.estimated_seconds, 1),
                "budget_seconds": self.budget_seconds,
                "whole_schedule": {"levels": self.full_levels, "num_annealed_steps": self.full_steps,
                                   "batch_size": self.full_batch}}


def _levels_text(levels: Any) -> str:
    levels = list(levels)
    if levels and levels == list(range(levels[0], levels[-1] + 1)) and len(levels) > 2:
        return f"{levels[0]}-{levels[-1]}"
    return ",".join(str(level) for level in levels)


def spread_levels(count: int, num_levels: int) -> tuple[int, ...]:
    """``count`` level indices spread evenly over [0, num_levels), always the first and the last (count >= 2)."""
    if count >= num_levels:
        return tuple(range(num_levels))
    if count <= 1:
        return (num_levels - 1,) if count == 1 else ()
    return tuple(sorted(set(np.rint(np.linspace(0, num_levels - 1, count)).astype(int).tolist())))


def plan_full_check(mode: str, seconds_per_sample_call: float, budget_left: float | None, *, num_levels: int,
                    num_annealed_steps: int, full_batch: int, final_denoise: bool) -> FullCheckPlan:
    """The full check that fits ``budget_left`` seconds (``mode`` ``auto``), or the whole schedule (``full``).

    Args:
        mode: ``auto`` or ``full``.
        seconds_per_sample_call: measured onnxruntime + torch eager seconds per score call per sample (>= 0).
        budget_left: seconds the full check may take (``auto``); ignored in ``full`` mode.
        num_levels, num_annealed_steps, full_batch: the whole default schedule (L levels x T steps at B).
        final_denoise: the samplers add one score call after the last level.
    """
    per = max(float(seconds_per_sample_call), 0.0)

    def cost(levels: int, steps: int, batch: int) -> float:
        return (levels * steps + int(final_denoise)) * per * batch

    every = tuple(range(num_levels))
    whole = dict(full_levels=num_levels, full_steps=num_annealed_steps, full_batch=full_batch)
    if full_batch < 1:
        return FullCheckPlan(0, (), 0, 0.0, budget_left, reason="full_batch_size is 0", **whole)
    if mode == "full":
        return FullCheckPlan(full_batch, every, num_annealed_steps, cost(num_levels, num_annealed_steps, full_batch), None,
                             reason="--validate full: the whole default schedule", **whole)
    budget = max(float(budget_left or 0.0), 0.0)
    for batch in (b for b in BATCH_LADDER if b <= full_batch):
        estimate = cost(num_levels, num_annealed_steps, batch)
        if estimate <= budget:
            whole_cost = cost(num_levels, num_annealed_steps, full_batch)
            why = "fits the budget" if batch == full_batch else f"B={full_batch} would take ~{whole_cost:.0f} s"
            return FullCheckPlan(batch, every, num_annealed_steps, estimate, budget, reason=why, **whole)
    whole_b1 = cost(num_levels, num_annealed_steps, 1)
    steps = int(budget / per / num_levels) if per > 0 else num_annealed_steps
    if steps >= 1:
        steps = min(steps, num_annealed_steps)
        return FullCheckPlan(1, every, steps, cost(num_levels, steps, 1), budget,
                             reason=f"the whole schedule would take ~{whole_b1:.0f} s at B=1", **whole)
    count = int(budget / per) - int(final_denoise) if per > 0 else num_levels
    if count >= 2:
        levels = spread_levels(count, num_levels)
        return FullCheckPlan(1, levels, 1, cost(len(levels), 1, 1), budget,
                             reason=f"one step at every level would take ~{cost(num_levels, 1, 1):.0f} s", **whole)
    return FullCheckPlan(0, (), 0, cost(2, 1, 1), budget,
                         reason=f"{budget:.0f} s left of the budget cannot pay two score calls (~{per:.2f} s each at B=1, "
                                f"onnxruntime + torch); raise --validation-budget or use --validate full", **whole)
