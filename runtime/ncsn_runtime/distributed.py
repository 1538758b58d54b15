"""Batch generation on a Ray cluster (Ray Data), with the same samples as one process.

Sample ``n`` always uses seed ``S + n``, and a sample depends only on its seed (counter-based noise), so
the result equals ``ncsn-sample --engine local`` for any number of workers and any split of the work.

The work is a list of items ``(start, count)``: one item per shard (a shard directory) or per chunk (one
``.npy``). Ray Data maps them with :class:`SamplerActor`, a callable class that opens the export
(``NCSNPipeline.from_pretrained``: manifest check + onnxruntime session) once per actor; ``concurrency``
sets the number of actors and ``num_gpus`` / ``num_cpus`` what each one holds. The samples stream back
to the driver, which shows the progress and writes them:

* ``OUT.npy``: float32 [N, *sample_shape], written atomically at the end (modest N: it is held in memory).
* ``OUT/`` (a directory): fixed-size shards ``shard-000000.npy`` ... of float32 [shard_size, ...] (the last
  one shorter) plus ``index.json``. Each shard is written atomically (temp + rename) as soon as all its
  samples arrived, so a killed job leaves only whole shards; a rerun with the same arguments skips
  the shards already on disk and generates only the missing ones (nothing lost, nothing doubled).

A worker that dies mid-item is restarted by Ray (``max_restarts``) and the item is retried
(``max_task_retries``); output is only committed when an item succeeds, and the driver checks that every
sample index arrived exactly once.

What can be checked is checked on the driver before any work is dispatched (:func:`preflight`: the export and
every graph's sha256, the ``mode`` / ``graph`` pair, the level count, GPUs the cluster does not have). An error
raised inside a worker all the same (onnxruntime, a provider, a NaN sample) reaches the caller as one
:class:`WorkerError` naming the worker's exception and its message, never Ray's 60-line traceback.

``ray`` is imported only when a function here runs: ``import ncsn_runtime`` never needs it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import check_ranges
from .fileio import confined_path, read_json_object, write_json_atomic
from .images import save_npy
from .manifest import MANIFEST_NAME
from .noise import MAX_SEED
from .schedule import check_count
from .verify import sha256_file

logger = logging.getLogger("ncsn_runtime")

INDEX_NAME = "index.json"
INDEX_FORMAT = "ncsn-sample-shards"
INDEX_VERSION = 1
SHARD_PATTERN = "shard-{:06d}.npy"
DEFAULT_SHARD_SIZE = 10_000
DEFAULT_MAX_RETRIES = 3
# Identity of a shard directory: a rerun must use the same values, or its shards would mix two jobs.
IDENTITY_KEYS = ("export_manifest_sha256", "seed", "num_samples", "shard_size", "sample_shape", "num_inference_steps", "mode",
                 "graph")


class WorkerError(RuntimeError):
    """An error raised inside a Ray worker, as one line: ``ErrorType: message`` of the worker's own exception.

    ``exit_code`` is what ``ncsn-sample`` exits with: 1 for a NaN/inf sample (as the local engine), else 2.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# the first line of a formatted traceback that names an exception: "pkg.mod.ValueError: text" (Ray's own excluded)
