"""Stepwise sampling engines: one Langevin step at a time, driven from Python.

Three steppers share one small interface (``reset`` / ``step`` / ``read`` / ``write``):

* :class:`ScoreStepper`: ``score.onnx`` for the score, the numpy scheduler for the update and
  :func:`~ncsn_runtime.noise.counter_normal` for the noise. Host arrays; works on any provider.
* :class:`BoundStepper`: ``step.onnx`` (score network + update + counter noise in one graph) through
  IO binding. The sample ping-pongs between two pre-allocated device tensors and the scalar inputs
  live in pre-bound device tensors updated in place, so on CUDA nothing leaves the device between
  steps (one 8-byte host-to-device copy per step for the counter, two per level for level and
  step size).
* :class:`CudaGraphStepper`: the same bound step on a session opened with ``enable_cuda_graph`` and
  the batch dimension fixed, so onnxruntime captures each direction of the ping-pong once as a CUDA
  graph (``gpu_graph_id`` 1 and 2) and replays it for every later step. The buffers are therefore
  allocated once per batch size and never re-bound; a stepper is reused across calls.
* :class:`GpuStepStepper`: ``gpu_step.onnx`` (score network + update, the noise ``z`` an input) through
  IO binding. The contract's counter noise is drawn on the host (:func:`~ncsn_runtime.noise.counter_normal`)
  and copied into a pre-bound noise buffer; the next step's noise is drawn on a background thread while
  onnxruntime runs the current step. The graph has no control flow and no bitwise ops, so on CUDA every
  node has a kernel and :class:`GpuStepCudaGraphStepper` can capture it as a CUDA graph. The final
  denoising step is the same graph with ``step_size = 2 * sigma_last**2`` and ``z = 0``.

:func:`langevin_loop` runs the annealed schedule on a stepper, with the NaN/inf check that reports
the level and step where a non-finite value first appeared.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort

from .contract import GRAPHS
from .errors import ExportDirectoryError
from .interrupt import quiet_run_options, run_interruptibly, run_with_iobinding_interruptibly, sigint_armed
from .noise import counter_normal, langevin_counter
from .providers import Device

logger = logging.getLogger("ncsn_runtime")

STEP_INPUTS = GRAPHS["step"].input_names
GPU_STEP_INPUTS = GRAPHS["gpu_step"].input_names
SCORE_INPUTS = GRAPHS["score"].input_names


class NonFiniteSampleError(FloatingPointError):
    """NaN or inf appeared in the samples.

    Attributes:
        position: schedule position (``None`` in fused mode: only the final sample is checked).
        level: trained level index fed to the network at that position.
        annealed_step: annealed step ``t`` within the level.
        samples: indices (within the batch) of the samples holding non-finite values.
    """

    def __init__(self, message: str, position: int | None = None, level: int | None = None,
                 annealed_step: int | None = None, samples: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.position, self.level, self.annealed_step, self.samples = position, level, annealed_step, list(samples)


def bad_samples(sample: np.ndarray) -> list[int]:
    """Indices of samples (axis 0) holding NaN or inf."""
    finite = np.isfinite(sample.reshape(len(sample), -1)).all(axis=1)
    return np.flatnonzero(~finite).tolist()


def check_graph_io(session: Any, graph: str, inputs: Sequence[str]) -> str:
    """Check a session has exactly the contract's input names; return its (single) output name."""
    names = [item.name for item in session.get_inputs()]
    if sorted(names) != sorted(inputs):
        raise ExportDirectoryError(f"{graph} has inputs {names}; the graph contract expects {list(inputs)}")
    outputs = [item.name for item in session.get_outputs()]
    if len(outputs) != 1:
        raise ExportDirectoryError(f"{graph} has outputs {outputs}; the graph contract expects exactly one")
    return outputs[0]


