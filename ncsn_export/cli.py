"""``ncsn-export``: export a score network and its whole annealed Langevin sampler, validated, in one command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .models.registry import BUILTIN_MODELS, DEFAULT_MODEL
from .validation_budget import DEFAULT_VALIDATION_BUDGET, VALIDATE_MODES

EPILOG = f"""\
models:
  built-in names: {", ".join(sorted(BUILTIN_MODELS))} (default: {DEFAULT_MODEL})
  your own:       package.module:factory   (a callable returning ncsn_export.models.registry.ModelSpec)
  a checkpoint:   a diffusers-ncsn directory (model_index.json, unet/, scheduler/)

writes OUTPUT/ atomically (staged, then renamed; nothing is left behind on failure or Ctrl-C; a staging
directory left by a killed export is removed by the next export to the same place). --force replaces only an
earlier export that holds nothing but the files its manifest lists (add --allow-extra-files to delete others):
  manifest.json                    shapes, graph I/O, sha256 of every file, validation results, versions
  scheduler/scheduler_config.json  the scheduler config (diffusers format)
  score.onnx     sample f32[B,...], timestep i64[B] -> score   (the one dynamo export of the network)
  step.onnx      sample, seed i64[B], timestep i64[], step_size f32[], counter i64[] -> next_sample
  sampler.onnx   sample, seed i64[B], timesteps i64[N], step_sizes f32[N], num_annealed_steps i64[]
                 -> final_sample   (the whole annealed loop in one ONNX Loop)
  gpu_step.onnx, gpu_sampler.onnx  the accelerator graphs (noise as input / no bitwise ops)
  sampler.pt     TorchScript (torch.jit.load; needs no ncsn_export)    sampler.pt2  torch.export.save
  ort/KEY.ort    ORT-format models of the graphs (onnxruntime Mobile / minimal builds), with
                 ort/required_operators.config for build.sh --include_ops_by_config (--artifacts ...,ort)
  mobile/score.onnx, mobile/step.onnx  fixed-shape graphs for Android NNAPI and Apple Core ML, batch fixed at
                 --mobile-batch (default 1), the level as a one-hot f32[., L], the noise an input; with their own
                 mobile/weights.onnx.data (--artifacts ...,mobile; README "Phones: NNAPI and Core ML")

--artifacts (comma-separated; default "default" = every ONNX graph + sampler.pt):
  default, onnx, torch, all, score, step, sampler, gpu_step, gpu_sampler, torchscript (pt), torch_export (pt2),
  ort, mobile (made only on request, or by "all").
  An artifact you name must be made, else the export fails; one only implied by "default" that cannot be
  made (or fails validation) is skipped and reported as such in the table and the manifest.

validation, through the runtime (ncsn_runtime.NCSNPipeline) against torch eager, seeds 0..B-1:
  every graph and torch file at B=--batch-size, --num-inference-steps levels x --num-annealed-steps steps
  (max abs diff <= 1e-4 fp32, 5e-2 relative with --fp16), then the fused graph over the full default
  schedule at B=--full-validation-batch-size (default 16; <= 5e-3); else exit 1 and nothing is written.
  --validate auto (default) cuts that full check to fit --validation-budget (default 120 s for the whole
  validation), estimated from the measured time per score call: first a smaller batch, then fewer
  steps per level, then fewer levels (always the first and the last). The table's last line and the
  manifest (validation_schedule.full_plan) say what ran and what was left out. --validate full runs the
  whole schedule whatever it costs; --validate none (or --no-validate) skips validation.

examples:
  ncsn-export --model toy-gmm --output exports/toy-gmm
  ncsn-export --model mypkg.nets:my_spec --output exports/mine --opset 20 --batch-size 4 --force