_EXCEPTION_LINE = re.compile(r"^(?!ray\.)((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.+)$",
                             re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def worker_error(error: BaseException) -> WorkerError:
    """The one-line :class:`WorkerError` of an exception Ray raised for a failed worker (task or actor creation).

    Ray keeps the worker's exception only as formatted text (its ``RayTaskError`` / ``ActorDiedError`` message
    holds the remote traceback); the first exception line in it that is not Ray's own is the cause.
    """
    text = _ANSI.sub("", str(error))
    match = _EXCEPTION_LINE.search(text)
    if match is None:
        first = next((line.strip() for line in text.splitlines() if line.strip() and not line.startswith("ray::")), "")
        return WorkerError(f"a Ray worker failed: {type(error).__name__}: {first[:500] or 'no message'}")
    name, message = match.group(2), " ".join(match.group(3).split())
    return WorkerError(f"a Ray worker failed: {name}: {message[:2000]}", exit_code=1 if name == "NonFiniteSampleError" else 2)


def _is_ray_error(error: BaseException) -> bool:
    return any(cls.__module__.startswith("ray.") for cls in type(error).__mro__)


def preflight(export_dir: Path, mode: str, graph: str | None, num_inference_steps: int | None) -> Any:
    """The checks a worker would fail on, done once on the driver before dispatch; returns the (session-less) pipeline.

    Opens the export on the CPU provider without sessions (manifest, scheduler config and every graph's sha256, as
    :meth:`NCSNPipeline.from_pretrained`), checks the ``mode`` / ``graph`` pair and the level count.
    """
    from .pipeline import NCSNPipeline

    pipe = NCSNPipeline.from_pretrained(export_dir, provider="cpu")
    pipe.choose_graph(mode, graph)
    levels = pipe.scheduler.num_train_timesteps
    if num_inference_steps is not None:
        try:
            check_count("num_inference_steps", num_inference_steps, 1, levels)
        except ValueError as error:
            raise ValueError(f"{error} (this export was trained on {levels} noise levels)") from None
    return pipe


@contextlib.contextmanager
def _quiet_ray_logs(enabled: bool):
    """Ray Data logs a failed UDF's full stack trace at ERROR (and its progress at INFO): off, the error is ours to show."""
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@dataclass(frozen=True)
class WorkItem:
    """Samples ``start .. start + count - 1`` (seeds ``seed + start ..``); ``shard`` is the shard index or -1."""

    start: int
    count: int
    shard: int = -1


def import_ray() -> Any:
    """``import ray`` with an install hint (the ``ray`` extra) when it is missing."""
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise ImportError("--engine ray needs Ray Data: pip install 'ncsn-export[ray]' (or 'ray[data]')") from error
    return ray


def split_work(num_samples: int, item_size: int, shard: bool = False) -> list[WorkItem]:
    """Cut ``[0, num_samples)`` into items of ``item_size`` (the last shorter); shard items carry their index."""
    return [WorkItem(start, min(item_size, num_samples - start), index if shard else -1)
            for index, start in enumerate(range(0, num_samples, item_size))]


class SamplerActor:
    """Ray Data callable class: opens the export once per actor and samples the items of each batch.

    Batch in: ``{"start": i64[k], "count": i64[k]}``. Batch out: ``{"index": i64[m], "sample": f32[m, ...]}``
    with ``m = sum(count)``; sample ``index`` uses seed ``seed + index``.
    """

    def __init__(self, export_dir: str, seed: int, num_inference_steps: int | None, mode: str, provider: str,
                 batch_size: int | None, intra_op_threads: int | None, graph: str | None = None) -> None:
        from .pipeline import NCSNPipeline

        self.pipe = NCSNPipeline.from_pretrained(export_dir, provider=provider, intra_op_threads=intra_op_threads)
        self.seed, self.num_inference_steps, self.mode, self.batch_size = seed, num_inference_steps, mode, batch_size
        self.extra = {"graph": graph} if graph is not None else {}  # NCSNPipeline.__call__(graph=...) (contract key)

    def sample(self, start: int, count: int) -> np.ndarray:
        """Samples ``start .. start + count - 1`` as float32 [count, *sample_shape], in runs of ``batch_size``."""
        step = self.batch_size or count
        chunks = []
        for offset in range(start, start + count, step):
            size = min(step, start + count - offset)
            output = self.pipe(batch_size=size, seed=self.seed + offset, num_inference_steps=self.num_inference_steps,
                               mode=self.mode, output_type="raw", progress=False, **self.extra)
            chunks.append(np.asarray(output.images, dtype=np.float32))
        return np.concatenate(chunks)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        starts, counts = (np.asarray(batch[key], dtype=np.int64) for key in ("start", "count"))
        indices = np.concatenate([np.arange(s, s + c, dtype=np.int64) for s, c in zip(starts, counts, strict=True)])
        samples = np.concatenate([self.sample(int(s), int(c)) for s, c in zip(starts, counts, strict=True)])
        return {"index": indices, "sample": samples}


class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, initial=initial, desc="ncsn ray", unit="sample")

    def update(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ArraySink:
    """Collects samples into one float32 [N, ...] array and checks every index arrives exactly once."""

    def __init__(self, num_samples: int, sample_shape: Sequence[int]) -> None:
        self.samples = np.empty((num_samples, *sample_shape), dtype=np.float32)
        self.seen = np.zeros(num_samples, dtype=np.int64)

    def add(self, indices: np.ndarray, samples: np.ndarray) -> None:
        self.samples[indices] = samples
        np.add.at(self.seen, indices, 1)

    def check(self) -> None:
        _check_seen(self.seen)


class ShardSink:
    """Writes each shard atomically once all its samples arrived (``root/shard-XXXXXX.npy``)."""

    def __init__(self, root: Path, items: Iterable[WorkItem], shard_size: int, sample_shape: Sequence[int]) -> None:
        self.root, self.shard_size, self.sample_shape = root, shard_size, tuple(sample_shape)
        self.pending = {item.shard: item for item in items}
        self.buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.written: list[int] = []

    def add(self, indices: np.ndarray, samples: np.ndarray) -> None:
        shards = indices // self.shard_size
        for shard in np.unique(shards):
            item = self.pending.get(int(shard))
            if item is None:
                raise RuntimeError(f"samples of shard {int(shard)} arrived, which was not scheduled or is already written")
            if item.shard not in self.buffers:
                empty = np.empty((item.count, *self.sample_shape), np.float32)
                self.buffers[item.shard] = (empty, np.zeros(item.count, np.int64))
            buffer, seen = self.buffers[item.shard]
            mine = shards == shard
            local = indices[mine] - item.start
            buffer[local] = samples[mine]
            np.add.at(seen, local, 1)
            if seen.sum() >= item.count:
                _check_seen(seen, offset=item.start)
                save_npy(buffer, self.root / SHARD_PATTERN.format(item.shard))
                del self.buffers[item.shard], self.pending[item.shard]
                self.written.append(item.shard)

    def check(self) -> None:
        if self.pending:
            raise RuntimeError(f"shards {sorted(self.pending)[:10]} are incomplete after the job finished")


def _check_seen(seen: np.ndarray, offset: int = 0) -> None:
    missing, doubled = np.flatnonzero(seen == 0), np.flatnonzero(seen > 1)
    if len(missing) or len(doubled):
        raise RuntimeError(f"samples missing {(missing + offset)[:10].tolist()} / doubled {(doubled + offset)[:10].tolist()}: "
                           "the distributed job lost or repeated work")


# -- shard directory ------------------------------------------------------------------------------------
def shard_index(identity: dict[str, Any], sample_shape: Sequence[int]) -> dict[str, Any]:
    """The ``index.json`` payload: format, the job identity and the shard table."""
    items = split_work(identity["num_samples"], identity["shard_size"], shard=True)
    return {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, **identity, "dtype": "float32",
            "shards": [{"file": SHARD_PATTERN.format(i.shard), "start": i.start, "count": i.count} for i in items]}


def prepare_shard_dir(root: Path, identity: dict[str, Any], sample_shape: Sequence[int]) -> tuple[list[WorkItem], int]:
    """Create or reopen a shard directory; returns (items still to generate, samples already on disk).

    A rerun must have the same identity (export, seed, N, shard size, schedule, mode): otherwise a
    ``ValueError`` names the differing keys. A shard counts as done when its file exists with the right
    shape and dtype (files appear only by atomic rename, so a killed job never leaves a torn one).
    """
    index_path = root / INDEX_NAME
    if index_path.is_file():
        old = read_json_object(index_path)
        if old.get("format") != INDEX_FORMAT:
            raise ValueError(f"--output {root}: {INDEX_NAME} is not an {INDEX_FORMAT} index")
        differ = [key for key in IDENTITY_KEYS if old.get(key) != identity[key]]
        if differ:
            detail = ", ".join(f"{key}: {old.get(key)!r} on disk vs {identity[key]!r} now" for key in differ)
            raise ValueError(f"--output {root} holds shards of another job ({detail}); use a new directory")
    elif root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"--output {root} exists and is not an (empty) shard directory of ncsn-sample")
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(index_path, shard_index(identity, sample_shape))
    todo, done = [], 0
    for item in split_work(identity["num_samples"], identity["shard_size"], shard=True):
        if _shard_ok(root / SHARD_PATTERN.format(item.shard), (item.count, *sample_shape)):
            done += item.count
        else:
            todo.append(item)
    return todo, done