class ScoreStepper:
    """Langevin steps from ``score.onnx`` + the numpy scheduler + numpy counter noise (host arrays).

    Args:
        session: onnxruntime session of ``score.onnx``.
        scheduler: :class:`~ncsn_runtime.scheduler.AnnealedLangevinDynamicsScheduler` holding the schedule.
    """

    kind = "score.onnx + numpy scheduler"

    def __init__(self, session: Any, scheduler: Any) -> None:
        self.session = session
        self.scheduler = scheduler
        self.output_name = check_graph_io(session, "score.onnx", SCORE_INPUTS)
        self._sample: np.ndarray | None = None
        self._seeds: np.ndarray | None = None

    def reset(self, sample: np.ndarray, seeds: np.ndarray) -> None:
        self._sample = np.array(sample, dtype=np.float32)
        self._seeds = np.asarray(seeds, dtype=np.int64)

    def score(self, sample: np.ndarray, level: int) -> np.ndarray:
        """s(x, level), float32 [B, ...]."""
        timestep = np.full(len(sample), level, dtype=np.int64)
        return run_interruptibly(self.session, [self.output_name], {"sample": sample, "timestep": timestep})[0]

    def step(self, level: int, step_size: float, counter: int) -> None:
        x = self._sample
        noise = counter_normal(self._seeds, counter, x.shape[1:])
        self._sample = self.scheduler.step(self.score(x, level), level, x, noise=noise).prev_sample

    def read(self) -> np.ndarray:
        return self._sample.copy()

    def write(self, sample: np.ndarray) -> None:
        self._sample = np.array(sample, dtype=np.float32)


class BoundStepper:
    """``step.onnx`` through IO binding with device-resident, pre-bound buffers.

    Args:
        session: onnxruntime session of ``step.onnx`` on ``device``.
        device: where the buffers live (``cpu`` or ``cuda``).
        sample_shape: full shape [B, ...] of the sample buffers.
        run_options: per ping-pong direction (0: buffer 0 -> 1, 1: buffer 1 -> 0), or ``None``. Every run goes
            through :func:`~ncsn_runtime.interrupt.run_with_iobinding_interruptibly` (Ctrl-C stops it).
    """

    kind = "step.onnx + IO binding"
    graph = "step"

    def __init__(self, session: Any, device: Device, sample_shape: Sequence[int],
                 run_options: tuple[Any, Any] | None = None) -> None:
        self.session = session
        self.device = device
        self.shape = tuple(int(size) for size in sample_shape)
        spec = GRAPHS[self.graph]
        self.output_name = check_graph_io(session, spec.file, spec.input_names)
        self.run_options = run_options or (quiet_run_options(), quiet_run_options())  # Ctrl-C terminates through these
        self._buffers = [self._empty(self.shape, np.float32), self._empty(self.shape, np.float32)]
        self._level = self._value(np.zeros((), dtype=np.int64))
        self._step_size = self._value(np.zeros((), dtype=np.float32))
        self._inputs = {"timestep": self._level, "step_size": self._step_size, **self._graph_inputs()}
        self._last_level: int | None = None
        self._last_step_size: float | None = None
        self._bindings = [self._bind(0, 1), self._bind(1, 0)]
        self._current = 0

    def _graph_inputs(self) -> dict[str, ort.OrtValue]:
        """The graph's own pre-bound inputs besides sample, timestep and step_size."""
        self._seed = self._empty((self.shape[0],), np.int64)
        self._counter = self._value(np.zeros((), dtype=np.int64))
        return {"seed": self._seed, "counter": self._counter}

    # -- buffers ------------------------------------------------------------------------------------
    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(array, self.device.kind, self.device.device_id)

    def _empty(self, shape: tuple[int, ...], dtype: type) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device.kind, self.device.device_id)

    def _bind(self, source: int, target: int) -> Any:
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("sample", self._buffers[source])
        for name, value in self._inputs.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(self.output_name, self._buffers[target])
        return binding

    def buffer_pointers(self) -> list[int]:
        """Addresses of the two sample buffers (fixed for the stepper's lifetime)."""
        return [buffer.data_ptr() for buffer in self._buffers]

    # -- stepper interface -------------------------------------------------------------------------
    def reset(self, sample: np.ndarray, seeds: np.ndarray) -> None:
        """Load the initial x (float32 [B, ...]) and the per-sample seeds (int64 [B])."""
        seeds = np.ascontiguousarray(seeds, dtype=np.int64)
        if seeds.shape != (self.shape[0],):
            raise ValueError(f"`seeds` must have shape ({self.shape[0]},), got {seeds.shape}")
        self._seed.update_inplace(seeds)
        self.write(sample)

    def step(self, level: int, step_size: float, counter: int) -> None:
        """x <- step(x, seed, level, step_size, counter), all on the device."""
        self._counter.update_inplace(np.array(counter, dtype=np.int64))
        self._run(level, step_size)

    def _run(self, level: int, step_size: float) -> None:
        if level != self._last_level:
            self._level.update_inplace(np.array(level, dtype=np.int64))
            self._last_level = level
        if step_size != self._last_step_size:
            self._step_size.update_inplace(np.array(step_size, dtype=np.float32))
            self._last_step_size = step_size
        run_with_iobinding_interruptibly(self.session, self._bindings[self._current], self.run_options[self._current])
        self._current ^= 1

    def read(self) -> np.ndarray:
        """Host copy of the current x (on CPU ``OrtValue.numpy`` is a view of the buffer, hence the copy)."""
        return np.array(self._buffers[self._current].numpy(), copy=True)

    def write(self, sample: np.ndarray) -> None:
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.shape != self.shape:
            raise ValueError(f"`sample` must have shape {self.shape}, got {sample.shape}")
        self._buffers[self._current].update_inplace(sample)


