"""``ncsn-sample``: draw samples from an export directory and write a PNG or a .npy (numpy + onnxruntime only).

Examples::

    ncsn-sample exports/mnist --num-samples 16 --seed 0 --output samples.png
    ncsn-sample exports/toy-gmm --num-samples 1000 --seed 0 --output toy.png   # scatter plot
    ncsn-sample exports/toy-gmm --num-samples 1000 --seed 0 --output toy.npy   # raw [N, 2] float32
    ncsn-sample exports/mnist -n 8 --seed 0 --output digits.png --trajectory annealing.png   # + the annealing
    ncsn-sample exports/mnist --inpaint digit.png --mask mask.png -n 8 --seed 0 --output filled.png   # inpainting

``.png``: image models give a grid (``--nrow`` images per row, each image enlarged ``--scale`` times,
nearest-neighbour, by default to at least 64 px, with a thin grey gap); 2-D non-image models (the toy
mixture) give a scatter plot over the manifest's data range; other non-image models must use
``.npy``. ``.npy``: the raw samples, float32 [N, *sample_shape], in model space.
``--trajectory OUT.png`` (image models) adds the annealing: row n is sample n, column l its state after noise
level l (the last column is the written samples, after the final denoising step when the export has one);
``OUT.gif`` animates the grid level by level. The states come from the pipeline's step callback, so the run
is stepwise (``step.onnx``; ``gpu_step.onnx`` on CUDA): the fused ``sampler.onnx`` runs every level in one call and
cannot stop between them.
``--inpaint IMAGE --mask MASK`` fills the mask's black (0) pixels of IMAGE, N completions, one per seed, through
``inpaint.onnx`` (fused) when the export has it, else stepwise (:mod:`ncsn_runtime.inpaint`; which one is printed);
reading and checking the files: :mod:`ncsn_runtime.inpaint_io`.
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
TRAJECTORY_SUFFIXES = (".png", ".gif")
FUSED_GRAPHS = ("sampler", "gpu_sampler")  # ncsn_runtime.pipeline.FUSED_GRAPHS (not imported: --help stays light)
PROVIDER_CHOICES = ("auto", "cpu", "cuda")  # as ncsn_runtime.providers; not imported here so --help stays light
GRAPH_CHOICES = ("sampler", "gpu_sampler", "step", "gpu_step", "score")  # ncsn_runtime.contract.SAMPLING_GRAPHS (a test checks)
MAX_OUTPUT_BYTES = 2 << 30  # all N samples are held in memory and written at once: at most 2 GiB of float32
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
logger = logging.getLogger("ncsn_runtime.cli")


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
    parser.add_argument("--graph-format", choices=("onnx", "ort"), default="onnx",
                        help="run the .onnx graphs or their ORT-format models ort/KEY.ort (export with --artifacts ...,ort)")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device ordinal")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per run (default: all N at once)")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(N))")
    parser.add_argument("--scale", type=int, default=None, metavar="K",
                        help="enlarge every image of a .png / .gif K times, nearest-neighbour, K in [1, 16] (default: the "
                             "smallest K giving at least 64 px, e.g. 3 for 28 x 28 digits)")
    parser.add_argument("--output", "-o", required=True, help="output file: .png (grid / scatter plot) or .npy (raw samples)")
    parser.add_argument("--trajectory", default=None, metavar="OUT.png|OUT.gif",
                        help="also write the annealing (image models): .png = rows are samples, columns the state after "
                             "each noise level; .gif = the grid animated level by level. Runs stepwise (step.onnx; "
                             "gpu_step.onnx on CUDA; the same samples as fused): the fused sampler.onnx cannot stop "
                             "between levels")
    parser.add_argument("--inpaint", default=None, metavar="IMAGE.png|IMAGE.npy",
                        help="inpaint this image (exactly the export's H x W; PNG grayscale/RGB, or .npy in the data range) "
                             "where --mask is 0: N completions; fused inpaint.onnx when exported, else stepwise")
    parser.add_argument("--mask", default=None, metavar="MASK.png|MASK.npy",
                        help="with --inpaint: white (255) / 1 = known, black (0) / 0 = fill in; nothing else")
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
    _check_inpaint_args(args)
    if args.trajectory is not None:
        trajectory = Path(args.trajectory)
        if trajectory.suffix.lower() not in TRAJECTORY_SUFFIXES:
            raise ValueError(f"--trajectory must end in {' or '.join(TRAJECTORY_SUFFIXES)}, got {trajectory.name!r}")
        if trajectory.resolve() == output.resolve():
            raise ValueError(f"--trajectory and --output must be different files, both are {output}")
        if args.mode == "fused" or args.graph in FUSED_GRAPHS:
            chosen = "--mode fused" if args.mode == "fused" else f"--graph {args.graph}"
            raise ValueError(f"--trajectory needs the stepwise path, and {chosen} is fused: the fused graph runs every noise "
                             "level in one call and cannot stop between them; drop it (with --mode auto, --trajectory runs "
                             "stepwise, the same samples)")
        check_output_file(trajectory, "--trajectory")
    return check_output_file(output)


def _check_inpaint_args(args: argparse.Namespace) -> None:
    if getattr(args, "inpaint", None) is None and getattr(args, "mask", None) is None:
        return
    if (args.inpaint is None) != (args.mask is None):
        raise ValueError("--inpaint IMAGE and --mask MASK go together: give both")
    if args.inpaint is None:
        return
    if args.trajectory is not None:
        raise ValueError("--trajectory draws sampling, not inpainting: drop one of --trajectory / --inpaint")
    if args.graph is not None:
        raise ValueError("--graph picks a sampling graph; inpainting runs inpaint.onnx (or, with --mode stepwise, the "
                         "stepwise graph): drop --graph")


def inpaint_all(pipe, image: np.ndarray, mask: np.ndarray, num_samples: int, seed: int, steps: int | None, mode: str,
                batch_size: int | None, progress: bool) -> np.ndarray:
    """Raw completions float32 [N, *sample_shape] of ``image`` (sample n: seed ``seed + n``, whatever the batch)."""
    batch = batch_size or num_samples
    chunks = []
    for offset in range(0, num_samples, batch):
        count = min(batch, num_samples - offset)
        chunks.append(pipe.inpaint(image, mask, seed=seed + offset, batch_size=count, num_inference_steps=steps,
                                   mode=mode, output_type="raw", progress=progress).images)
    return np.concatenate(chunks)


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
    if not pipe.is_image:
        if args.trajectory is not None:
            raise ValueError(f"--trajectory needs an image model; this export's samples have shape {list(pipe.sample_shape)}")
        return
    from .images import check_picture_size, default_scale

    height, width = pipe.sample_shape[-2:]
    scale = default_scale(height, width) if args.scale is None else args.scale
    if output.suffix.lower() == ".png":
        check_picture_size(args.num_samples, height, width, args.nrow, scale, "--output")
    if args.trajectory is not None:
        levels = pipe.scheduler.num_train_timesteps if args.steps is None else args.steps
        if levels * args.num_samples * per_sample > MAX_OUTPUT_BYTES:
            raise ValueError(f"--trajectory keeps {levels} levels x {args.num_samples} samples x {per_sample} bytes, over the "
                             f"{MAX_OUTPUT_BYTES >> 30} GiB limit; use fewer --num-samples")
        if Path(args.trajectory).suffix.lower() == ".png":
            check_picture_size(levels * args.num_samples, height, width, levels, scale, "--trajectory")
        else:
            check_picture_size(args.num_samples, height, width, args.nrow, scale, "--trajectory")


def sample_all(pipe, num_samples: int, seed: int, steps: int | None, mode: str, batch_size: int | None,
               progress: bool, graph: str | None = None, trajectory: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw samples float32 [N, *sample_shape]; sample n uses seed ``seed + n`` whatever the batch size.

    With ``trajectory``, also float32 [L, N, *sample_shape]: the samples after each of the L levels, recorded by
    :class:`~ncsn_runtime.trajectory.LevelRecorder` as the pipeline's ``callback_on_step_end`` (which makes the run
    stepwise), the last level being the returned samples; else ``None``.
    """
    from .trajectory import LevelRecorder, trajectory_images

    batch = batch_size or num_samples
    chunks, paths = [], []
    for offset in range(0, num_samples, batch):
        count = min(batch, num_samples - offset)
        recorder = LevelRecorder(pipe.scheduler.num_annealed_steps) if trajectory else None
        output = pipe(batch_size=count, num_inference_steps=steps, seed=seed + offset, mode=mode, output_type="raw",
                      progress=progress, graph=graph, callback_on_step_end=recorder)
        chunks.append(output.images)
        if recorder is not None:
            paths.append(trajectory_images(recorder.levels, output.images))
    return np.concatenate(chunks), (np.concatenate(paths, axis=1) if trajectory else None)


