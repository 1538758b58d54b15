"""The NCSNv2 recipe (Song & Ermon 2020, "Improved techniques for training score-based generative models").

* technique 1: ``sigma_1`` ~ the largest pairwise Euclidean distance between training examples;
* technique 2: a geometric ratio ``gamma`` with ``Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma)
  ~ 0.5`` (D = data dimension), so L = 1 + log(sigma_1 / sigma_L) / log(gamma) levels;
* technique 4: the step size ``eps`` that brings the variance ratio after T steps at the last level,
  ``(1 - eps/sL^2)^(2T) (gamma^2 - 2 eps / (sL^2 - sL^2 (1 - eps/sL^2)^2)) + 2 eps / (sL^2 - sL^2 (1 - eps/sL^2)^2)``,
  closest to 1.

The paper's Langevin step is ``x + a s + sqrt(2a) z`` with ``a = eps_paper sigma_i^2 / sigma_L^2``; this project's
(:func:`ncsn_runtime.schedule.langevin_update`) is ``x + a/2 s + sqrt(a) z`` with ``a = eps sigma_i^2 / sigma_L^2``,
so ``eps = 2 eps_paper``: :func:`technique4_eps` returns this project's eps.

    python -m ncsn_export.training.recipe --data mnist --sigma-min 0.01 --annealed-steps 1 2 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np


def max_pairwise_distance(data: np.ndarray, chunk: int = 1024) -> float:
    """Largest Euclidean distance between two rows of ``data`` (float [N, ...], flattened per row)."""
    x = np.asarray(data, dtype=np.float64).reshape(len(data), -1)
    squared = (x * x).sum(axis=1)
    best = 0.0
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        d2 = squared[start : start + chunk, None] + squared[None, :] - 2.0 * block @ x.T
        best = max(best, float(d2.max()))
    return math.sqrt(max(best, 0.0))


def _phi(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def overlap(gamma: float, dim: int) -> float:
    """Technique 2's criterion ``Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma)``."""
    root = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(root + 3.0 * gamma) - _phi(root - 3.0 * gamma)


def technique2_gamma(dim: int, target: float = 0.5) -> float:
    """The ratio gamma > 1 whose :func:`overlap` equals ``target`` (bisection; overlap falls as gamma grows)."""
    low, high = 1.0 + 1e-9, 3.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if overlap(mid, dim) > target else (low, mid)
    return 0.5 * (low + high)


def technique2_levels(sigma_max: float, sigma_min: float, dim: int, target: float = 0.5) -> int:
    """L = 1 + ceil(log(sigma_max / sigma_min) / log(gamma)) for technique 2's gamma."""
    return 1 + math.ceil(math.log(sigma_max / sigma_min) / math.log(technique2_gamma(dim, target)))


def variance_ratio(eps_paper: float, gamma: float, sigma_min: float, steps: int) -> float:
    """Technique 4's ratio for the paper's ``eps`` (``x + a s + sqrt(2a) z``) and T = ``steps``."""
    s2 = sigma_min**2
    shrink = 1.0 - eps_paper / s2
    tail = 2.0 * eps_paper / (s2 - s2 * shrink**2)
    return shrink ** (2 * steps) * (gamma**2 - tail) + tail


def technique4_eps(gamma: float, sigma_min: float, steps: int) -> tuple[float, float]:
    """(eps in this project's convention, the variance ratio it reaches): the eps_paper in (0, sigma_min^2) whose
    ratio is closest to 1 (log-spaced scan, then golden-section refinement)."""
    logs = np.linspace(math.log(sigma_min**2) - 25.0, math.log(sigma_min**2) - 1e-6, 4000)
    misses = [abs(variance_ratio(math.exp(v), gamma, sigma_min, steps) - 1.0) for v in logs]
    k = int(np.argmin(misses))
    low, high = logs[max(k - 1, 0)], logs[min(k + 1, len(logs) - 1)]
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = high - golden * (high - low), low + golden * (high - low)
        fa = abs(variance_ratio(math.exp(a), gamma, sigma_min, steps) - 1.0)
        fb = abs(variance_ratio(math.exp(b), gamma, sigma_min, steps) - 1.0)
        low, high = (low, b) if fa < fb else (a, high)
    eps_paper = math.exp(0.5 * (low + high))
    return 2.0 * eps_paper, variance_ratio(eps_paper, gamma, sigma_min, steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ncsn_export.training.recipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist", help="'mnist' (the 5k subset) or 'mnist-full'")
    parser.add_argument("--sigma-min", type=float, default=0.01)
    parser.add_argument("--levels", type=int, nargs="*", default=[], help="also report eps for these L")
    parser.add_argument("--annealed-steps", type=int, nargs="+", default=[1, 2, 5])
    args = parser.parse_args(argv)
    if args.data == "mnist-full":
        from .mnist_full import load_mnist_full

        images = load_mnist_full()[0]
    else:
        from .data import load_mnist_5k

        images = load_mnist_5k()[0]
    x = images.astype(np.float64) / 255.0
    dim = int(np.prod(x.shape[1:]))
    sigma_max = max_pairwise_distance(x)
    gamma = technique2_gamma(dim)
    levels = technique2_levels(sigma_max, args.sigma_min, dim)
    out = {"data": args.data, "examples": len(x), "dim": dim, "sigma_max": sigma_max, "technique2_gamma": gamma,
           "technique2_levels": levels, "eps": {}}
    for count in sorted({levels, *args.levels}):
        ratio = (sigma_max / args.sigma_min) ** (1.0 / (count - 1))
        for steps in args.annealed_steps:
            eps, reached = technique4_eps(ratio, args.sigma_min, steps)
            out["eps"][f"L={count},T={steps}"] = {"gamma": ratio, "eps": eps, "variance_ratio": reached}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