"""


EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``ncsn-export: error: ...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ncsn-export",
        description="Export an NCSN score network plus its annealed Langevin sampler (ONNX Loop, TorchScript, "
        "torch.export) to a validated export directory.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_REF",
                        help=f"built-in name, package.module:factory, or a diffusers-ncsn directory (default: {DEFAULT_MODEL})")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="export directory to create")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset of all graphs (default: 18, minimum 18)")
    parser.add_argument("--fp16", action="store_true",
                        help="run the score network in float16 inside every artifact (inputs/outputs stay float32)")
    parser.add_argument("--validate", choices=VALIDATE_MODES, default="auto",
                        help="auto (default): every graph at a small schedule, then as much of the full default schedule "
                        "as fits --validation-budget; full: the whole default schedule at B=16 whatever it costs (the "
                        "estimate is printed first); none: no validation")
    parser.add_argument("--no-validate", dest="validate", action="store_const", const="none",
                        help="same as --validate none")
    parser.add_argument("--validation-budget", type=float, default=DEFAULT_VALIDATION_BUDGET, metavar="SECONDS",
                        help=f"seconds for the whole validation with --validate auto (default: {DEFAULT_VALIDATION_BUDGET:g}; "
                        "the full check is cut to a smaller batch, fewer steps, then fewer levels to fit)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars with an ETA for each stage (default: on when stderr is a terminal, off with -q)")
    parser.add_argument("--force", action="store_true",
                        help="replace OUTPUT if it is an earlier export directory holding only the files it lists")
    parser.add_argument("--allow-extra-files", action="store_true",
                        help="with --force: also delete files in OUTPUT that the earlier export did not write")
    parser.add_argument("--artifacts", action="append", default=None, metavar="LIST",
                        help="what to make, comma-separated (default: every ONNX graph + sampler.pt; see below)")
    parser.add_argument("--mobile-batch", type=int, default=1, metavar="B",
                        help="fixed batch of the mobile/ graphs, in [1, 64] (default: 1; with --artifacts ...,mobile)")
    parser.add_argument("--batch-size", type=int, default=3, metavar="B", help="validation batch size (default: 3)")
    parser.add_argument("--num-inference-steps", type=int, default=None, metavar="N",
                        help="validation: number of noise levels (default: 4, or all if fewer are trained)")
    parser.add_argument("--steps", dest="num_inference_steps", type=int, help=argparse.SUPPRESS)  # old spelling
    parser.add_argument("--num-annealed-steps", type=int, default=3, metavar="T",
                        help="validation: Langevin steps per level (default: 3)")
    parser.add_argument("--full-validation-batch-size", type=int, default=16, metavar="B",
                        help="batch of the full-default-schedule check of sampler.onnx (default: 16; 0 skips it)")
    parser.add_argument("--final-denoise", action=argparse.BooleanOptionalAction, default=None,
                        help="NCSNv2 final denoising step x + sigma_last^2 * score in the samplers (default: the model's)")
    parser.add_argument("--tolerance", type=float, default=None, metavar="TOL",
                        help="max abs difference allowed in validation (default: 1e-4, or 5e-2 with --fp16)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the validation table and errors")
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ncsn-export``; returns the exit status (0 ok, 1 export failed, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.allow_extra_files and not args.force:
        parser.error("--allow-extra-files only applies with --force")
    signal.signal(signal.SIGTERM, _interrupt)  # a killed export cleans up like Ctrl-C
    try:
        from .exporters import ExportError, export_model  # imports torch: after --help
        from .exporters.artifacts import select_artifacts
        from .exporters.directory import check_output_dir
        from .exporters.errors import ExportInputError
        from .exporters.inputs import check_export_arguments
        from .exporters.mobile_artifact import check_mobile_batch
        from .exporters.onnx_export import DEFAULT_OPSET, check_opset
        from .validation_budget import check_validation_budget
    except KeyboardInterrupt:
        print("ncsn-export: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:  # the arguments and the output directory, before loading the model or writing anything
        check_export_arguments(args.batch_size, args.num_inference_steps, args.num_annealed_steps, args.tolerance)
        check_validation_budget(args.validation_budget)
        select_artifacts(args.artifacts)
        check_mobile_batch(args.mobile_batch, "--mobile-batch")
        check_output_dir(args.output, args.force, args.allow_extra_files)
        check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    except (ExportError, ValueError) as error:
        print(f"ncsn-export: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("ncsn_export").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        progress = (sys.stderr.isatty() and not args.quiet) if args.progress is None else args.progress
        with _log_above_bars(progress):
            report = _export(args, progress, export_model)
        print(report.table, flush=True)
    except (ExportInputError, ValueError, TypeError) as error:  # the caller's input (model, spec, output, ranges)
        print(f"ncsn-export: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as error:  # the export itself failed (tracing, validation)
        print(f"ncsn-export: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"ncsn-export: interrupted; nothing was written to {args.output}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:  # the environment: a full disk, a read-only filesystem, ...
        from ncsn_runtime.fileio import os_error_line

        print(f"ncsn-export: error: {os_error_line(error, args.output)}; nothing was written to {args.output}",
              file=sys.stderr)
        return EXIT_FAILED
    return 0


def _log_above_bars(progress: bool) -> contextlib.AbstractContextManager:
    """Log lines printed above the progress bars instead of through them (tqdm's logging redirect)."""
    if not progress:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[logging.getLogger("ncsn_export")])


def _export(args: argparse.Namespace, progress: bool, export_model: Any) -> Any:
    """``export_model`` with the CLI's arguments."""
    from .exporters.onnx_export import DEFAULT_OPSET

    return export_model(
        args.model,
        args.output,
        opset=DEFAULT_OPSET if args.opset is None else args.opset,
        fp16=args.fp16,
        validate=args.validate,
        validation_budget=args.validation_budget,
        progress=progress,
        force=args.force,
        allow_extra_files=args.allow_extra_files,
        artifacts=args.artifacts,
        batch_size=args.batch_size,
        num_inference_steps=args.num_inference_steps,
        num_annealed_steps=args.num_annealed_steps,
        full_batch_size=args.full_validation_batch_size,
        final_denoise=args.final_denoise,
        tolerance=args.tolerance,
        mobile_batch=args.mobile_batch,
    )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