def _shard_ok(path: Path, shape: tuple[int, ...]) -> bool:
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return False
    return array.shape == shape and array.dtype == np.float32


def load_shards(root: str | os.PathLike) -> np.ndarray:
    """All samples of a complete shard directory, float32 [N, ...] in seed order."""
    root = Path(root)
    index = read_json_object(root / INDEX_NAME)
    return np.concatenate([np.load(confined_path(root, entry["file"], "shard file"), allow_pickle=False)
                           for entry in index["shards"]])


# -- the job ----------------------------------------------------------------------------------------------
def generate(
    export_dir: str | os.PathLike,
    num_samples: int,
    seed: int = 0,
    *,
    output: str | os.PathLike | None = None,
    num_workers: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    batch_size: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_inference_steps: int | None = None,
    mode: str = "auto",
    graph: str | None = None,
    provider: str = "auto",
    ray_address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    progress: bool = True,
    actor_class: type = SamplerActor,
) -> np.ndarray | Path:
    """Generate samples ``seed .. seed + num_samples - 1`` on Ray.

    Args:
        export_dir: an ``ncsn-export`` directory readable by every worker (same path on every node).
        num_samples: N >= 1.
        seed: S; sample n uses seed S + n.
        output: ``None`` (return the array), ``*.npy`` (write one file, return its path) or a directory
            (fixed-size shards + ``index.json``, resumable; return the directory).
        num_workers: actors (Ray Data ``concurrency``), each with ``num_cpus`` CPUs and ``num_gpus`` GPUs
            (onnxruntime uses ``ceil(num_cpus)`` threads per actor).
        batch_size: samples per onnxruntime call inside an actor (``None``: a whole item).
        shard_size: samples per shard (directory output); otherwise the chunk size is chosen to give
            every worker about 4 items.
        num_inference_steps, mode, graph, provider: as :class:`~ncsn_runtime.pipeline.NCSNPipeline` (``graph``: a
            contract key, ``None``: chosen from ``mode``).
        ray_address: an existing cluster (``"auto"``, ``"ray://host:10001"``); ``None`` connects to
            ``RAY_ADDRESS`` or starts a local Ray, shut down again at the end.
        max_retries: Ray actor restarts and task retries after a worker dies.
        actor_class: the callable class Ray Data maps (a :class:`SamplerActor` subclass, e.g. in tests).

    Returns:
        float32 [N, *sample_shape] (``output=None``) or the path written.
    """
    _check_int("num_samples", num_samples, 1, None)
    _check_int("seed", seed, 0, MAX_SEED - (num_samples - 1))
    _check_int("num_workers", num_workers, 1, None)
    _check_int("shard_size", shard_size, 1, None)
    _check_int("max_retries", max_retries, 0, None)
    if batch_size is not None:
        _check_int("batch_size", batch_size, 1, None)
    if not num_cpus > 0 or num_gpus < 0:
        raise ValueError(f"num_cpus must be > 0 and num_gpus >= 0, got {num_cpus} and {num_gpus}")
    export_dir = Path(export_dir).resolve()
    pipe = preflight(export_dir, mode, graph, num_inference_steps)
    sample_shape = tuple(int(size) for size in pipe.sample_shape)
    out = None if output is None else Path(output)
    shards = out is not None and (out.is_dir() or out.suffix == "")
    if out is not None and not shards and out.suffix.lower() != ".npy":
        raise ValueError(f"--output for --engine ray must be FILE.npy or a directory for shards, got {out.name!r}")

    if shards:
        identity = {"export_manifest_sha256": sha256_file(export_dir / MANIFEST_NAME), "seed": seed, "num_samples": num_samples,
                    "shard_size": shard_size, "sample_shape": list(sample_shape), "num_inference_steps": num_inference_steps,
                    "mode": mode, "graph": graph}
        items, done = prepare_shard_dir(out, identity, sample_shape)
        if done:
            logger.info("%s: %d of %d samples already on disk; generating %d shards", out, done, num_samples, len(items))
        sink: ArraySink | ShardSink = ShardSink(out, items, shard_size, sample_shape)
    else:
        chunk = max(1, math.ceil(num_samples / (4 * num_workers)))
        items, done = split_work(num_samples, chunk), 0
        sink = ArraySink(num_samples, sample_shape)

    if items:
        run_items(items, sink, export_dir, seed, num_inference_steps=num_inference_steps, mode=mode, graph=graph,
                  provider=provider, batch_size=batch_size, num_workers=num_workers, num_cpus=num_cpus, num_gpus=num_gpus,
                  ray_address=ray_address, max_retries=max_retries, progress=(num_samples, done) if progress else None,
                  actor_class=actor_class)
    sink.check()
    if isinstance(sink, ShardSink):
        return out
    if out is not None:
        return save_npy(sink.samples, out)
    return sink.samples


