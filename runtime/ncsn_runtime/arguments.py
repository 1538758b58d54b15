"""Range checks of ``ncsn-sample``'s numeric arguments, shared by the local engine (:mod:`ncsn_runtime.cli`) and
the Ray engine (:mod:`ncsn_runtime.distributed`), so both accept exactly the same values.

Light on purpose (no onnxruntime): ``--help`` and argument errors stay fast.
"""

from __future__ import annotations

import argparse

from .images import MAX_SCALE
from .noise import MAX_SEED

__all__ = ["check_ranges"]


def check_ranges(args: argparse.Namespace) -> None:
    """Range checks of the numeric arguments, shared by both engines (``ValueError`` naming the flag)."""
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 <= args.seed <= MAX_SEED - (args.num_samples - 1):
        top = MAX_SEED - (args.num_samples - 1)
        raise ValueError(f"--seed must be in [0, 2**63 - N] = [0, {top}] for N = {args.num_samples} samples "
                         f"(sample n uses seed S + n), got {args.seed}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--num-inference-steps must be >= 1, got {args.steps}")
    if args.nrow is not None and args.nrow < 1:
        raise ValueError(f"--nrow must be >= 1, got {args.nrow}")
    scale = getattr(args, "scale", None)
    if scale is not None and not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"--scale must be in [1, {MAX_SCALE}] (each image enlarged K times, nearest-neighbour), got {scale}")
    if args.device_id < 0:
        raise ValueError(f"--device-id must be >= 0, got {args.device_id}")
