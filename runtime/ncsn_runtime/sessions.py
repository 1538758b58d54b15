"""``GraphSessions``: the onnxruntime sessions of one export directory, opened once, checked against the manifest.

A graph's path is verified (sha256 of the graph and its external-data files, against the manifest) once per
``GraphSessions``; its session is opened on first use and its inputs / outputs are compared with the graph
contract (:func:`~ncsn_runtime.verify.check_session_io`). Stepwise engines (:mod:`ncsn_runtime.steppers`)
are built here too, once per graph and batch size, including the CUDA-graph steppers and their fallback.
The sampling modes that drive them live in :mod:`ncsn_runtime.sampling`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EnvironmentVariableError, ExportDirectoryError
from .manifest import Manifest
from .providers import Device, ProviderError, open_session
from .scheduler import AnnealedLangevinDynamicsScheduler
from .steppers import BoundStepper, CudaGraphStepper, GpuStepCudaGraphStepper, GpuStepStepper, ScoreStepper
from .verify import check_session_io

__all__ = ["STEP_GRAPHS", "GraphSessions", "check_graph_output", "graph_run_errors"]

logger = logging.getLogger("ncsn_runtime")

STEP_GRAPHS = ("step", "gpu_step", "score")
NOISE_LIKE_INPUTS = ("sample", "seed", "noise")  # inputs whose first dim is the batch


class GraphSessions:
    """Sessions, verified paths and steppers of the graphs listed in ``info`` (a checked manifest).

    Args:
        info: the export's :class:`~ncsn_runtime.manifest.Manifest`.
        device: where sessions run (:class:`~ncsn_runtime.providers.Device`).
        sessions: already opened sessions by contract key (e.g. the CUDA probe's).
        graph_paths: graphs whose sha256 was already checked, by contract key.
        cuda_graph: capture stepwise steps as CUDA graphs on CUDA (falls back to IO binding, logged once).
        intra_op_threads: onnxruntime threads per operator (``None``: its default).
    """

    def __init__(self, info: Manifest, device: Device, *, sessions: dict[str, Any] | None = None,
                 graph_paths: dict[str, Path] | None = None, cuda_graph: bool = True,
                 intra_op_threads: int | None = None) -> None:
        self.info = info
        self.device = device
        self.cuda_graph = bool(cuda_graph)
        self.intra_op_threads = intra_op_threads
        self.cuda_graph_error: str | None = None  # the last CUDA-graph capture failure (logged once per graph)
        self._cuda_graph_failed: set[str] = set()
        self._sessions = dict(sessions or {})
        self._graph_paths = dict(graph_paths or {})
        self._steppers: dict[tuple[str, int], Any] = {}

    @property
    def export_dir(self) -> Path:
        return self.info.root

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.info.model.sample_shape

    @property
    def names(self) -> list[str]:
        """Contract keys of the graphs the manifest lists (sorted)."""
        return sorted(self.info.raw["graphs"])

    def has_graph(self, name: str) -> bool:
        return name in self.info.raw["graphs"]

    def close(self) -> None:
        """Drop every session and stepper (e.g. before switching provider); verified paths are kept."""
        self._sessions.clear()
        self._steppers.clear()
        self._cuda_graph_failed.clear()
        self.cuda_graph_error = None

    def use_device(self, device: Device, sessions: dict[str, Any] | None = None) -> None:
        """Run on ``device`` from now on: every session and stepper (they belong to the old provider) is dropped;
        ``sessions`` are ones already opened on ``device`` (e.g. a CUDA probe's), by contract key."""
        self.close()
        self.device = device
        self._sessions.update(sessions or {})

    def graph_path(self, name: str) -> Path:
        """Path of graph ``name`` after its sha256 check (done once)."""
        if name not in self._graph_paths:
            self._graph_paths[name] = self.info.graph_path(name)
        return self._graph_paths[name]

    def session(self, name: str) -> Any:
        """The onnxruntime session of graph ``name`` (a contract key, e.g. ``sampler``), opened once."""
        if name not in self._sessions:
            if not self.has_graph(name):
                raise ExportDirectoryError(f"{self.export_dir} has no {name} graph (graphs: {self.names})")
            path = self.graph_path(name)
            try:
                session = open_session(path, self.device, intra_op_threads=self.intra_op_threads)
            except (ProviderError, EnvironmentVariableError):  # the machine's or the environment's, not the export's
                raise
            except Exception as error:  # onnxruntime's own Fail / InvalidGraph / InvalidProtobuf
                raise ExportDirectoryError(f"onnxruntime cannot load {path} (its sha256 matches the manifest, so the "
                                           f"export itself is broken or needs a newer onnxruntime): {error}") from error
            check_session_io(session, name, self.sample_shape, path)
            unchanged = getattr(self.info, "check_unchanged", None)  # onnxruntime read the files by path: still ours?
            if unchanged is not None:
                unchanged()
            self._sessions[name] = session
        return self._sessions[name]

    def stepper(self, graph: str, batch_size: int, scheduler: AnnealedLangevinDynamicsScheduler) -> Any:
        """The stepwise engine of ``graph`` (``step``, ``gpu_step`` or ``score``) for ``batch_size``, created once per
        graph and batch size and reused (``score`` steps any batch)."""
        if graph not in STEP_GRAPHS:
            raise ValueError(f"stepper graph must be one of {STEP_GRAPHS}, got {graph!r}")
        key = (graph, batch_size if graph != "score" else 0)
        if key in self._steppers:
            return self._steppers[key]
        if graph == "score":
            stepper = ScoreStepper(self.session("score"), scheduler)
        else:
            shape = (batch_size, *self.sample_shape)
            # a graph whose capture failed once is not retried
            use_graph = self.device.is_cuda and self.cuda_graph and graph not in self._cuda_graph_failed
            stepper = self._cuda_graph_stepper(graph, shape) if use_graph else None
            if stepper is None:
                plain = GpuStepStepper if graph == "gpu_step" else BoundStepper
                stepper = plain(self.session(graph), self.device, shape)
        self._steppers[key] = stepper
        return stepper

    def _cuda_graph_stepper(self, graph: str, shape: tuple[int, ...]) -> Any:
        path = self.graph_path(graph)
        captured = GpuStepCudaGraphStepper if graph == "gpu_step" else CudaGraphStepper
        try:
            session = open_session(path, self.device, cuda_graph=True, free_dimensions=self.batch_dimensions(graph, shape[0]),
                                   intra_op_threads=self.intra_op_threads)
            if hasattr(self.info, "check_unchanged"):  # (if it raises, the plain session's check below refuses it too)
                self.info.check_unchanged()
            return captured(session, self.device, shape)
        except Exception as error:  # onnxruntime raises plain RuntimeErrors / its own Fail
            self.cuda_graph_error = f"{type(error).__name__}: {error}"
            self._cuda_graph_failed.add(graph)
            logger.warning("CUDA graph capture of %s failed (%s); stepping with IO binding without it", path.name, error)
            return None

    def batch_dimensions(self, graph: str, batch_size: int) -> dict[str, int]:
        """Symbolic batch-dimension names of ``graph``'s inputs -> ``batch_size`` (static shapes for the CUDA graph)."""
        inputs = self.info.raw["graphs"][graph].get("inputs")
        if not inputs:
            inputs = [{"name": item.name, "shape": item.shape} for item in self.session(graph).get_inputs()]
        names = {}
        for item in inputs:
            shape = item.get("shape") or []
            if item.get("name") in NOISE_LIKE_INPUTS and shape and isinstance(shape[0], str):
                names[shape[0]] = batch_size
        return names


@contextlib.contextmanager
def graph_run_errors(export_dir: Path) -> Iterator[None]:
    """onnxruntime's own exceptions during a run (InvalidArgument, Fail, ...) -> :class:`ExportDirectoryError`.

    The pipeline builds every input from the manifest, so such an error means the graph and its manifest disagree.
    """
    try:
        yield
    except Exception as error:
        if type(error).__module__.startswith("onnxruntime"):
            raise ExportDirectoryError(f"onnxruntime failed to run a graph of {export_dir} (the graph and its manifest "
                                       f"disagree?): {type(error).__name__}: {str(error).strip()[:500]}") from error
        raise


def check_graph_output(array: Any, shape: Sequence[int], graph: str) -> np.ndarray:
    """A graph's output must be float32 shaped ``shape`` (``[B, *sample_shape]``) as the manifest says."""
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.shape != tuple(shape):
        got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ExportDirectoryError(f"{graph} returned {got}; the manifest promises float32 {tuple(shape)}")
    return array