def cuda_graph_run_options() -> tuple[Any, Any]:
    """Run options selecting CUDA graph ids 1 and 2 (0 is reserved by onnxruntime, -1 disables capture)."""
    options = []
    for graph_id in ("1", "2"):
        options.append(quiet_run_options(gpu_graph_id=graph_id))
    return options[0], options[1]


class _CudaGraphCapture:
    """Mixin: the two ping-pong directions of a bound stepper captured as CUDA graphs 1 and 2.

    ``session`` must be opened with ``enable_cuda_graph`` and the batch dimension fixed to
    ``sample_shape[0]``. The constructor warms up and captures both graphs (with zero inputs); it
    raises whatever onnxruntime raises when the graph cannot be captured (e.g. a node placed on CPU),
    so callers can fall back to the plain IO-binding stepper.
    """

    WARMUP_RUNS = 3  # per graph id: onnxruntime runs normally first, then captures, then replays

    def __init__(self, session: Any, device: Device, sample_shape: Sequence[int]) -> None:
        super().__init__(session, device, sample_shape, run_options=cuda_graph_run_options())
        self.reset(np.zeros(self.shape, dtype=np.float32), np.zeros(self.shape[0], dtype=np.int64))
        for _ in range(2 * self.WARMUP_RUNS):
            self.step(0, 0.0, 0)
        self._current = 0


class CudaGraphStepper(_CudaGraphCapture, BoundStepper):
    """:class:`BoundStepper` (``step.onnx``) captured as CUDA graphs (see :class:`_CudaGraphCapture`)."""

    kind = "step.onnx + IO binding + CUDA graph"


