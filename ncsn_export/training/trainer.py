"""The training loop: annealed DSM, Adam, EMA, safetensors checkpoints with resume, sample grids.

A run directory holds::

    model.json                     architecture + scheduler config + training record (the shipped JSON's schema)
    ema.safetensors                EMA weights of the last checkpoint (what gets shipped / exported)
    scheduler/scheduler_config.json
    checkpoint/                    raw weights, EMA, Adam state, RNG states (for --resume)
    samples/iter_XXXXXXX.png       sample grids from the EMA model
    log.jsonl                      one line per logging interval (iteration, loss, seconds)
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ncsn_runtime.fileio import atomic_write, read_json_object, write_json_atomic
from ncsn_runtime.noise import initial_sample
from ncsn_runtime.ownership import MARKER_NAME, new_token, read_marker, write_marker
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from ..models.refinenet import CondRefineNetDilated, count_parameters
from ..scheduler import AnnealedLangevinDynamicsScheduler
from .data import BatchSampler, dequantize
from .loss import annealed_dsm_loss
from .sampling import annealed_langevin, save_image_grid

ARCHITECTURE = "CondRefineNetDilated"


def training_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when torch sees a GPU, else the CPU) -> a device
    torch can train on; else ``ValueError`` naming ``--device`` and what was found."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU ({build}); use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {name}: torch sees {count} CUDA GPU(s), indices 0..{count - 1}")
    return device


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``model.json`` under ``training.config``)."""

    out_dir: str
    iterations: int = 10000
    batch_size: int = 64
    lr: float = 1e-3
    ema_decay: float = 0.999
    ngf: int = 16
    ncsnv2: bool = True
    num_levels: int = 10
    sigma_max: float = 1.0
    sigma_min: float = 0.01
    num_annealed_steps: int = 100
    sampling_eps: float = 2e-5
    checkpoint_every: int = 500
    sample_every: int = 2000
    sample_count: int = 36
    sample_steps: int = 5
    log_every: int = 50
    seed: int = 0
    time_limit_s: float | None = None
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    atomic_write(path, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


class EMA:
    """Exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        if len(ema_params) != len(params):
            raise ValueError(f"EMA of a model with {len(ema_params)} parameters updated from one with {len(params)}")
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)  # one fused kernel per device, not one per tensor
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


class Trainer:
    """Annealed-DSM training of a CondRefineNetDilated on uint8 images [N, C, H, W]."""

    def __init__(self, config: TrainConfig, data: np.ndarray, dataset_name: str = "custom") -> None:
        if data.ndim != 4 or data.dtype != np.uint8:
            raise ValueError(f"`data` must be uint8 [N, C, H, W], got {data.dtype} {data.shape}")
        if data.shape[2] != data.shape[3]:
            raise ValueError(f"images must be square, got {data.shape[2]}x{data.shape[3]}")
        self.config = config
        self.dataset_name = dataset_name
        self.out = Path(config.out_dir)
        self.check_checkpoint_dirs()  # before any training: a refusal later would cost the work
        self.scheduler = AnnealedLangevinDynamicsScheduler(
            num_train_timesteps=config.num_levels,
            num_annealed_steps=config.num_annealed_steps,
            sigma_min=config.sigma_min,
            sigma_max=config.sigma_max,
            sampling_eps=config.sampling_eps,
        )
        self.device = training_device(config.device)
        torch.manual_seed(config.seed)
        self.model = CondRefineNetDilated(
            in_channels=data.shape[1],
            image_size=data.shape[2],
            num_classes=config.num_levels,
            ngf=config.ngf,
            sigmas=self.scheduler.train_sigmas if config.ncsnv2 else None,
        ).to(self.device)  # built on the CPU first: the same initial weights for a seed on every device
        self.ema = EMA(self.model, config.ema_decay)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.batches = BatchSampler(data, config.batch_size, seed=config.seed)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.iteration = 0
        self.elapsed_s = 0.0
        self.recent_losses: list[float] = []
        self.loss_history: list[list[float]] = []  # [iteration, mean loss over the logging interval]

    # -- checkpoints ------------------------------------------------------------------------
    def model_record(self) -> dict[str, Any]:
        """The JSON saved next to the EMA weights (architecture, scheduler, training record)."""
        return {
            "architecture": ARCHITECTURE,
            "model_config": self.model.config,
            "num_parameters": count_parameters(self.model),
            "scheduler_config": dict(self.scheduler.config),
            "sample_shape": list(self.model.sample_shape),
            "training": {
                "dataset": self.dataset_name,
                "iterations": self.iteration,
                "examples_seen": self.iteration * self.batches.batch_size,
                "wall_time_s": round(self.elapsed_s, 1),
                "torch_threads": torch.get_num_threads(),
                "config": asdict(self.config),
                "loss_history": self.loss_history,
            },
        }

    def check_checkpoint_dirs(self) -> None:
        """``checkpoint/``, ``.checkpoint.tmp`` and ``.checkpoint.old`` in ``out`` are absent or provably ncsn-train's
        (its ownership marker; a ``checkpoint/`` of an older version holding only the four checkpoint files counts
        too); else ``FileExistsError`` naming the directory. Saving replaces or deletes only those."""
        for path in (self.out / CHECKPOINT_TMP, self.out / CHECKPOINT_OLD, self.out / CHECKPOINT_DIR):
            _check_ours(path)

    def save_checkpoint(self) -> Path:
        """Write the checkpoint (atomically: temp dir + rename), the EMA weights and model.json."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / CHECKPOINT_TMP
        _remove_ours(tmp)  # left by a killed save
        tmp.mkdir()
        write_marker(tmp, TRAIN_WRITER, new_token(), kind="checkpoint")
        _save_safetensors(self.model.state_dict(), tmp / "model.safetensors")
        _save_safetensors(self.ema.model.state_dict(), tmp / "ema.safetensors")
        opt_tensors: dict[str, torch.Tensor] = {}
        for index, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                opt_tensors[f"state.{index}.{key}"] = torch.as_tensor(value)
        opt_tensors["rng.generator"] = self.generator.get_state()
        opt_tensors["rng.batches"] = self.batches.generator.get_state()
        opt_tensors["rng.order"] = self.batches._order
        _save_safetensors(opt_tensors, tmp / "optimizer.safetensors")
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.state_dict()["param_groups"]]
        write_json_atomic(
            tmp / "trainer_state.json",
            {
                "iteration": self.iteration,
                "elapsed_s": self.elapsed_s,
                "batch_position": self.batches._position,
                "loss_history": self.loss_history,
                "param_groups": groups,
            },
        )
        final = self.out / CHECKPOINT_DIR
        old = self.out / CHECKPOINT_OLD
        _remove_ours(old)
        if final.exists() or final.is_symlink():
            _check_ours(final)
            final.rename(old)
        tmp.rename(final)
        _remove_ours(old)
        _save_safetensors(self.ema.model.state_dict(), self.out / "ema.safetensors")
        self.scheduler.save_pretrained(self.out / "scheduler")
        write_json_atomic(self.out / "model.json", self.model_record())
        return final

    def resume(self) -> None:
        """Restore weights, EMA, Adam state, RNG states and the iteration count from ``checkpoint/``."""
        ckpt = self.out / "checkpoint"
        if not (ckpt / "trainer_state.json").is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint in {ckpt}")
        try:
            self._restore(ckpt)
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as error:  # a damaged or foreign checkpoint
            text = f"it has no entry {error}" if isinstance(error, KeyError) else " ".join(str(error).split())
            raise ValueError(f"cannot resume from {ckpt}: {(text or type(error).__name__)[:300]}") from None

    def _restore(self, ckpt: Path) -> None:
        """The body of :meth:`resume`; a damaged file raises ``ValueError`` naming it."""
        def tensors_of(name: str) -> dict[str, torch.Tensor]:
            try:
                return load_file(str(ckpt / name))
            except SafetensorError as error:  # truncated, corrupt, not safetensors
                raise ValueError(f"{ckpt / name} is not a readable safetensors file ({error})") from None

        try:
            self.model.load_state_dict(tensors_of("model.safetensors"))
            self.ema.model.load_state_dict(tensors_of("ema.safetensors"))
        except RuntimeError as error:  # missing / unexpected keys, wrong shapes: another model's checkpoint
            raise ValueError(f"its weights do not fit this model ({' '.join(str(error).split())})") from None
        state = read_json_object(ckpt / "trainer_state.json")
        tensors = tensors_of("optimizer.safetensors")
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("state."):
                _, index, key = name.split(".", 2)
                opt_state.setdefault(int(index), {})[key] = value
        groups = [dict(g, params=list(range(len(list(self.model.parameters()))))) for g in state["param_groups"]]
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        self.generator.set_state(tensors["rng.generator"])
        self.batches.generator.set_state(tensors["rng.batches"])
        self.batches._order = tensors["rng.order"]
        self.batches._position = int(state["batch_position"])
        self.iteration = int(state["iteration"])
        self.elapsed_s = float(state["elapsed_s"])
        self.loss_history = state["loss_history"]
        record = self.out / "model.json"
        if record.is_file():  # what --init-from recorded (the resumed run's command line does not repeat it)
            extra = read_json_object(record).get("training", {}).get("config", {}).get("extra", {})
            if isinstance(extra, dict):
                self.config.extra = {**extra, **self.config.extra}

    def init_from(self, weights: str | Path) -> None:
        """Start from trained weights (record ``model.json`` or ``mnist_ncsn.json`` beside them), EMA included."""
        from ..models.default import MNIST_RECORD, MNIST_WEIGHTS
        from .init_from import init_from_run

        weights = Path(weights)
        record = weights.with_name(MNIST_RECORD if weights.name == MNIST_WEIGHTS else "model.json")
        self.config.extra["init_from"] = init_from_run(self.model, self.scheduler.train_sigmas, weights, record)
        self.ema = EMA(self.model, self.config.ema_decay)

    # -- sampling ---------------------------------------------------------------------------
    def sample_grid(self, path: Path) -> Path:
        """Sample ``sample_count`` images from the EMA model (T = ``sample_steps`` per level) and save a grid."""
        config = self.config
        scheduler = AnnealedLangevinDynamicsScheduler.from_config(self.scheduler.config, num_annealed_steps=config.sample_steps)
        shape = self.model.sample_shape
        x0 = torch.from_numpy(initial_sample(list(range(config.sample_count)), shape, 0.0, 1.0))
        model = self.ema.model if self.device.type == "cpu" else copy.deepcopy(self.ema.model).cpu()  # CPU noise
        x = annealed_langevin(model, scheduler, x0, torch.Generator().manual_seed(0), final_denoise=True)
        return save_image_grid(x, path)

    # -- loop -------------------------------------------------------------------------------
    def train(self, progress: bool = True) -> None:
        """Train until ``iterations`` (or ``time_limit_s``); checkpoint on exit, SIGTERM or Ctrl-C."""
        from tqdm import tqdm

        config = self.config
        stop = {"flag": False}
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
        bar = tqdm(total=config.iterations, initial=self.iteration, disable=not progress, dynamic_ncols=True)
        start = time.time() - self.elapsed_s
        self.out.mkdir(parents=True, exist_ok=True)
        self.model.train()
        try:
            while self.iteration < config.iterations and not stop["flag"]:
                x = dequantize(self.batches.next(), self.generator)
                loss = annealed_dsm_loss(self.model, x, self.scheduler, self.generator)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"loss became {loss.item()} at iteration {self.iteration}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.ema.update(self.model)
                self.iteration += 1
                self.elapsed_s = time.time() - start
                self.recent_losses.append(loss.item())
                bar.update(1)
                if self.iteration % config.log_every == 0:
                    mean = float(np.mean(self.recent_losses))
                    self.recent_losses.clear()
                    self.loss_history.append([self.iteration, round(mean, 5)])
                    bar.set_postfix(loss=f"{mean:.4f}")
                    record = {"iteration": self.iteration, "loss": mean, "elapsed_s": round(self.elapsed_s, 1)}
                    with open(self.out / "log.jsonl", "a", encoding="utf-8") as log:
                        log.write(json.dumps(record) + "\n")
                if self.iteration % config.checkpoint_every == 0:
                    self.save_checkpoint()
                if config.sample_every and self.iteration % config.sample_every == 0:
                    self.sample_grid(self.out / "samples" / f"iter_{self.iteration:07d}.png")
                if config.time_limit_s is not None and self.elapsed_s >= config.time_limit_s:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            bar.close()
            signal.signal(signal.SIGTERM, previous)
            self.save_checkpoint()


