"""``ncsn-sample``: draw samples from an export directory and write a PNG or a .npy (numpy + onnxruntime only).

Examples::

    ncsn-sample exports/mnist --num-samples 16 --seed 0 --output samples.png
    ncsn-sample exports/toy-gmm --num-samples 1000 --seed 0 --output toy.png   # scatter plot
    ncsn-sample exports/toy-gmm --num-samples 1000 --seed 0 --output toy.npy   # raw [N, 2] float32

``.png``: image models give a grid (``--nrow`` images per row); 2-D non-image models (the toy
mixture) give a scatter plot over the manifest's data range; other non-image models must use
``.npy``. ``.npy``: the raw samples, float32 [N, *sample_shape], in model space.
Sample ``n`` always uses seed ``S + n``, so ``--batch-size`` changes speed and memory, never the samples.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

OUTPUT_SUFFIXES = (".png", ".npy")
PROVIDER_CHOICES = ("auto", "cpu", "cuda")  # as ncsn_runtime.providers; not imported here so --help stays light



class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help already says it or the default is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ncsn-sample",
        description="Sample from an ncsn-export directory with onnxruntime (no torch needed).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="directory written by ncsn-export")
    parser.add_argument("--num-samples", "-n", type=int, default=16, help="number of samples N")
    parser.add_argument("--seed", "-s", type=int, default=0, help="sample n uses seed S + n")
    parser.add_argument("--num-inference-steps", dest="steps", type=int, default=None, metavar="N",
                        help="noise levels to anneal through (default: all trained levels)")
    parser.add_argument("--steps", dest="steps", type=int, default=None, help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--mode", choices=("auto", "fused", "stepwise"), default="auto", help="fused graph or Python loop")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="onnxruntime execution provider")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device ordinal")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per run (default: all N at once)")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(N))")
    parser.add_argument("--output", "-o", required=True, help="output file: .png (grid / scatter plot) or .npy (raw samples)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", help="log provider and engine choices")
    return parser


def _check_args(args: argparse.Namespace) -> Path:
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output must end in {' or '.join(OUTPUT_SUFFIXES)}, got {output.name!r}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.nrow is not None and args.nrow < 1:
        raise ValueError(f"--nrow must be >= 1, got {args.nrow}")
    return output


def sample_all(pipe, num_samples: int, seed: int, steps: int | None, mode: str, batch_size: int | None,
               progress: bool) -> np.ndarray:
    """Raw samples float32 [N, *sample_shape]; sample n uses seed ``seed + n`` whatever the batch size."""
    batch = batch_size or num_samples
    chunks = []
    for offset in range(0, num_samples, batch):
        count = min(batch, num_samples - offset)
        output = pipe(batch_size=count, num_inference_steps=steps, seed=seed + offset, mode=mode, output_type="raw",
                      progress=progress)
        chunks.append(output.images)
    return np.concatenate(chunks)


def write_output(pipe, samples: np.ndarray, output: Path, nrow: int | None) -> str:
    """Write samples to ``output`` (.png or .npy); returns a short description of what was written."""
    from .images import save_grid_png, save_npy, save_scatter_png, to_numpy_images

    shape = "x".join(str(size) for size in samples.shape[1:])
    if output.suffix.lower() == ".npy":
        save_npy(samples, output)
        return f"{len(samples)} raw samples, float32 [{len(samples)}, {shape.replace('x', ', ')}]"
    if pipe.is_image:
        save_grid_png(to_numpy_images(samples, pipe.data_range), output, nrow)
        return f"a grid of {len(samples)} images ({shape})"
    if samples.shape[1:] == (2,):
        save_scatter_png(samples, output, pipe.data_range)
        return f"a scatter plot of {len(samples)} 2-D samples (square covering {list(pipe.data_range)}^2 and every sample)"
    raise ValueError(f"samples of shape ({shape}) are neither images nor 2-D points; write them with --output FILE.npy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    start = time.perf_counter()
    from .manifest import ExportDirectoryError
    from .pipeline import NCSNPipeline
    from .providers import ProviderError
    from .steppers import NonFiniteSampleError

    try:
        output = _check_args(args)
        pipe = NCSNPipeline.from_pretrained(args.export_dir, provider=args.provider, device_id=args.device_id)
        loaded = time.perf_counter()
        samples = sample_all(pipe, args.num_samples, args.seed, args.steps, args.mode, args.batch_size, not args.no_progress)
        sampled = time.perf_counter()
        what = write_output(pipe, samples, output, args.nrow)
    except NonFiniteSampleError as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 1
    except (ExportDirectoryError, ProviderError, ValueError, TypeError, ImportError, FileNotFoundError) as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 2
    run = pipe.last_run
    print(f"wrote {output}: {what}, seeds {args.seed}..{args.seed + args.num_samples - 1}")
    print(f"provider {pipe.provider}, mode {run.mode} ({run.engine}), {run.num_inference_steps} levels x "
          f"{run.num_annealed_steps} steps")
    print(f"time: {sampled - loaded:.3f} s sampling, {time.perf_counter() - start:.3f} s total (load {loaded - start:.3f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