def run_items(items: Sequence[WorkItem], sink: ArraySink | ShardSink, export_dir: Path, seed: int, *,
              num_inference_steps: int | None, mode: str, graph: str | None, provider: str, batch_size: int | None,
              num_workers: int, num_cpus: float, num_gpus: float, ray_address: str | None, max_retries: int,
              progress: tuple[int, int] | None, actor_class: type) -> None:
    """Map ``items`` over ``num_workers`` actors with Ray Data and feed the results to ``sink`` on the driver."""
    ray = import_ray()
    with _quiet_ray_logs(not logger.isEnabledFor(logging.INFO)):
        _run_items(ray, items, sink, export_dir, seed, num_inference_steps=num_inference_steps, mode=mode, graph=graph,
                   provider=provider, batch_size=batch_size, num_workers=num_workers, num_cpus=num_cpus,
                   num_gpus=num_gpus, ray_address=ray_address, max_retries=max_retries, progress=progress,
                   actor_class=actor_class)


def _run_items(ray: Any, items: Sequence[WorkItem], sink: ArraySink | ShardSink, export_dir: Path, seed: int, *,
               num_inference_steps: int | None, mode: str, graph: str | None, provider: str, batch_size: int | None,
               num_workers: int, num_cpus: float, num_gpus: float, ray_address: str | None, max_retries: int,
               progress: tuple[int, int] | None, actor_class: type) -> None:
    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        available = float(ray.cluster_resources().get("GPU", 0.0))
        if num_gpus > available:  # Ray would wait forever for an actor it cannot place
            raise ValueError(f"--gpus-per-worker {num_gpus:g} (provider {provider!r}) needs a GPU per worker, but the Ray "
                             f"cluster has {available:g} GPUs; use --provider cpu or a cluster with GPUs")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows one bar in samples instead
        rows = [{"start": item.start, "count": item.count} for item in items]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per item: full parallelism
        constructor = {"export_dir": str(export_dir), "seed": seed, "num_inference_steps": num_inference_steps, "mode": mode,
                       "provider": provider, "batch_size": batch_size, "intra_op_threads": max(1, math.ceil(num_cpus)),
                       "graph": graph}
        with warnings.catch_warnings():
            # Ray Data documents max_restarts / max_task_retries as map_batches kwargs (its own default is to retry
            # forever); Ray 2.60 flags such kwargs as deprecated for 2.64, hence the pin ray<2.64 in the [ray] extra.
            warnings.simplefilter("ignore", DeprecationWarning)
            mapped = dataset.map_batches(actor_class, batch_size=1, fn_constructor_kwargs=constructor,
                                         # `concurrency` before Ray 2.51; no more actors than items
                                         compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(items))),
                                         num_cpus=num_cpus, num_gpus=num_gpus, batch_format="numpy",
                                         max_restarts=max_retries, max_task_retries=max_retries)
        bar = _Progress(*progress, enabled=True) if progress else None
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                indices = np.asarray(batch["index"], dtype=np.int64)
                sink.add(indices, np.asarray(batch["sample"], dtype=np.float32))
                if bar:
                    bar.update(len(indices))
        except Exception as error:
            if _is_ray_error(error):
                raise worker_error(error) from error
            raise
        finally:
            if bar:
                bar.close()
    finally:
        if started:
            ray.shutdown()


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be {bound}, got {value}")