class GpuStepStepper(BoundStepper):
    """``gpu_step.onnx`` through IO binding; host-drawn counter noise written into a pre-bound buffer.

    Args:
        session: onnxruntime session of ``gpu_step.onnx`` on ``device``.
        device: where the buffers live (``cpu`` or ``cuda``).
        sample_shape: full shape [B, ...] of the sample and noise buffers.
        run_options: per ping-pong direction, or ``None``.
        prefetch: draw the next step's noise (counter + 1) on a background thread while the current
            step runs (the counter of consecutive Langevin steps always grows by one, across levels too).
    """

    kind = "gpu_step.onnx + IO binding"
    graph = "gpu_step"

    def __init__(self, session: Any, device: Device, sample_shape: Sequence[int],
                 run_options: tuple[Any, Any] | None = None, prefetch: bool = True) -> None:
        self._seeds = np.zeros(int(sample_shape[0]), dtype=np.int64)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ncsn-noise") if prefetch else None
        self._pending: tuple[int, Future] | None = None
        super().__init__(session, device, sample_shape, run_options)

    def _graph_inputs(self) -> dict[str, ort.OrtValue]:
        self._noise = self._empty(self.shape, np.float32)
        return {"noise": self._noise}

    def _draw(self, counter: int) -> np.ndarray:
        return counter_normal(self._seeds, counter, self.shape[1:])

    def noise(self, counter: int) -> np.ndarray:
        """The contract noise z at ``counter`` for the current seeds, float32 [B, ...] (prefetched if asked for)."""
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] == counter:
            return pending[1].result()
        return self._draw(counter)

    def reset(self, sample: np.ndarray, seeds: np.ndarray) -> None:
        """Load the initial x (float32 [B, ...]) and the per-sample seeds (int64 [B]; used on the host)."""
        seeds = np.ascontiguousarray(seeds, dtype=np.int64)
        if seeds.shape != (self.shape[0],):
            raise ValueError(f"`seeds` must have shape ({self.shape[0]},), got {seeds.shape}")
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None
        self._seeds = seeds.copy()
        self.write(sample)

    def step(self, level: int, step_size: float, counter: int) -> None:
        """x <- gpu_step(x, z(counter), level, step_size); z for ``counter + 1`` is drawn meanwhile."""
        self._noise.update_inplace(self.noise(counter))
        if self._pool is not None:
            self._pending = (counter + 1, self._pool.submit(self._draw, counter + 1))
        self._run(level, step_size)

    def denoise(self, level: int, step_size: float) -> None:
        """The final denoising step: the Langevin update with ``step_size = 2 * sigma_last**2`` and z = 0."""
        self._noise.update_inplace(np.zeros(self.shape, dtype=np.float32))
        self._run(level, step_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class GpuStepCudaGraphStepper(_CudaGraphCapture, GpuStepStepper):
    """:class:`GpuStepStepper` captured as CUDA graphs (see :class:`_CudaGraphCapture`)."""

    kind = "gpu_step.onnx + IO binding + CUDA graph"


def langevin_loop(
    stepper: Any,
    timesteps: np.ndarray,
    step_sizes: np.ndarray,
    num_annealed_steps: int,
    *,
    before_level: Callable[[int, np.ndarray], np.ndarray] | None = None,
    after_step: Callable[[int, int, np.ndarray], np.ndarray | None] | None = None,
    on_step: Callable[[int], None] | None = None,
    check_finite: bool = True,
) -> None:
    """Run ``len(timesteps) * num_annealed_steps`` Langevin steps on ``stepper`` (noise counter ``i*T + t``).

    Args:
        stepper: a reset stepper (its x is the initial sample).
        timesteps: int64 [N] level indices; step_sizes: float32 [N].
        num_annealed_steps: T.
        before_level: ``(position, x) -> x`` applied when each level starts (inpainting's projection).
        after_step: ``(position, t, x) -> x or None`` after every step; forces a host read per step.
        on_step: ``(global_step) -> None`` after every step, without reading x (progress bars).
        check_finite: raise :class:`NonFiniteSampleError` naming the position, level and annealed step
            where NaN/inf first appeared. Checked once per level (one host read); on failure the level
            is replayed from its saved start, which reproduces it exactly (the noise is a function of
            the counter), to find the step.
    """
    with sigint_armed():  # Ctrl-C stops the step in progress; the handler is installed once for the whole loop
        _langevin_loop(stepper, timesteps, step_sizes, num_annealed_steps, before_level, after_step, on_step, check_finite)


def _langevin_loop(stepper: Any, timesteps: np.ndarray, step_sizes: np.ndarray, num_annealed_steps: int,
                   before_level: Callable[[int, np.ndarray], np.ndarray] | None,
                   after_step: Callable[[int, int, np.ndarray], np.ndarray | None] | None,
                   on_step: Callable[[int], None] | None, check_finite: bool) -> None:
    steps = int(num_annealed_steps)
    schedule = zip(np.asarray(timesteps).tolist(), np.asarray(step_sizes, np.float32).tolist(), strict=True)
    end = None  # x at the end of the previous level, already on the host
    for position, (level, step_size) in enumerate(schedule):
        start = None
        if before_level is not None:
            start = before_level(position, stepper.read() if end is None else end)
            stepper.write(start)
        elif check_finite and after_step is None:
            start = stepper.read() if end is None else end
        for t in range(steps):
            stepper.step(level, step_size, langevin_counter(position, t, steps))
            if after_step is not None:
                x = stepper.read()
                if check_finite and bad_samples(x):
                    _raise_non_finite(x, position, level, t)
                replaced = after_step(position, t, x)
                if replaced is not None:
                    stepper.write(replaced)
            if on_step is not None:
                on_step(position * steps + t)
        end = None
        if check_finite and after_step is None:
            end = stepper.read()
            if bad_samples(end):
                _locate_non_finite(stepper, start, position, level, step_size, steps)


def _locate_non_finite(stepper: Any, start: np.ndarray, position: int, level: int, step_size: float, steps: int) -> None:
    stepper.write(start)
    for t in range(steps):
        stepper.step(level, step_size, langevin_counter(position, t, steps))
        x = stepper.read()
        if bad_samples(x):
            _raise_non_finite(x, position, level, t)
    raise NonFiniteSampleError(f"NaN/inf appeared at schedule position {position} (level {level}) but did not reproduce "
                               "on replay", position, level)


def _raise_non_finite(x: np.ndarray, position: int, level: int, t: int) -> None:
    samples = bad_samples(x)
    raise NonFiniteSampleError(
        f"NaN/inf first appeared at schedule position {position} (trained level {level}), annealed step {t}, "
        f"in samples {samples[:10]}{' ...' if len(samples) > 10 else ''}: the step size may be too large for this "
        "network (lower sampling_eps) or the network diverges at this noise level",
        position, level, t, samples,
    )