TRAIN_WRITER = "ncsn-train"
CHECKPOINT_DIR, CHECKPOINT_TMP, CHECKPOINT_OLD = "checkpoint", ".checkpoint.tmp", ".checkpoint.old"
CHECKPOINT_FILES = frozenset({"model.safetensors", "ema.safetensors", "optimizer.safetensors", "trainer_state.json"})


def _check_ours(path: Path) -> None:
    """``path`` is absent or a checkpoint directory ncsn-train provably wrote; else ``FileExistsError``."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"refusing to replace {path}: it is not a checkpoint directory ncsn-train wrote; move it away")
    if read_marker(path, TRAIN_WRITER) is not None:
        return
    names = {entry.name for entry in path.iterdir()}
    legacy = path.name == CHECKPOINT_DIR and names <= CHECKPOINT_FILES and all((path / name).is_file() for name in names)
    if not legacy:  # a checkpoint of an older version (no marker) holds only these files
        raise FileExistsError(f"refusing to replace {path}: ncsn-train did not write it (no ownership marker "
                              f"{MARKER_NAME}); move it away or choose another --out")


def _remove_ours(path: Path) -> None:
    """Delete ``path`` when it is ncsn-train's (:func:`_check_ours`); nothing when it is absent."""
    _check_ours(path)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
