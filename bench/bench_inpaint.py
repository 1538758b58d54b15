"""Inpainting real digits: how often does the judge read the completed digit as the original's class?

Held-out MNIST digits (the 500 that ``bench/eval_mnist.py``'s classifier does not train on) get their right
half masked (columns 14..27 unknown); the export's ``inpaint.onnx`` (or the stepwise path) fills it in, one
completion per digit (digit k: seed ``--seed + k``), through the export's full default schedule. The judge is
``eval_mnist.py``'s classifier. Printed, next to each other:

* ``completed``: share of completions classified as the original's class (the inpainting rate);
* ``left half only``: the same judge on the known half with the right half black (what the known pixels
  alone tell it);
* ``original``: the judge on the untouched digits (its accuracy on these digits).

    .venv/bin/python bench/bench_inpaint.py --export exports/mnist --num-digits 256

Writes JSON (default ``bench/results/bench_inpaint.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_mnist import CLASSIFIER_CACHE, HELD_OUT, class_probabilities, load_classifier
from ncsn_runtime.config import write_json_atomic
from ncsn_runtime.pipeline import NCSNPipeline

from ncsn_export.training.data import load_mnist_5k

RESULTS = Path(__file__).resolve().parent / "results"


def right_half_mask(size: int = 28) -> np.ndarray:
    """float32 [1, size, size]: 1 (known) on the left half, 0 (fill in) on the right half."""
    mask = np.zeros((1, size, size), np.float32)
    mask[..., : size // 2] = 1.0
    return mask


def held_out_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): eval_mnist.py's split (images float [N, 1, 28, 28] in [0, 1])."""
    images, labels = load_mnist_5k()
    data = torch.from_numpy(images).float() / 255.0
    targets = torch.from_numpy(labels)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1234))  # as eval_mnist.py
    train, test = order[:-HELD_OUT], order[-HELD_OUT:]
    return data[train], targets[train], data[test], targets[test]


def inpaint_digits(pipe: NCSNPipeline, digits: np.ndarray, seed: int, mode: str = "auto", batch_size: int = 32) -> np.ndarray:
    """Completions float32 [N, 1, 28, 28] of ``digits`` (float32 [N, 1, 28, 28] in the data range), right half masked."""
    mask = right_half_mask(digits.shape[-1])
    out = []
    for start in range(0, len(digits), batch_size):
        chunk = digits[start : start + batch_size]
        seeds = list(range(seed + start, seed + start + len(chunk)))
        out.append(pipe.inpaint(chunk, mask, seed=seeds, output_type="raw", progress=False, mode=mode).images)
    return np.concatenate(out)


def judge_rate(classifier: torch.nn.Module, images: np.ndarray, labels: torch.Tensor) -> float:
    """Share of ``images`` (float [N, 1, 28, 28] in [0, 1]) the judge classifies as ``labels``."""
    probabilities = class_probabilities(classifier, torch.from_numpy(np.clip(images, 0.0, 1.0).astype(np.float32)))
    return float((probabilities.argmax(1) == labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, metavar="DIR", help="an MNIST export directory (ncsn-export)")
    parser.add_argument("--num-digits", type=int, default=256, help=f"held-out digits to inpaint (at most {HELD_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("auto", "fused", "stepwise"), default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classifier-cache", default=str(CLASSIFIER_CACHE))
    parser.add_argument("--json", default=str(RESULTS / "bench_inpaint.json"))
    args = parser.parse_args(argv)
    if not 1 <= args.num_digits <= HELD_OUT:
        parser.error(f"--num-digits must be in [1, {HELD_OUT}], got {args.num_digits}")
    torch.set_num_threads(args.threads)
    train_x, train_y, test_x, test_y = held_out_split()
    classifier = load_classifier(Path(args.classifier_cache), train_x, train_y)
    pipe = NCSNPipeline.from_pretrained(args.export, provider="cpu", intra_op_threads=args.threads)
    low, high = pipe.data_range
    digits = (low + (high - low) * test_x[: args.num_digits].numpy()).astype(np.float32)
    labels = test_y[: args.num_digits]
    start = time.perf_counter()
    completed = inpaint_digits(pipe, digits, args.seed, args.mode)
    seconds = time.perf_counter() - start
    unit = (completed - low) / (high - low)
    mask = right_half_mask()
    rows = {"completed": judge_rate(classifier, unit, labels),
            "left half only": judge_rate(classifier, test_x[: args.num_digits].numpy() * mask, labels),
            "original": judge_rate(classifier, test_x[: args.num_digits].numpy(), labels)}
    run = pipe.last_run
    print(f"{args.num_digits} held-out digits, right half masked, {run.num_inference_steps} levels x "
          f"{run.num_annealed_steps} steps, {run.mode} ({run.engine}), {seconds:.1f} s")
    print(f"{'judge input':<16} {'rate':>6}")
    for name, rate in rows.items():
        print(f"{name:<16} {rate:>6.3f}")
    write_json_atomic(Path(args.json), {
        "export": str(args.export), "num_digits": args.num_digits, "seed": args.seed, "mask": "right half (columns 14-27)",
        "mode": run.mode, "engine": run.engine, "levels": run.num_inference_steps, "steps": run.num_annealed_steps,
        "seconds": round(seconds, 2), "rates": rows, "model": pipe.manifest["model"]["name"],
        "weights_sha256": pipe.manifest["files"].get("weights.onnx.data", {}).get("sha256"),
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
