"""Fixed-shape graphs for phone accelerators (``mobile/``, written by ``ncsn-export --artifacts ...,mobile``).

Android NNAPI and Apple Core ML take only static shapes and a short list of operators, so these graphs have the
batch fixed at export (``--mobile-batch B``, default 1), no shape arithmetic, no Gather, no InstanceNormalization,
no integer inputs, and every node in both execution providers' lists (``ncsn_export.exporters.mobile_graph``):

* ``mobile/score.onnx``: ``sample f32[B, *S], level_onehot f32[B, L] -> score f32[B, *S]``.
* ``mobile/step.onnx``:  ``sample f32[B, *S], noise f32[B, *S], level_onehot f32[1, L], step_size f32[1]
  -> next_sample f32[B, *S]``: the network and one Langevin step, ``(x + (0.5 * a) * s) + sqrt(a) * z``, as
  ``gpu_step.onnx`` with the level as a one-hot row (one level for the whole batch).
* ``mobile/weights.onnx.data``: their weights (ONNX external data). It is a copy of the network's weights:
  onnx and onnxruntime refuse an external-data location outside the model's folder (``../weights.onnx.data``),
  and this way ``mobile/`` is a self-contained folder to ship in an app.

``L`` is the number of trained levels; ``level_onehot`` has 1.0 at the level index and 0.0 elsewhere. The noise is
the contract's counter noise drawn on the host (:func:`~ncsn_runtime.noise.counter_normal` at counter
``langevin_counter(i, t, T)``), so the same seeds give the same samples as every other graph. The final denoising
step is ``step.onnx`` with ``noise = 0`` and ``step_size = 2 * sigma_last**2``.

The manifest lists them under ``artifacts["mobile:score"]`` / ``artifacts["mobile:step"]`` (file, batch, inputs and
outputs with their fixed shapes, the usability checker's verdict). :class:`MobileSampler` is the host loop in Python;
a phone app runs the same loop (README, "Phones: NNAPI and Core ML").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ExportDirectoryError
from .interrupt import run_interruptibly
from .manifest import Manifest, read_manifest, verified_graph_path
from .noise import counter_normal, initial_sample, seeds_for_batch
from .pipeline import load_scheduler
from .providers import Device, open_session
from .schedule import check_count, denoise_update
from .steppers import ScoreStepper, bad_samples, check_graph_io, langevin_loop

__all__ = [
    "MAX_MOBILE_BATCH",
    "MOBILE_DIR",
    "MOBILE_GRAPHS",
    "MOBILE_INPUTS",
    "MOBILE_PREFIX",
    "MobileGraph",
    "MobileSampler",
    "mobile_file",
    "mobile_graphs",
    "mobile_io",
    "onehot",
]

MOBILE_DIR = "mobile"
MOBILE_PREFIX = "mobile:"
MOBILE_GRAPHS = ("score", "step")
MAX_MOBILE_BATCH = 64  # a phone accelerator's working set; larger batches belong on the desktop graphs
MOBILE_INPUTS: dict[str, tuple[str, ...]] = {"score": ("sample", "level_onehot"),
                                             "step": ("sample", "noise", "level_onehot", "step_size")}
MOBILE_OUTPUTS: dict[str, str] = {"score": "score", "step": "next_sample"}


def mobile_file(key: str) -> str:
    """Relative path of mobile graph ``key`` (``mobile/step.onnx``)."""
    return f"{MOBILE_DIR}/{key}.onnx"


def mobile_io(key: str, batch: int, sample_shape: Sequence[int], num_levels: int) -> dict[str, list[dict[str, Any]]]:
    """The fixed-shape inputs and outputs of mobile graph ``key`` as the manifest records them."""
    sample = [int(batch), *(int(size) for size in sample_shape)]
    inputs = {"sample": sample, "noise": sample, "step_size": [1],
              "level_onehot": [int(batch) if key == "score" else 1, int(num_levels)]}
    return {"inputs": [{"name": name, "dtype": "float32", "shape": inputs[name]} for name in MOBILE_INPUTS[key]],
            "outputs": [{"name": MOBILE_OUTPUTS[key], "dtype": "float32", "shape": sample}]}


def onehot(levels: Sequence[int] | np.ndarray, num_levels: int) -> np.ndarray:
    """float32 [len(levels), L]: row b is 1.0 at ``levels[b]``; ``ValueError`` for a level outside [0, L-1]."""
    levels = np.asarray(levels, dtype=np.int64).reshape(-1)
    if levels.size and (levels.min() < 0 or levels.max() >= num_levels):
        raise ValueError(f"`level` must be in [0, {num_levels - 1}], got {levels.tolist()}")
    out = np.zeros((levels.size, int(num_levels)), dtype=np.float32)
    out[np.arange(levels.size), levels] = 1.0
    return out


@dataclass(frozen=True)
class MobileGraph:
    """One written mobile graph of an export: its key, relative file and fixed batch."""

    key: str
    file: str
    batch: int


def mobile_graphs(info: Manifest) -> dict[str, MobileGraph]:
    """The written mobile graphs the manifest lists (``artifacts["mobile:KEY"]``), checked: the file must be
    ``mobile/KEY.onnx`` and the batch an int in [1, :data:`MAX_MOBILE_BATCH`]; else :class:`ExportDirectoryError`."""
    artifacts = info.raw.get("artifacts", {})
    if not isinstance(artifacts, dict):
        raise ExportDirectoryError(f"{info.path}: `artifacts` must be an object, got {type(artifacts).__name__}")
    found: dict[str, MobileGraph] = {}
    for name, entry in artifacts.items():
        if not isinstance(name, str) or not name.startswith(MOBILE_PREFIX):
            continue
        key, what = name[len(MOBILE_PREFIX):], f"{info.path}: artifacts.{name}"
        if not isinstance(entry, dict):
            raise ExportDirectoryError(f"{what} must be an object, got {entry!r}")
        if entry.get("status") != "written":
            continue
        if key not in MOBILE_GRAPHS:
            raise ExportDirectoryError(f"{what}: {key!r} is not a mobile graph ({', '.join(MOBILE_GRAPHS)})")
        if entry.get("file") != mobile_file(key):
            raise ExportDirectoryError(f"{what}.file must be {mobile_file(key)!r}, got {entry.get('file')!r}")
        batch = entry.get("batch")
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_MOBILE_BATCH:
            raise ExportDirectoryError(f"{what}.batch must be an int in [1, {MAX_MOBILE_BATCH}], got {batch!r}")
        found[key] = MobileGraph(key, entry["file"], batch)
    return found


class MobileScoreStepper(ScoreStepper):
    """:class:`~ncsn_runtime.steppers.ScoreStepper` on ``mobile/score.onnx`` (the level as a one-hot row per sample)."""

    kind = "mobile/score.onnx + numpy scheduler"

    def __init__(self, session: Any, scheduler: Any) -> None:
        self.session = session
        self.scheduler = scheduler
        self.output_name = check_graph_io(session, mobile_file("score"), MOBILE_INPUTS["score"])
        self._sample = None
        self._seeds = None

    def score(self, sample: np.ndarray, level: int) -> np.ndarray:
        feeds = {"sample": sample, "level_onehot": onehot([level] * len(sample), self.scheduler.num_train_timesteps)}
        return run_interruptibly(self.session, [self.output_name], feeds)[0]


class MobileStepStepper:
    """``mobile/step.onnx`` with host-drawn counter noise: the loop a phone app runs, in Python (plain ``run``)."""

    kind = "mobile/step.onnx + host noise"

    def __init__(self, session: Any, batch: int, sample_shape: Sequence[int], num_levels: int) -> None:
        self.session = session
        self.output_name = check_graph_io(session, mobile_file("step"), MOBILE_INPUTS["step"])
        self.shape = (int(batch), *(int(size) for size in sample_shape))
        self.num_levels = int(num_levels)
        self._sample = np.zeros(self.shape, dtype=np.float32)
        self._seeds = np.zeros(self.shape[0], dtype=np.int64)

    def reset(self, sample: np.ndarray, seeds: np.ndarray) -> None:
        seeds = np.ascontiguousarray(seeds, dtype=np.int64)
        if seeds.shape != (self.shape[0],):
            raise ValueError(f"`seeds` must have shape ({self.shape[0]},), got {seeds.shape}")
        self._seeds = seeds.copy()
        self.write(sample)

    def _run(self, level: int, step_size: float, noise: np.ndarray) -> None:
        feeds = {"sample": self._sample, "noise": noise, "level_onehot": onehot([level], self.num_levels),
                 "step_size": np.array([step_size], dtype=np.float32)}
        self._sample = run_interruptibly(self.session, [self.output_name], feeds)[0]

    def step(self, level: int, step_size: float, counter: int) -> None:
        self._run(level, step_size, counter_normal(self._seeds, counter, self.shape[1:]))

    def denoise(self, level: int, step_size: float) -> None:
        """The final denoising step: ``step_size = 2 * sigma_last**2`` and z = 0."""
        self._run(level, step_size, np.zeros(self.shape, dtype=np.float32))

    def read(self) -> np.ndarray:
        return self._sample.copy()

    def write(self, sample: np.ndarray) -> None:
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.shape != self.shape:
            raise ValueError(f"`sample` must have shape {self.shape}, got {sample.shape}")
        self._sample = sample.copy()


class MobileSampler:
    """The host loop over an export's mobile graphs, on the CPU execution provider (the phone runs the same loop).

    Args:
        export_dir: an export directory with ``mobile/`` graphs (``--artifacts ...,mobile``).
        graph: ``"step"`` (network + update in the graph) or ``"score"`` (the update in numpy).
        intra_op_threads: onnxruntime threads per operator (None: its default).
    """

    def __init__(self, export_dir: str | os.PathLike, graph: str = "step", intra_op_threads: int | None = None) -> None:
        if graph not in MOBILE_GRAPHS:
            raise ValueError(f"`graph` must be one of {', '.join(MOBILE_GRAPHS)}, got {graph!r}")
        self.info = read_manifest(export_dir)
        graphs = mobile_graphs(self.info)
        if graph not in graphs:
            raise ExportDirectoryError(f"{self.info.root} has no mobile {graph} graph (export it with "
                                       "`--artifacts ...,mobile`)")
        self.graph = graphs[graph]
        self.batch = self.graph.batch
        path = verified_graph_path(self.info.root, self.info, self.graph.file)  # sha256 of the graph + its weights
        self.session = open_session(path, Device("cpu"), intra_op_threads=intra_op_threads)
        self.scheduler = load_scheduler(self.info)  # sha256-checked, matching the graphs' levels
        self._default_steps = self.scheduler.num_annealed_steps
        self.sample_shape = tuple(self.info.model.sample_shape)

    def __call__(self, seeds: Sequence[int] | np.ndarray, num_inference_steps: int | None = None,
                 num_annealed_steps: int | None = None, sample: np.ndarray | None = None) -> np.ndarray:
        """Samples for ``seeds`` (any count: run in chunks of the fixed batch, the last one padded with more seeds),
        float32 [len(seeds), *S]. ``sample``: the initial x (default: the contract's initial sample of the seeds)."""
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        scheduler = self.scheduler
        scheduler.set_timesteps(scheduler.num_train_timesteps if num_inference_steps is None else num_inference_steps)
        scheduler.num_annealed_steps = (self._default_steps if num_annealed_steps is None
                                        else check_count("num_annealed_steps", num_annealed_steps))
        timesteps, _, step_sizes = scheduler.schedule_arrays()
        model = self.info.model
        if sample is None:
            sample = initial_sample(seeds, self.sample_shape, float(model.init_range[0]), float(model.init_range[1]))
        out = []
        for start in range(0, len(seeds), self.batch):
            chunk = seeds[start:start + self.batch]
            pad = self.batch - len(chunk)
            x = sample[start:start + self.batch]
            if pad:
                extra = seeds_for_batch(int(chunk[-1]) + 1, pad)
                chunk = np.concatenate([chunk, extra])
                x = np.concatenate([x, initial_sample(extra, self.sample_shape, float(model.init_range[0]),
                                                      float(model.init_range[1]))])
            out.append(self._run_batch(x, chunk, timesteps, step_sizes)[:self.batch - pad])
        return np.concatenate(out) if out else np.zeros((0, *self.sample_shape), dtype=np.float32)

    def _run_batch(self, x: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray, step_sizes: np.ndarray) -> np.ndarray:
        levels = self.scheduler.num_train_timesteps
        if self.graph.key == "step":
            stepper: Any = MobileStepStepper(self.session, self.batch, self.sample_shape, levels)
        else:
            stepper = MobileScoreStepper(self.session, self.scheduler)
        stepper.reset(x, seeds)
        langevin_loop(stepper, timesteps, step_sizes, self.scheduler.num_annealed_steps)
        if self.info.model.final_denoise:
            last = int(timesteps[-1])
            sigma = float(self.scheduler.train_sigmas[last])
            if isinstance(stepper, MobileStepStepper):
                stepper.denoise(last, float(np.float32(2.0 * sigma * sigma)))
            else:
                current = stepper.read()
                stepper.write(denoise_update(current, stepper.score(current, last), sigma * sigma).astype(np.float32))
        result = stepper.read()
        if bad_samples(result):
            raise FloatingPointError(f"NaN/inf in the samples of {self.graph.file} (samples {bad_samples(result)[:10]})")
        return result