def run_cli(args: Any) -> int:
    """``ncsn-sample --engine ray``: run :func:`generate` from parsed ``ncsn-sample`` arguments; returns the exit code."""
    import sys
    import time

    from .manifest import ExportDirectoryError
    from .providers import ProviderError
    from .steppers import NonFiniteSampleError

    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (1.0 if args.provider == "cuda" else 0.0)
    start = time.perf_counter()
    try:
        for name in ("num_workers", "shard_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
            raise ValueError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}")
        check_ranges(args)
        result = generate(args.export_dir, args.num_samples, args.seed, output=args.output, num_workers=args.num_workers or 1,
                          num_gpus=gpus, batch_size=args.batch_size, shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
                          num_inference_steps=_arg(args, "num_inference_steps", "steps"), mode=args.mode,
                          graph=_arg(args, "graph"), provider=args.provider, ray_address=args.ray_address,
                          progress=not (_arg(args, "no_progress") or _arg(args, "quiet")))
    except NonFiniteSampleError as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 1
    except WorkerError as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the environment (a full disk, ...) or a path: the file and the cause, as --engine local
        from .fileio import os_error_line

        print(f"ncsn-sample: error: {os_error_line(error)}", file=sys.stderr)
        return 2
    except (ExportDirectoryError, ProviderError, ValueError, TypeError, ImportError) as error:
        print(f"ncsn-sample: error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if Path(result).is_dir():
        shards = len(read_json_object(Path(result) / INDEX_NAME)["shards"])
        what = f"{args.num_samples} samples in {shards} shards + {INDEX_NAME}"
    else:
        what = f"{args.num_samples} raw samples, float32"
    print(f"wrote {result}: {what}, seeds {args.seed}..{args.seed + args.num_samples - 1}")
    print(f"engine ray: {args.num_workers or 1} workers x {gpus:g} GPU, {seconds:.3f} s total (including Ray start-up)")
    return 0


def _arg(args: Any, *names: str) -> Any:
    """The first of ``names`` set in ``args`` (ncsn-sample's flags are being renamed, e.g. --steps -> --num-inference-steps)."""
    for name in names:
        if getattr(args, name, None) is not None:
            return getattr(args, name)
    return None
