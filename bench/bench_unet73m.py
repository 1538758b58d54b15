"""End-to-end export of diffusers-ncsn's own MNIST UNet (``train_mnist.py``: ~73 M parameters, random weights).

The model is the ``ModelConfig`` of diffusers-ncsn's ``train_mnist.py``: ``UNet2DModelForNCSN``, 32x32x1,
``block_out_channels=(64, 128, 256, 512)``, ``layers_per_block=3``, four ``DownBlock2D`` / ``UpBlock2D``; its
scheduler: L=10 levels, sigma 10 -> 0.005, T=100, eps=1e-5. It is saved by ``ncsn.NCSNPipeline.save_pretrained``
and exported from that directory with ``export_model`` (the default artifacts unless ``--artifacts``), then
validated through the runtime (dynamic check B=3, 4 levels x 3 steps; the full-schedule check is 10x100 steps
of a 73 M UNet per sample, so it runs only with ``--full-validation-batch-size``).

    nice -n 10 .venv/bin/python bench/bench_unet73m.py [--artifacts default,pt2] [--full-validation-batch-size 1]

Needs the ``diffusers`` extra and diffusers-ncsn (``pip install --no-deps diffusers-ncsn``). Takes minutes on a
2-core CPU. Prints the table and timings, saves ``bench/results/unet73m[-ARTIFACTS].json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ncsn_export.exporters import export_model

RESULTS = Path(__file__).resolve().parent / "results"
SCHEDULER = {"num_train_timesteps": 10, "num_annealed_steps": 100, "sigma_min": 0.005, "sigma_max": 10.0,
             "sampling_eps": 1e-5}
UNET = {"sample_size": 32, "in_channels": 1, "out_channels": 1, "block_out_channels": (64, 128, 256, 512),
        "layers_per_block": 3, "down_block_types": ("DownBlock2D",) * 4, "up_block_types": ("UpBlock2D",) * 4}


def save_checkpoint(directory: Path) -> int:
    """Write the random-weight train_mnist.py UNet + scheduler with diffusers-ncsn itself; returns the parameter count."""
    from ncsn import NCSNPipeline
    from ncsn.scheduler import AnnealedLangevinDynamicsScheduler
    from ncsn.unet import UNet2DModelForNCSN

    torch.manual_seed(0)
    unet = UNet2DModelForNCSN(sigma_min=SCHEDULER["sigma_min"], sigma_max=SCHEDULER["sigma_max"],
                              num_train_timesteps=SCHEDULER["num_train_timesteps"], **UNET).eval()
    NCSNPipeline(unet=unet, scheduler=AnnealedLangevinDynamicsScheduler(**SCHEDULER)).save_pretrained(str(directory))
    return sum(parameter.numel() for parameter in unet.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=None, help="--artifacts of the export (default: ncsn-export's)")
    parser.add_argument("--full-validation-batch-size", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="also copy the export directory here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("ncsn_export").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="bench-unet73m-") as scratch:
        root = Path(scratch)
        parameters = save_checkpoint(root / "ncsn-mnist-unet")
        start = time.perf_counter()
        report = export_model(str(root / "ncsn-mnist-unet"), args.keep or root / "export", force=args.keep is not None,
                              artifacts=args.artifacts, full_batch_size=args.full_validation_batch_size)
        seconds = time.perf_counter() - start
        sizes = {name: entry["bytes"] for name, entry in report.manifest["files"].items()}
    print(report.table)
    print(f"\nUNet2DModelForNCSN (train_mnist.py config), {parameters / 1e6:.1f} M parameters: export {seconds:.1f} s")
    for name, value in report.manifest["export_seconds"].items():
        print(f"  {name:<20} {value:>8.1f} s")
    print("files:", ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()))
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.artifacts is None else "-" + args.artifacts.replace(",", "-")
    out = RESULTS / f"unet73m{suffix}.json"
    out.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "parameters": parameters,
        "export_seconds_total": seconds, "export_seconds": report.manifest["export_seconds"], "files": sizes,
        "artifacts": report.manifest["artifacts"], "validation": report.manifest["validation"],
        "torch": torch.__version__,
    }, indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
