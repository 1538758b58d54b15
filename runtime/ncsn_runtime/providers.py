"""Execution providers: resolve ``provider="auto" | "cpu" | "cuda"`` and open onnxruntime sessions.

onnxruntime-gpu lists ``CUDAExecutionProvider`` in ``get_available_providers()`` even on a machine
without a GPU or without the CUDA / cuDNN libraries, and a session asked for CUDA then quietly runs
on CPU. So the only trusted answer is ``session.get_providers()`` of a session that was really
opened: :func:`resolve_device` opens one and checks it.

* ``"auto"``: CUDA when onnxruntime lists it *and* a session really gets it, else CPU; the choice
  and the reason are logged (logger ``ncsn_runtime``).
* ``"cuda"``: CUDA or a :class:`ProviderError` saying why; never a silent fallback.
* ``"cpu"``: CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from .errors import EnvironmentVariableError

logger = logging.getLogger("ncsn_runtime")

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")
_ALIASES = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}
_ALIASES.update({CPU_PROVIDER.lower(): "cpu", CUDA_PROVIDER.lower(): "cuda"})


class ProviderError(RuntimeError):
    """The requested execution provider cannot be used on this machine."""


@dataclass(frozen=True)
class Device:
    """Where sessions run and where IO-bound tensors live.

    Attributes:
        kind: ``"cpu"`` or ``"cuda"`` (also the OrtValue device type).
        device_id: CUDA device ordinal (0 on CPU).
    """

    kind: str
    device_id: int = 0

    @property
    def provider(self) -> str:
        """onnxruntime's name of the execution provider."""
        return CUDA_PROVIDER if self.kind == "cuda" else CPU_PROVIDER

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def type(self) -> str:
        """``"cpu"`` or ``"cuda"``, as ``torch.device.type``."""
        return self.kind

    @property
    def index(self) -> int | None:
        """The CUDA ordinal (``None`` on CPU), as ``torch.device.index``."""
        return self.device_id if self.is_cuda else None

    def __str__(self) -> str:
        """``"cpu"`` or ``"cuda:N"``, as ``str(torch.device)``; ``pipe.to(str(device))`` round-trips."""
        return f"cuda:{self.device_id}" if self.is_cuda else "cpu"


def normalize_provider(provider: str) -> str:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` (also accepts onnxruntime's provider names, any case)."""
    if not isinstance(provider, str) or provider.lower() not in _ALIASES:
        raise ValueError(f"`provider` must be one of {', '.join(PROVIDER_CHOICES)}, got {provider!r}")
    return _ALIASES[provider.lower()]


THREADS_VARIABLE = "NCSN_NUM_THREADS"
MAX_THREADS = 4096  # onnxruntime intra-op threads: the most any host asks for (Node --threads, C --threads too)


def threads_from_environment() -> int | None:
    """``NCSN_NUM_THREADS`` as a thread count (``None`` when unset, empty or 0: onnxruntime's default).

    Anything else but a whole number in 0..4096 raises :class:`EnvironmentVariableError` naming the variable.
    """
    raw = os.environ.get(THREADS_VARIABLE, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_THREADS:
        raise EnvironmentVariableError(f"environment variable {THREADS_VARIABLE} must be a whole number of threads in "
                                       f"0..{MAX_THREADS} (0: onnxruntime's default), got {raw!r}")
    return value or None


def session_options(intra_op_threads: int | None = None, free_dimensions: dict[str, int] | None = None) -> ort.SessionOptions:
    """Session options: all graph optimisations, warnings-and-worse logging, optional fixed free dimensions.

    Args:
        intra_op_threads: threads per operator (``None``: onnxruntime's default, or ``NCSN_NUM_THREADS``).
        free_dimensions: symbolic dimension name -> size, e.g. ``{"batch": 16}``: the graph then has
            static shapes (needed for a CUDA graph and lets constant folding remove shape arithmetic).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    threads = intra_op_threads if intra_op_threads is not None else threads_from_environment()
    if threads:
        options.intra_op_num_threads = int(threads)
    for name, size in (free_dimensions or {}).items():
        options.add_free_dimension_override_by_name(name, int(size))
    return options


def provider_list(device: Device, cuda_graph: bool = False) -> list[Any]:
    """The ``providers=`` argument of ``InferenceSession`` for ``device``."""
    if not device.is_cuda:
        return [CPU_PROVIDER]
    # TF32 off: convolutions and matmuls in full fp32, so CUDA samples match CPU and torch within 1e-4.
    options = {"device_id": str(device.device_id), "use_tf32": "0"}
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    return [(CUDA_PROVIDER, options), CPU_PROVIDER]


# Indirection points so tests can stand in for onnxruntime without a GPU.
available_providers: Callable[[], list[str]] = ort.get_available_providers
session_factory: Callable[..., Any] = ort.InferenceSession


def open_session(
    path: str | os.PathLike,
    device: Device,
    *,
    cuda_graph: bool = False,
    free_dimensions: dict[str, int] | None = None,
    intra_op_threads: int | None = None,
) -> Any:
    """Open ``path`` on ``device``; a CUDA request that lands on CPU raises :class:`ProviderError`."""
    session = session_factory(
        os.fspath(path),
        sess_options=session_options(intra_op_threads, free_dimensions),
        providers=provider_list(device, cuda_graph),
    )
    if device.is_cuda and CUDA_PROVIDER not in session.get_providers():
        raise ProviderError(
            f"onnxruntime lists {CUDA_PROVIDER} but the session for {os.fspath(path)} got only "
            f"{session.get_providers()}: no CUDA device answered or the CUDA / cuDNN libraries that "
            "onnxruntime-gpu needs are missing (check `nvidia-smi` and onnxruntime's log above)"
        )
    return session


def resolve_device(provider: str, probe_path: str | os.PathLike, device_id: int = 0) -> tuple[Device, Any]:
    """Choose the device for ``provider``; returns ``(device, session or None)``.

    Whenever CUDA is in question, ``probe_path`` is opened on CUDA and the session's own provider list
    decides; that session is returned so callers can keep it. A CPU choice opens nothing (``None``).
    """
    choice = normalize_provider(provider)
    if isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0:
        raise ValueError(f"`device_id` must be an int >= 0, got {device_id!r}")
    cpu = Device("cpu")
    if choice == "cpu":
        logger.info("provider: %s (requested)", CPU_PROVIDER)
        return cpu, None
    listed = list(available_providers())
    cuda = Device("cuda", device_id)
    if choice == "cuda":
        if CUDA_PROVIDER not in listed:
            raise ProviderError(
                f"provider='cuda' needs onnxruntime-gpu, but the installed onnxruntime offers only {listed}; "
                "install the `gpu` extra (pip install 'ncsn-export[gpu]') or use provider='cpu'"
            )
        session = open_session(probe_path, cuda)
        logger.info("provider: %s device %d (requested)", CUDA_PROVIDER, device_id)
        return cuda, session
    if CUDA_PROVIDER not in listed:
        logger.info("provider: %s (auto: onnxruntime offers no %s)", CPU_PROVIDER, CUDA_PROVIDER)
        return cpu, None
    try:
        session = open_session(probe_path, cuda)
    except Exception as error:  # any failure to get CUDA means "not usable here" for auto
        logger.warning("provider: %s (auto: %s is listed but unusable: %s)", CPU_PROVIDER, CUDA_PROVIDER, error)
        return cpu, None
    logger.info("provider: %s device %d (auto)", CUDA_PROVIDER, device_id)
    return cuda, session
