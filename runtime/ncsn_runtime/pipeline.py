"""``NCSNPipeline``: sample from an export directory with onnxruntime (numpy in, numpy / PIL out; no torch).

Every graph of the contract (:data:`~ncsn_runtime.contract.GRAPHS`) can drive sampling, on any provider,
and all give the same samples for the same seeds (<= 1e-4); pick one with ``graph=``:

* fused (one call runs the whole annealed loop, an ONNX ``Loop``): ``sampler`` (in-graph counter noise
  with bitwise ops, for CPU hosts) and ``gpu_sampler`` (the same noise from ops with CUDA kernels);
* stepwise (Python drives one Langevin step at a time; per-step callbacks, a progress bar and NaN/inf
  location by level and step): ``step`` (network + update + in-graph noise, IO binding), ``gpu_step``
  (network + update with the noise z an input: the counter noise is drawn on the host, ahead of the
  device; no control flow and no bitwise ops, so on CUDA it is captured as a CUDA graph) and ``score``
  (``score.onnx`` + the numpy scheduler).

``mode`` is the shorthand: ``"fused"`` = ``sampler`` and ``"stepwise"`` = ``step`` (on CUDA ``gpu_step``
when exported, the graph whose nodes all have CUDA kernels). ``mode="auto"``: on CUDA ``gpu_step`` (CUDA
graph) when exported, else ``step``; everywhere else fused ``sampler``. On CPU stepwise and fused measured
as a tie (``bench/bench_runtime.py``, onnxruntime 1.32, one thread: 0.94x-1.06x for a conv net and the
2-D toy at batch 1/16/64), so the single fused call, which is also a graph the Node, browser and C hosts
can run, is the default. A per-step callback always means stepwise: the fused graphs run every step inside
one onnxruntime call and cannot stop for it.

diffusers' pipeline conventions hold too (diffusers-ncsn's ``NCSNPipeline`` is the seed): ``callback_on_step_end``
with ``callback_on_step_end_tensor_inputs`` (:mod:`ncsn_runtime.callbacks`), :meth:`NCSNPipeline.to`,
``set_progress_bar_config`` / ``progress_bar``, ``decode_samples`` / ``numpy_to_pil``, and ``generator=`` objects
with ``initial_seed()`` such as ``torch.Generator`` (:mod:`ncsn_runtime.conventions`).

This module holds the pipeline's choices and its public API; sessions and steppers live in
:mod:`ncsn_runtime.sessions`, the sampling modes in :mod:`ncsn_runtime.sampling` and the inpainting flow in
:mod:`ncsn_runtime.inpaint`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .callbacks import CALLBACK_TENSOR_INPUTS, Callback, callback_tensor_inputs, make_step_hook
from .contract import GRAPH_NAMES, GRAPHS, SAMPLING_GRAPHS
from .conventions import check_progress_bar_config, generator_seeds, parse_device
from .conventions import progress_bar as make_progress_bar
from .errors import ExportDirectoryError
from .manifest import Manifest, parse_manifest, read_manifest
from .noise import MAX_SEED, initial_sample, seeds_for_batch
from .ort_format import check_graph_format, ort_manifest
from .providers import Device, ProviderError, resolve_device
from .sampling import StepHook, run_fused, run_stepwise
from .schedule import check_count
from .scheduler import AnnealedLangevinDynamicsScheduler
from .sessions import STEP_GRAPHS, GraphSessions, check_graph_output, graph_run_errors

__all__ = ["Callback", "NCSNPipeline", "NCSNPipelineOutput", "RunInfo", "check_graph_output", "graph_run_errors",
           "load_scheduler"]

logger = logging.getLogger("ncsn_runtime")

MAX_BATCH_BYTES = 2 << 30  # one call holds a few float32 [B, *sample_shape] arrays: at most 2 GiB each (SECURITY.md)

MODES = ("auto", "fused", "stepwise")
OUTPUT_TYPES = ("pil", "np", "raw")
FUSED_GRAPHS = ("sampler", "gpu_sampler")
STEPWISE_GRAPHS = ("auto", *STEP_GRAPHS)  # choices of from_pretrained(stepwise_graph=...)
SAMPLER_INPUTS = GRAPHS["sampler"].input_names


@dataclass
class NCSNPipelineOutput:
    """Like diffusers' ``ImagePipelineOutput``.

    Attributes:
        images: list of PIL images (``output_type="pil"``), float32 [B, H, W, C] in [0, 1] (``"np"``),
            or the raw samples float32 [B, *sample_shape] (``"raw"``, and always for non-image models).
        seeds: int64 [B], the per-sample seeds used (reproduce a sample with ``seed=[seeds[b]]``).
    """

    images: Any
    seeds: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __getitem__(self, index: int) -> Any:
        return (self.images,)[index]


@dataclass
class RunInfo:
    """What the last call did (for logs, the CLI and benchmarks)."""

    mode: str
    engine: str
    provider: str
    batch_size: int
    num_inference_steps: int
    num_annealed_steps: int
    seconds: float
    graph: str = ""  # contract key of the graph that ran (score, step, sampler, gpu_step, gpu_sampler)


class NCSNPipeline:
    """Annealed Langevin sampling from an ``ncsn-export`` directory on onnxruntime.

    Build it with :meth:`from_pretrained`. Attributes: ``scheduler`` (the numpy
    :class:`~ncsn_runtime.scheduler.AnnealedLangevinDynamicsScheduler`), ``manifest``, ``device``,
    ``provider``, ``sample_shape``, ``is_image``, ``init_range``, ``data_range``, ``final_denoise``,
    ``last_run`` (:class:`RunInfo`).
    """

    _callback_tensor_inputs: ClassVar[list[str]] = list(CALLBACK_TENSOR_INPUTS)  # allowed tensor input names

    def __init__(
        self,
        export_dir: str | Path,
        manifest: dict[str, Any] | Manifest,
        scheduler: AnnealedLangevinDynamicsScheduler,
        device: Device,
        sessions: dict[str, Any],
        *,
        stepwise_graph: str = "auto",
        cuda_graph: bool = True,
        intra_op_threads: int | None = None,
        graph_paths: dict[str, Path] | None = None,
    ) -> None:
        if stepwise_graph not in STEPWISE_GRAPHS:
            raise ValueError(f"`stepwise_graph` must be one of {STEPWISE_GRAPHS}, got {stepwise_graph!r}")
        self.export_dir = Path(export_dir)
        self.info = manifest if isinstance(manifest, Manifest) else parse_manifest(self.export_dir, manifest)
        self.manifest = self.info.raw
        check_scheduler_matches(self.info, scheduler)
        self.scheduler = scheduler
        self.stepwise_graph = stepwise_graph
        self.graphs = GraphSessions(self.info, device, sessions=sessions, graph_paths=graph_paths, cuda_graph=cuda_graph,
                                    intra_op_threads=intra_op_threads)
        self.last_run: RunInfo | None = None
        self._progress_bar_config: dict[str, Any] = {}
        model = self.info.model  # checked by the manifest reader (shape, ranges, dtype, limits)
        self.sample_shape = model.sample_shape
        self.is_image = model.is_image
        self.init_range = model.init_range
        self.data_range = model.data_range
        self.final_denoise = model.final_denoise

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        export_dir: str | Path,
        provider: str = "auto",
        *,
        device_id: int = 0,
        stepwise_graph: str = "auto",
        cuda_graph: bool = True,
        intra_op_threads: int | None = None,
        graph_format: str = "onnx",
        export: bool = False,
        cache_dir: str | Path | None = None,
        export_options: dict[str, Any] | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
    ) -> NCSNPipeline:
        """Open an export directory (or a diffusers-ncsn folder or Hub id: see :mod:`ncsn_runtime.pretrained`).

        Args:
            export_dir: directory written by ``ncsn-export`` (``manifest.json`` at its top), a diffusers-ncsn
                pipeline folder (with ``export=True``) or a Hugging Face Hub id of either.
            provider: ``"auto"`` (CUDA when usable, else CPU; logged), ``"cpu"`` or ``"cuda"`` (an error
                when CUDA is not usable).
            device_id: CUDA device ordinal.
            stepwise_graph: which graph ``mode="stepwise"`` drives: ``"step"`` (``step.onnx``, IO binding),
                ``"gpu_step"`` (host noise + IO binding), ``"score"`` (``score.onnx`` + numpy scheduler) or
                ``"auto"`` (see the module docstring). ``graph=`` of a call overrides it.
            cuda_graph: capture the stepwise step (``gpu_step`` / ``step``) as a CUDA graph on CUDA (falls back
                to IO binding without it, logged once, if onnxruntime cannot capture it).
            intra_op_threads: onnxruntime threads per operator (``None``: its default).
            graph_format: ``"onnx"`` (the graphs) or ``"ort"`` (their ORT-format models ``ort/KEY.ort``, made with
                ``--artifacts ort``; only the graphs that have one; :mod:`ncsn_runtime.ort_format`).
            export: export a diffusers-ncsn folder on first use (``ncsn_export.exporters.export_model``, needs torch)
                and cache it; later loads open the cache. ``export_options``: ``export_model`` keyword arguments.
            cache_dir: the export cache (default ``$XDG_CACHE_HOME/ncsn-export`` or ``~/.cache/ncsn-export``).
            revision, local_files_only: for a Hub id, passed to ``huggingface_hub.snapshot_download``.

        Every graph (and its external-data files) and the scheduler config are checked against the
        manifest's sha256 here; sessions open on first use (only a CUDA probe opens one now).
        """
        from .pretrained import resolve_pretrained

        root = resolve_pretrained(export_dir, export=export, cache_dir=cache_dir, export_options=export_options,
                                  revision=revision, local_files_only=local_files_only)
        graph_format = check_graph_format(graph_format)
        manifest = read_manifest(root)
        if graph_format == "ort":
            manifest = ort_manifest(manifest)
        scheduler = load_scheduler(manifest)
        graphs = {name: manifest.graph_path(name) for name in GRAPH_NAMES if name in manifest.graphs}
        if not graphs:
            raise ExportDirectoryError(f"{root / 'manifest.json'} lists none of the graphs {', '.join(GRAPH_NAMES)}")
        probe = next(iter(graphs))
        device, session = resolve_device(provider, graphs[probe], device_id)
        return cls(root, manifest, scheduler, device, {probe: session} if session is not None else {},
                   stepwise_graph=stepwise_graph, cuda_graph=cuda_graph, intra_op_threads=intra_op_threads, graph_paths=graphs)

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write this export directory, checked file by file, plus a Hub model card ``README.md``, atomically to
        ``save_directory`` (:func:`ncsn_runtime.pretrained.save_pretrained`); returns it."""
        from .pretrained import save_pretrained

        return save_pretrained(self, save_directory)

    # -- sessions (ncsn_runtime.sessions.GraphSessions) ---------------------------------------------
    @property
    def device(self) -> Device:
        """Where the graphs run (:class:`~ncsn_runtime.providers.Device`)."""
        return self.graphs.device

    @device.setter
    def device(self, device: Device | str | Any) -> None:
        """A :class:`Device` is taken as it is (sessions are reopened on first use); anything else goes through :meth:`to`."""
        if isinstance(device, str) or not hasattr(device, "is_cuda"):
            self.to(device)
        elif device != self.graphs.device:
            self.graphs.use_device(device)

    def to(self, device: Any) -> NCSNPipeline:
        """Run on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``, or anything whose ``str()`` is one of them, such as a
        ``torch.device``): switches onnxruntime's execution provider; returns the pipeline, as diffusers' ``to``.

        CUDA is checked by opening a session on it: a :class:`~ncsn_runtime.providers.ProviderError` says why it is
        not usable (and the pipeline stays where it was). Open sessions are dropped and reopened on first use.
        """
        kind, device_id = parse_device(device)
        target = Device(kind, device_id)
        if target == self.graphs.device:
            return self
        sessions = {}
        if target.is_cuda:
            probe = next(iter(name for name in GRAPH_NAMES if self.has_graph(name)))
            try:
                _, session = resolve_device("cuda", self.graph_path(probe), device_id)
            except ProviderError as error:
                raise ProviderError(f"pipe.to({str(device)!r}): CUDA is not usable: {error}") from None
            sessions = {probe: session}
        self.graphs.use_device(target, sessions)
        logger.info("provider: %s (pipe.to(%r))", target.provider, str(device))
        return self

    # -- diffusers' DiffusionPipeline helpers ------------------------------------------------------
    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """tqdm options for every progress bar of this pipeline (e.g. ``disable=True``), as in diffusers; each call
        replaces the last. A ``TypeError`` names options tqdm does not take."""
        self._progress_bar_config = check_progress_bar_config(kwargs)

    def progress_bar(self, iterable: Any = None, total: int | None = None) -> Any:
        """A tqdm bar over ``iterable`` (or of ``total`` steps) with :meth:`set_progress_bar_config`'s options."""
        return make_progress_bar(iterable, total, self._progress_bar_config)

    def decode_samples(self, samples: Any) -> np.ndarray:
        """Samples float [B, *sample_shape] in the model's data range -> float32 [B, H, W, C] in [0, 1].

        The decode of the pipeline's own images (``output_type="np"``; ``"pil"`` is :meth:`numpy_to_pil` of it): the
        data range maps linearly onto [0, 1], then clips. The seed min-max normalises each image instead, which
        stretches a noisy early sample and a finished digit differently (and divides by zero on a flat image).
        """
        if not self.is_image:
            raise ValueError(f"decode_samples needs image samples; this export's sample_shape {self.sample_shape} is not an "
                             "image (use the raw samples)")
        array = np.asarray(samples)
        if array.dtype.kind != "f" or array.shape[1:] != self.sample_shape or array.ndim != len(self.sample_shape) + 1:
            raise ValueError(f"`samples` must be floating [B, {', '.join(map(str, self.sample_shape))}], got {array.dtype} "
                             f"{array.shape}")
        from .images import to_numpy_images

        return to_numpy_images(array.astype(np.float32, copy=False), self.data_range)

    @staticmethod
    def numpy_to_pil(images: Any) -> list[Any]:
        """float [B, H, W, C] (or one [H, W, C]) in [0, 1] -> PIL images: mode ``"L"`` for one channel, ``"RGB"`` for
        three, ``"RGBA"`` for four (values are clipped, then rounded to 8 bits as the pipeline's own images)."""
        from .images import to_pil_images

        array = np.asarray(images)
        array = array[None] if array.ndim == 3 else array
        if array.dtype.kind != "f" or array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
            raise ValueError(f"`images` must be floating [B, H, W, C] in [0, 1] with C in (1, 3, 4), got {array.dtype} "
                             f"{array.shape}")
        return to_pil_images(array)

    @property
    def provider(self) -> str:
        """onnxruntime's name of the execution provider in use."""
        return self.device.provider

    @property
    def cuda_graph(self) -> bool:
        """Whether stepwise steps are captured as CUDA graphs on CUDA."""
        return self.graphs.cuda_graph

    @property
    def cuda_graph_error(self) -> str | None:
        """The last CUDA-graph capture failure (``None``: none)."""
        return self.graphs.cuda_graph_error

    @property
    def intra_op_threads(self) -> int | None:
        return self.graphs.intra_op_threads

    def has_graph(self, name: str) -> bool:
        return self.graphs.has_graph(name)

    def session(self, name: str) -> Any:
        """The onnxruntime session of graph ``name`` (a contract key, e.g. ``sampler``), opened once."""
        return self.graphs.session(name)

    def graph_path(self, name: str) -> Path:
        """Path of graph ``name`` after its sha256 check (done once per pipeline)."""
        return self.graphs.graph_path(name)

    def stepper(self, batch_size: int, graph: str | None = None) -> Any:
        """The stepwise engine of ``graph`` (``step``, ``gpu_step`` or ``score``; ``None``: the stepwise default)
        for ``batch_size``, created once per graph and batch size and reused."""
        return self.graphs.stepper(graph or self._stepwise_graph(), batch_size, self.scheduler)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(export_dir={str(self.export_dir)!r}, provider={self.provider!r}, "
                f"sample_shape={self.sample_shape}, graphs={self.graphs.names})")

    # -- choices ------------------------------------------------------------------------------------
    def choose_mode(self, mode: str = "auto", callback: Callback | None = None) -> str:
        """Resolve ``mode`` to ``"fused"`` or ``"stepwise"`` (see the module docstring for the auto rule)."""
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        can_fuse = any(self.has_graph(name) for name in FUSED_GRAPHS)
        can_step = any(self.has_graph(name) for name in STEP_GRAPHS)
        if mode == "fused":
            if not can_fuse:
                raise ExportDirectoryError(f"mode='fused' needs sampler.onnx or gpu_sampler.onnx, which {self.export_dir} lacks")
            if callback is not None:
                raise ValueError("`callback_on_step_end` needs mode='stepwise' (the fused graph runs every step in one call)")
            return "fused"
        if mode == "stepwise":
            if not can_step:
                raise ExportDirectoryError(f"mode='stepwise' needs step.onnx, gpu_step.onnx or score.onnx, which "
                                           f"{self.export_dir} lacks")
            return "stepwise"
        cuda_step = self.device.is_cuda and (self.has_graph("gpu_step") or self.has_graph("step"))
        if callback is not None or not can_fuse or cuda_step:
            if not can_step:
                raise ExportDirectoryError(f"{self.export_dir} has none of step.onnx, gpu_step.onnx, score.onnx for "
                                           "stepwise sampling")
            return "stepwise"
        return "fused"

    def choose_graph(self, mode: str = "auto", graph: str | None = None, callback: Callback | None = None) -> str:
        """The contract key of the graph a call runs: ``graph`` itself (checked against ``mode``) or chosen from ``mode``.

        ``graph`` and a ``mode`` other than ``"auto"`` must agree: ``sampler`` / ``gpu_sampler`` are fused,
        ``step`` / ``gpu_step`` / ``score`` stepwise (a ``ValueError`` says so otherwise).
        """
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        if graph is None:
            if self.choose_mode(mode, callback) == "fused":
                return "sampler" if self.has_graph("sampler") else "gpu_sampler"
            return self._stepwise_graph()
        if graph not in SAMPLING_GRAPHS:
            raise ValueError(f"`graph` must be one of {', '.join(SAMPLING_GRAPHS)}, got {graph!r}"
                             + (" (inpaint.onnx runs through pipe.inpaint)" if graph == "inpaint" else ""))
        if not self.has_graph(graph):
            raise ExportDirectoryError(f"graph={graph!r} needs {GRAPHS[graph].file}, which {self.export_dir} does not have "
                                       f"(graphs: {self.graphs.names})")
        kind = "fused" if graph in FUSED_GRAPHS else "stepwise"
        if mode != "auto" and mode != kind:
            raise ValueError(f"mode={mode!r} conflicts with graph={graph!r}, a {kind} graph: pass graph alone (mode is only "
                             "a shorthand: fused = sampler, stepwise = step)")
        if callback is not None and kind == "fused":
            raise ValueError(f"`callback_on_step_end` needs a stepwise graph (step, gpu_step, score); {graph} runs every step "
                             "in one call")
        return graph

    def _stepwise_graph(self) -> str:
        """The stepwise graph for mode 'stepwise' / 'auto' (``stepwise_graph`` option, else the rule in the module docstring)."""
        if self.stepwise_graph != "auto":
            if not self.has_graph(self.stepwise_graph):
                raise ExportDirectoryError(f"stepwise_graph={self.stepwise_graph!r} needs {GRAPHS[self.stepwise_graph].file}, "
                                           f"which {self.export_dir} does not have")
            return self.stepwise_graph
        order = ("gpu_step", "step") if self.device.is_cuda else ("step", "gpu_step")
        return next((name for name in order if self.has_graph(name)), "score")

    # -- sampling -----------------------------------------------------------------------------------
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int | None = None,
        seed: int | Sequence[int] | None = None,
        generator: np.random.Generator | Any | None = None,
        mode: str = "auto",
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callback | None = None,
        progress: bool = True,
        graph: str | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> NCSNPipelineOutput | tuple[Any]:
        """Draw ``batch_size`` samples.

        Args:
            batch_size: number of samples B >= 1.
            num_inference_steps: noise levels to anneal through, in [1, num_train_timesteps] (``None``: all).
            seed: int (sample b gets ``seed + b``) or a list of B per-sample seeds in [0, 2**63 - 1].
            generator: ``numpy.random.Generator`` drawing the B seeds, or an object with ``initial_seed()``
                (``torch.Generator``: the samples of ``seed=generator.initial_seed()``; torch is not imported and
                its random stream is not used: the noise is the runtime's counter-based noise, the same on every
                host), or a list of B such objects (one seed each). Exclusive with ``seed``; with neither, seeds
                are random and returned in ``output.seeds``.
            mode: ``"fused"``, ``"stepwise"`` or ``"auto"``.
            output_type: ``"pil"``, ``"np"`` ([B, H, W, C] in [0, 1]) or ``"raw"`` (model space);
                non-image models always return raw samples.
            return_dict: return :class:`NCSNPipelineOutput` (else a 1-tuple).
            callback_on_step_end: ``f(pipe, step_index, timestep, callback_kwargs) -> dict | None`` after every
                Langevin step, or an object with ``tensor_inputs`` and ``__call__`` (diffusers'
                ``PipelineCallback``). ``step_index`` is the annealed step within the level, ``timestep`` the
                level; ``callback_kwargs`` holds ``samples`` (float32 [B, *sample_shape]) and ``sample``,
                ``position``, ``annealed_step``, ``sigma``, ``global_step``; a returned ``{"samples": x}``
                replaces the state (checked: shape, floating dtype, finite). See :mod:`ncsn_runtime.callbacks`.
                A callback forces stepwise sampling: the fused graphs cannot stop between steps
                (``mode="fused"`` or a fused ``graph`` with a callback is a ``ValueError``).
            progress: show a tqdm progress bar (options: :meth:`set_progress_bar_config`).
            graph: the graph to run, a contract key: ``"sampler"``, ``"gpu_sampler"`` (fused), ``"step"``,
                ``"gpu_step"``, ``"score"`` (stepwise); ``None``: chosen from ``mode``. Every graph gives the
                same samples for the same seeds.
            callback_on_step_end_tensor_inputs: tensors to put in ``callback_kwargs``; only names in
                ``_callback_tensor_inputs`` (``["samples"]``, the default), else a ``ValueError`` listing the others.
        """
        tensor_inputs = self._callback_inputs(callback_on_step_end, callback_on_step_end_tensor_inputs)
        batch_size = self._check_batch(batch_size)
        seeds = self._seeds(seed, generator, batch_size)
        timesteps, sigmas, step_sizes = self._schedule(num_inference_steps)
        chosen = self.choose_graph(mode, graph, callback_on_step_end)
        check_output_type(output_type)
        x = initial_sample(seeds, self.sample_shape, *self.init_range)
        start = time.perf_counter()
        with graph_run_errors(self.export_dir):
            if chosen in FUSED_GRAPHS:
                samples = run_fused(self.graphs, chosen, x, seeds, timesteps, step_sizes, self.scheduler.num_annealed_steps,
                                    progress, bar_config=self._progress_bar_config)
                engine = f"{self.info.graphs[chosen].file} (fused Loop)"  # ort/sampler.ort with graph_format="ort"
            else:
                after_step = None
                if callback_on_step_end is not None:
                    after_step = self._callback_hook(callback_on_step_end, timesteps, sigmas, tensor_inputs)
                samples, engine = self._run_stepwise(x, seeds, timesteps, step_sizes, progress, after_step=after_step,
                                                     graph=chosen)
        self.last_run = RunInfo("fused" if chosen in FUSED_GRAPHS else "stepwise", engine, self.provider, batch_size,
                                len(timesteps), self.scheduler.num_annealed_steps, time.perf_counter() - start, chosen)
        images = self._postprocess(samples, output_type)
        return NCSNPipelineOutput(images, seeds) if return_dict else (images,)

    def inpaint(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        seed: int | Sequence[int] | None = None,
        generator: np.random.Generator | Any | None = None,
        batch_size: int | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callback | None = None,
        progress: bool = True,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        mode: str = "auto",
    ) -> NCSNPipelineOutput | tuple[Any]:
        """Fill the unknown region of ``image`` (Song & Ermon 2019, Algorithm 2; see :mod:`ncsn_runtime.inpaint`).

        Args:
            image: float [*sample_shape] or [B, *sample_shape] in the model's data range.
            mask: 1 = known, 0 = fill (only 0 and 1, some of each per sample); any shape broadcasting to
                [B, *sample_shape] (e.g. [H, W]).
            batch_size: B (``None``: the image's batch, else 1); each sample is a different completion.
            mode: ``"fused"`` (one call of ``inpaint.onnx``), ``"stepwise"`` (the stepwise graph, Python hooks) or
                ``"auto"`` (fused when the export has ``inpaint.onnx``, there is no callback and the device is the CPU;
                on CUDA stepwise, as sampling's auto); both give the same
                samples for the same seeds; ``last_run.mode`` says which ran.
            Other arguments as in :meth:`__call__`. The returned samples hold ``image`` itself in the known
            region (Algorithm 2 leaves ``image + sigma_L * z`` there).
        """
        from .inpaint import inpaint

        return inpaint(self, image, mask, seed=seed, generator=generator, batch_size=batch_size,
                       num_inference_steps=num_inference_steps, output_type=output_type, return_dict=return_dict,
                       callback_on_step_end=callback_on_step_end, progress=progress,
                       callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, mode=mode)

    # -- internals (shared with ncsn_runtime.inpaint) ------------------------------------------------
    def _check_batch(self, batch_size: Any) -> int:
        """B in [1, the largest batch whose samples fit in MAX_BATCH_BYTES]."""
        per_sample = 4 * math.prod(self.sample_shape)
        return check_count("batch_size", batch_size, 1, max(1, MAX_BATCH_BYTES // per_sample))

    def _seeds(self, seed: Any, generator: Any, batch_size: int) -> np.ndarray:
        if seed is not None and generator is not None:
            raise ValueError("pass `seed` or `generator`, not both")
        if seed is not None:
            return seeds_for_batch(seed, batch_size)
        if generator is not None and not isinstance(generator, np.random.Generator):
            return generator_seeds(generator, batch_size)  # torch.Generator & co.: seed=generator.initial_seed()
        rng = generator if generator is not None else np.random.default_rng()
        return rng.integers(0, MAX_SEED, size=batch_size, dtype=np.int64, endpoint=True)

    def _schedule(self, num_inference_steps: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        levels = self.scheduler.num_train_timesteps
        count = levels if num_inference_steps is None else num_inference_steps
        try:
            count = check_count("num_inference_steps", count, 1, levels)
        except ValueError as error:
            raise ValueError(f"{error} (this export was trained on {levels} noise levels)") from None
        self.scheduler.set_timesteps(count)
        return self.scheduler.schedule_arrays()

    def _callback_inputs(self, callback: Callback | None, tensor_inputs: Sequence[str] | None) -> list[str]:
        """The tensor names the callback gets (checked against ``_callback_tensor_inputs``; see :mod:`ncsn_runtime.callbacks`)."""
        if callback is None and tensor_inputs is None:
            return []
        return callback_tensor_inputs(callback, tensor_inputs, self._callback_tensor_inputs)

    def _callback_hook(self, callback: Callback, timesteps: np.ndarray, sigmas: np.ndarray,
                       tensor_inputs: Sequence[str] | None = None) -> StepHook:
        """The stepwise ``after_step`` hook that calls ``callback`` (:func:`ncsn_runtime.callbacks.make_step_hook`)."""
        names = self._callback_inputs(callback, tensor_inputs)
        return make_step_hook(self, callback, names, timesteps, sigmas, self.scheduler.num_annealed_steps)

    def _run_stepwise(self, x: np.ndarray, seeds: np.ndarray, timesteps: np.ndarray, step_sizes: np.ndarray, progress: bool,
                      before_level: StepHook | None = None, after_step: StepHook | None = None,
                      graph: str | None = None) -> tuple[np.ndarray, str]:
        """Stepwise sampling through ``graph`` (``None``: the stepwise default); (samples, engine name)."""
        graph = graph or self._stepwise_graph()
        if self.final_denoise and graph != "gpu_step" and not self.has_graph("score"):
            raise ExportDirectoryError(f"this export applies a final denoising step, which {graph}.onnx needs score.onnx "
                                       f"or gpu_step.onnx for ({self.export_dir})")
        stepper = self.stepper(len(x), graph)
        sigma = self.scheduler.train_sigmas[int(timesteps[-1])] if self.final_denoise else None
        samples = run_stepwise(self.graphs, stepper, x, seeds, timesteps, step_sizes, self.scheduler.num_annealed_steps,
                               progress, final_denoise_sigma=sigma, before_level=before_level, after_step=after_step,
                               bar_config=self._progress_bar_config)
        return samples, stepper.kind

    def _postprocess(self, samples: np.ndarray, output_type: str) -> Any:
        if output_type == "raw" or not self.is_image:
            return samples
        images = self.decode_samples(samples)
        return images if output_type == "np" else self.numpy_to_pil(images)


def check_output_type(output_type: str) -> None:
    """``output_type`` must be one of :data:`OUTPUT_TYPES` (``ValueError`` otherwise)."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")


def load_scheduler(manifest: Manifest) -> AnnealedLangevinDynamicsScheduler:
    """The export's numpy scheduler: the manifest's ``scheduler_config`` (listed, sha256-checked), parsed and range-checked,
    and matching the graphs' levels (:func:`check_scheduler_matches`). Every reader of an export uses this one."""
    config_file = manifest.verified_path(manifest.scheduler_config)
    try:
        scheduler = AnnealedLangevinDynamicsScheduler.from_pretrained(config_file)
    except (ValueError, TypeError) as error:
        raise ExportDirectoryError(f"{config_file}: {error}") from None
    check_scheduler_matches(manifest, scheduler)
    return scheduler


def check_scheduler_matches(manifest: Manifest, scheduler: AnnealedLangevinDynamicsScheduler) -> None:
    """The scheduler config must describe the levels the network was exported with."""
    levels = manifest.model.num_train_timesteps
    if levels is not None and levels != scheduler.num_train_timesteps:
        raise ExportDirectoryError(f"{manifest.scheduler_config} has num_train_timesteps={scheduler.num_train_timesteps} but "
                                   f"the graphs were exported for {levels} noise levels ({manifest.path})")
    validated = manifest.raw.get("validation_schedule", {})
    timesteps = validated.get("timesteps") if isinstance(validated, dict) else None
    if isinstance(timesteps, list) and any(not isinstance(t, int) or not 0 <= t < scheduler.num_train_timesteps
                                           for t in timesteps):
        raise ExportDirectoryError(f"{manifest.path}: validation_schedule.timesteps {timesteps[:10]} are not levels of the "
                                   f"scheduler config's {scheduler.num_train_timesteps} noise levels")