def write_output(pipe, samples: np.ndarray, output: Path, nrow: int | None, scale: int | None = None) -> str:
    """Write samples to ``output`` (.png or .npy); returns a short description of what was written."""
    from .images import default_scale, save_grid_png, save_npy, save_scatter_png, to_numpy_images

    shape = "x".join(str(size) for size in samples.shape[1:])
    if output.suffix.lower() == ".npy":
        save_npy(samples, output)
        return f"{len(samples)} raw samples, float32 [{len(samples)}, {shape.replace('x', ', ')}]"
    if pipe.is_image:
        scale = default_scale(*samples.shape[-2:]) if scale is None else scale
        save_grid_png(to_numpy_images(samples, pipe.data_range), output, nrow, scale)
        return f"a grid of {len(samples)} images ({shape}, shown {scale}x)"
    if samples.shape[1:] == (2,):
        save_scatter_png(samples, output, pipe.data_range)
        return f"a scatter plot of {len(samples)} 2-D samples (square covering {list(pipe.data_range)}^2 and every sample)"
    raise ValueError(f"samples of shape ({shape}) are neither images nor 2-D points; write them with --output FILE.npy")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.engine == "ray":
        if args.trajectory is not None:
            parser.error("--trajectory needs --engine local (the Ray engine writes .npy or shards)")
        if args.inpaint is not None:
            parser.error("--inpaint needs --engine local")
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
        pipe = NCSNPipeline.from_pretrained(args.export_dir, provider=args.provider, device_id=args.device_id,
                                            graph_format=args.graph_format)
        pipe.choose_graph(args.mode, args.graph)  # a --mode / --graph conflict fails before any work
        check_against_export(pipe, args, output)
        if args.inpaint is not None:
            from .inpaint import choose_inpaint_mode, prepare_image_and_mask
            from .inpaint_io import read_known_image, read_mask

            known = read_known_image(args.inpaint, pipe.sample_shape, pipe.data_range)
            mask = read_mask(args.mask, pipe.sample_shape)
            prepare_image_and_mask(known, mask, pipe.sample_shape, 1)
            choose_inpaint_mode(pipe, args.mode, None)  # mode fused without inpaint.onnx fails before any work
        loaded = time.perf_counter()
        if args.trajectory is not None:
            logger.info("--trajectory: sampling stepwise (the fused graph cannot stop between noise levels)")
        if args.inpaint is not None:
            samples, path = inpaint_all(pipe, known, mask, args.num_samples, args.seed, args.steps, args.mode,
                                        args.batch_size, not args.no_progress), None
        else:
            samples, path = sample_all(pipe, args.num_samples, args.seed, args.steps, args.mode, args.batch_size,
                                       not args.no_progress, args.graph, trajectory=args.trajectory is not None)
        sampled = time.perf_counter()
        what = write_output(pipe, samples, output, args.nrow, args.scale)
        if path is not None:
            wrote_path = write_trajectory(pipe, path, Path(args.trajectory), args.nrow, args.scale)
    except NonFiniteSampleError as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the environment (a full disk, ...) or a path: the file and the cause
        from .fileio import os_error_line

        print(f"ncsn-sample: error: {os_error_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (ExportDirectoryError, ProviderError, ValueError, TypeError, ImportError, MemoryError) as error:
        print(f"ncsn-sample: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    run = pipe.last_run
    print(f"wrote {output}: {what}, seeds {args.seed}..{args.seed + args.num_samples - 1}"
          + (f", inpainting {args.inpaint} where {args.mask} is 0" if args.inpaint is not None else ""))
    if path is not None:
        print(f"wrote {args.trajectory}: {wrote_path}; sampled stepwise ({run.graph}.onnx) because the fused graph cannot "
              "stop between noise levels")
    print(f"provider {pipe.provider}, graph {run.graph} ({run.engine}), mode {run.mode}, {run.num_inference_steps} levels x "
          f"{run.num_annealed_steps} steps")
    print(f"time: {sampled - loaded:.3f} s sampling, {time.perf_counter() - start:.3f} s total (load {loaded - start:.3f} s)")
    return 0


def write_trajectory(pipe, path: np.ndarray, trajectory: Path, nrow: int | None, scale: int | None) -> str:
    """Write the annealing ``path`` (float32 [L, N, *sample_shape]) as ``trajectory`` (.png or .gif); a description."""
    from .images import default_scale, to_numpy_images
    from .trajectory import GIF_FRAME_MS, save_trajectory_gif, save_trajectory_png

    levels, count = path.shape[:2]
    scale = default_scale(*path.shape[-2:]) if scale is None else scale
    images = np.stack([to_numpy_images(level, pipe.data_range) for level in path])
    sigmas = pipe.scheduler.schedule_arrays()[1]  # the schedule of the run just made
    noise = f"sigma {float(sigmas[0]):.3g} -> {float(sigmas[-1]):.3g}" if len(sigmas) == levels else f"{levels} levels"
    if trajectory.suffix.lower() == ".gif":
        save_trajectory_gif(images, trajectory, nrow, scale)
        return f"an animation of {levels} frames (one per noise level, {noise}, {GIF_FRAME_MS} ms each) of {count} samples"
    save_trajectory_png(images, trajectory, scale)
    return (f"the annealing of {count} samples ({count} rows) over {levels} noise levels ({levels} columns, {noise}; the "
            f"last column is the written samples), shown {scale}x")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if not isinstance(error, (OSError, MemoryError)) else f"{type(error).__name__}: {text}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
