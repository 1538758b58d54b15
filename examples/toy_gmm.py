"""The paper's toy result (Song & Ermon 2019, figure 3), run through exported ``sampler.onnx`` graphs.

Data: p = 1/5 N((-5,-5), I) + 4/5 N((5,5), I) with its exact score. 1280 samples start uniform in [-8, 8]^2.
* plain Langevin: the exact score of p itself (one level, sigma ~ 0), eps = 0.1, T = 1000 steps;
* annealed Langevin: the exact scores of p * N(0, sigma^2 I), sigma geometric 20 -> 1, L = 10, T = 100, eps = 0.1.

Plain Langevin cannot move mass between the two separated modes, so its share of the (-5,-5) mode stays
near the share of starting points that fall on that side (about 1/2); annealed Langevin recovers 0.2.
Both samplers are exported with ``ncsn_export.export_model`` and run by the torch-free runtime.

    .venv/bin/python examples/toy_gmm.py [--num-samples 1280] [--seed 0] [--output out/toy_gmm.png]

Prints the mode shares and writes a two-panel PNG (Pillow only).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from ncsn_runtime.fileio import write_json_atomic
from ncsn_runtime.pipeline import NCSNPipeline

from ncsn_export.exporters.api import export_model
from ncsn_export.models.gmm import TOY_MEANS, TOY_WEIGHTS, GaussianMixtureScore, toy_gmm_spec
from ncsn_export.models.registry import ModelSpec

PLAIN_SIGMA = 1e-3  # "noise-free": the score of p convolved with N(0, 1e-6 I) equals p's own score to 1e-6
PLAIN_CONFIG = {"num_train_timesteps": 1, "num_annealed_steps": 1000, "sigma_min": PLAIN_SIGMA / 10,
                "sigma_max": PLAIN_SIGMA, "sampling_eps": 0.1}


def plain_langevin_spec() -> ModelSpec:
    """The toy mixture's exact (noise-free) score as a one-level model: plain Langevin with eps 0.1, T 1000."""
    annealed = toy_gmm_spec()
    model = GaussianMixtureScore(TOY_MEANS, TOY_WEIGHTS, torch.tensor([PLAIN_SIGMA]), variance=1.0).eval()
    return ModelSpec(name="toy-gmm-plain", model=model, scheduler_config=dict(PLAIN_CONFIG), sample_shape=(2,),
                     is_image=False, init_range=annealed.init_range, data_range=annealed.data_range,
                     description="exact score of the toy mixture, one level (plain Langevin)")


def lower_left_share(points: np.ndarray) -> float:
    """Fraction of samples nearer to (-5, -5) than to (5, 5)."""
    return float(((points[:, 0] + points[:, 1]) < 0).mean())


def sample_exported(spec: ModelSpec, export_dir: Path, num_samples: int, seed: int) -> np.ndarray:
    """Export ``spec`` (validated) and draw ``num_samples`` with the fused ``sampler.onnx`` on CPU."""
    levels = int(spec.scheduler_config["num_train_timesteps"])
    export_model(spec, export_dir, force=True, num_inference_steps=min(3, levels))
    pipe = NCSNPipeline.from_pretrained(export_dir, provider="cpu")
    out = pipe(batch_size=num_samples, seed=seed, mode="fused", output_type="raw", progress=False)
    return np.asarray(out.images, dtype=np.float64)


def run(num_samples: int = 1280, seed: int = 0, work_dir: Path | None = None) -> dict[str, np.ndarray | float]:
    """Both samplers; returns the initial points, the samples and the (-5,-5) shares."""
    from ncsn_runtime.noise import initial_sample, seeds_for_batch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work_dir or tmp)
        plain = sample_exported(plain_langevin_spec(), root / "plain", num_samples, seed)
        annealed = sample_exported(toy_gmm_spec(), root / "annealed", num_samples, seed)
    init = initial_sample(seeds_for_batch(seed, num_samples), (2,), -8.0, 8.0)
    return {"init": init, "plain": plain, "annealed": annealed, "init_share": lower_left_share(init),
            "plain_share": lower_left_share(plain), "annealed_share": lower_left_share(annealed)}


def save_plot(result: dict, path: Path, size: int = 420) -> Path:
    """Two scatter panels (plain | annealed) over [-8, 8]^2 with the true modes and shares in the titles."""
    from PIL import Image, ImageDraw

    margin, title = 28, 34
    canvas = Image.new("RGB", (2 * size, size + title), "white")
    draw = ImageDraw.Draw(canvas)
    span = size - 2 * margin
    for panel, (key, label) in enumerate((("plain", "Langevin dynamics (eps 0.1, T 1000)"),
                                          ("annealed", "annealed Langevin (sigma 20->1, L 10, T 100)"))):
        left = panel * size

        def pixel(x: np.ndarray, y: np.ndarray, left: int = left) -> tuple[np.ndarray, np.ndarray]:
            ux, uy = (np.clip((v + 8.0) / 16.0, 0.0, 1.0) for v in (x, y))
            return left + margin + ux * span, title + margin + (1.0 - uy) * span

        draw.rectangle([left + margin, title + margin, left + margin + span, title + margin + span], outline=(160, 160, 160))
        share = result[f"{key}_share"]
        draw.text((left + margin, 4), label, fill=(0, 0, 0))
        draw.text((left + margin, 18), f"share of the (-5,-5) mode: {share:.3f} (true 0.200)", fill=(80, 80, 80))
        xs, ys = pixel(result[key][:, 0], result[key][:, 1])
        for x, y in zip(xs, ys, strict=True):
            draw.ellipse([x - 1.2, y - 1.2, x + 1.2, y + 1.2], fill=(31, 119, 180))
        for (mx, my), weight in zip(TOY_MEANS, TOY_WEIGHTS, strict=True):
            px, py = pixel(np.array(mx), np.array(my))
            draw.line([px - 6, py, px + 6, py], fill=(214, 39, 40), width=2)
            draw.line([px, py - 6, px, py + 6], fill=(214, 39, 40), width=2)
            draw.text((float(px) + 8, float(py) - 14), f"w={weight:g}", fill=(214, 39, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    canvas.save(tmp)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=1280)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="out/toy_gmm.png")
    parser.add_argument("--json", default=None, help="also write the shares as JSON")
    args = parser.parse_args(argv)
    result = run(args.num_samples, args.seed)
    shares = {key: round(float(result[key]), 4) for key in ("init_share", "plain_share", "annealed_share")}
    print(f"share of samples in the (-5,-5) mode (true weight 0.2) over {args.num_samples} samples, seed {args.seed}:")
    print(f"  initial uniform points      {shares['init_share']:.3f}")
    print(f"  plain Langevin              {shares['plain_share']:.3f}")
    print(f"  annealed Langevin           {shares['annealed_share']:.3f}")
    print(f"plot: {save_plot(result, Path(args.output))}")
    if args.json:
        write_json_atomic(args.json, dict(shares, num_samples=args.num_samples, seed=args.seed), sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
