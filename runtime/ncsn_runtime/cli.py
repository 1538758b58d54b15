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
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .arguments import check_ranges

OUTPUT_SUFFIXES = (".png", ".npy")
PROVIDER_CHOICES = ("auto", "cpu", "cuda")  # as ncsn_runtime.providers; not imported here so --help stays light
GRAPH_CHOICES = ("sampler", "gpu_sampler", "step", "gpu_step", "score")  # ncsn_runtime.contract.GRAPH_NAMES (a test checks)
MAX_OUTPUT_BYTES = 2 << 30  # all N samples are held in memory and written at once: at most 2 GiB of float32
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``ncsn-sample: error: ...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")



class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except where the help already says it or the default is None."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    parser.add_argument("--mode", choices=("auto", "fused", "stepwise"), default="auto",
                        help="shorthand for --graph: fused = sampler (the whole loop in one graph), stepwise = step (a "
                             "Python loop of steps; gpu_step on CUDA); auto = gpu_step with a CUDA graph on CUDA, "
                             "sampler elsewhere")
    parser.add_argument("--graph", choices=GRAPH_CHOICES, default=None,
                        help="the graph to run, on any provider (all give the same samples for the same seeds): "
                             "sampler / gpu_sampler (fused loop; gpu_sampler's noise has no bitwise ops), step / gpu_step "
                             "(one Langevin step per call; gpu_step takes the noise as an input, drawn on the host), "
                             "score (score network + numpy update). Overrides --mode; a --mode other than auto must "
                             "agree with it (fused: sampler, gpu_sampler; stepwise: step, gpu_step, score)")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="onnxruntime execution provider")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device ordinal")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per run (default: all N at once)")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(N))")
    parser.add_argument("--output", "-o", required=True, help="output file: .png (grid / scatter plot) or .npy (raw samples)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", help="log provider and engine choices")
    scale = parser.add_argument_group("scale out (--engine ray; see ncsn_runtime.distributed)")
    scale.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this process; ray: Ray Data actors (same samples; --output FILE.npy or a shard DIR)")
    scale.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    scale.add_argument("--num-workers", type=int, default=None, help="Ray actors (default 1)")
    scale.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per actor (default: 1 if --provider cuda)")
    scale.add_argument("--shard-size", type=int, default=None, help="samples per shard (--output DIR; default 10000)")
    return parser


RAY_ONLY = ("ray_address", "num_workers", "gpus_per_worker", "shard_size")


def _check_args(args: argparse.Namespace) -> Path:
    """Checks that need no export directory: ranges, the output's suffix and that it can be written."""
    from .fileio import check_output_file

    output = Path(args.output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output must end in {' or '.join(OUTPUT_SUFFIXES)}, got {output.name!r}")
    check_ranges(args)
    return check_output_file(output)


def check_against_export(pipe, args: argparse.Namespace, output: Path) -> None:
    """Checks that need the export's manifest, done before sampling: memory limit, output format, level count."""
    per_sample = 4 * math.prod(pipe.sample_shape)
    if args.num_samples * per_sample > MAX_OUTPUT_BYTES:
        raise ValueError(f"--num-samples {args.num_samples} x {per_sample} bytes per sample exceeds the "
                         f"{MAX_OUTPUT_BYTES >> 30} GiB limit on the samples held and written at once; "
                         f"use at most {MAX_OUTPUT_BYTES // per_sample} "
                         "(or several runs with different --seed)")
    levels = pipe.scheduler.num_train_timesteps
    if args.steps is not None and args.steps > levels:
        raise ValueError(f"--num-inference-steps must be in [1, {levels}] (this export was trained on {levels} noise levels), "
                         f"got {args.steps}")
    if output.suffix.lower() == ".png" and not pipe.is_image and tuple(pipe.sample_shape) != (2,):
        raise ValueError(f"samples of shape {list(pipe.sample_shape)} are neither images nor 2-D points; "
                         "write them with --output FILE.npy")


def sample_all(pipe, num_samples: int, seed: int, steps: int | None, mode: str, batch_size: int | None,
               progress: bool, graph: str | None = None) -> np.ndarray:
    """Raw samples float32 [N, *sample_shape]; sample n uses seed ``seed + n`` whatever the batch size."""
    batch = batch_size or num_samples
    chunks = []
    for offset in range(0, num_samples, batch):
        count = min(batch, num_samples - offset)
        output = pipe(batch_size=count, num_inference_steps=steps, seed=seed + offset, mode=mode, output_type="raw",
                      progress=progress, graph=graph)
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
    if args.engine == "ray":
        from .distributed import run_cli

        return run_cli(args)
    given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY if getattr(args, name) is not None]
    if given:
        parser.error(f"{', '.join(given)} need --engine ray")
    start = time.perf_counter()
    try:
        return _run(args, start)
    except KeyboardInterrupt:
        print(f"ncsn-sample: interrupted; nothing was written to {args.output}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace, start: float) -> int:
    from .manifest import ExportDirectoryError
    from .pipeline import NCSNPipeline
    from .providers import ProviderError
    from .steppers import NonFiniteSampleError

    try:
        output = _check_args(args)
        pipe = NCSNPipeline.from_pretrained(args.export_dir, provider=args.provider, device_id=args.device_id)
        pipe.choose_graph(args.mode, args.graph)  # a --mode / --graph conflict fails before any work
        check_against_export(pipe, args, output)
        loaded = time.perf_counter()
        samples = sample_all(pipe, args.num_samples, args.seed, args.steps, args.mode, args.batch_size, not args.no_progress,
                             args.graph)
        sampled = time.perf_counter()
        what = write_output(pipe, samples, output, args.nrow)
    except NonFiniteSampleError as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 1
    except (ExportDirectoryError, ProviderError, ValueError, TypeError, ImportError, OSError, MemoryError) as error:
        print(f"ncsn-sample: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    run = pipe.last_run
    print(f"wrote {output}: {what}, seeds {args.seed}..{args.seed + args.num_samples - 1}")
    print(f"provider {pipe.provider}, graph {run.graph} ({run.engine}), mode {run.mode}, {run.num_inference_steps} levels x "
          f"{run.num_annealed_steps} steps")
    print(f"time: {sampled - loaded:.3f} s sampling, {time.perf_counter() - start:.3f} s total (load {loaded - start:.3f} s)")
    return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, (OSError, MemoryError)) else f"{type(error).__name__}: {text}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
