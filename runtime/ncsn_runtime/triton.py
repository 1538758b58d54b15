"""``ncsn-triton``: write a Triton Inference Server model repository (onnxruntime backend) from an export.

Example::

    ncsn-triton exports/mnist --output triton-repo --max-batch-size 64 --instance-count 2
    # -> triton-repo/mnist-ncsn/config.pbtxt, triton-repo/mnist-ncsn/1/model.onnx, triton-repo/mnist-ncsn/ncsn.json

The served model is the fused sampler (``sampler.onnx``, or ``gpu_sampler.onnx`` with ``--graph gpu_sampler``)
with the sampling schedule baked in, under dynamic batching. Per request the client sends

* ``seed`` int64 [b, 1] (config dims ``[1]`` reshaped to the graph's ``[b]``), and
* ``sample`` float32 [b, *sample_shape], the initial sample: :func:`ncsn_runtime.noise.initial_sample`
  ``(seeds, sample_shape, *init_range)`` (Philox stream ``INIT_STREAM``, counter 0; ``ncsn.json`` holds the
  shape and range), or any start of its own (e.g. for inpainting-like uses);

and receives ``final_sample`` float32 [b, *sample_shape]. Sample ``n`` depends only on its own seed and start
(counter-based noise, no cross-sample ops), so Triton concatenating requests into one batch never changes
a request's samples.

Why the schedule is baked in: Triton's dynamic batcher concatenates every input of the requests it groups
along dim 0, but the graph's ``Loop`` runs ONE schedule (``timesteps`` [N], ``step_sizes`` [N],
``num_annealed_steps`` []) for the whole batch. As batched per-request inputs those would arrive as
[b, N] and [b] tensors that the graph cannot take, and two requests with different schedules could be
merged. So :func:`bake_schedule` turns the three inputs into initializers (a constant schedule per
model); serve several step counts as several models (``--num-inference-steps``, ``--model-name``).

Why the initial sample stays an input: drawing it in the graph would need a second ONNX Philox builder
in the runtime (the graph composer owns the ONNX noise); every host already implements the INIT stream,
and a client-chosen start keeps the model general.

What ``--force`` replaces: only a model directory that ncsn-triton provably wrote. Each one holds
:data:`~ncsn_runtime.ownership.MARKER_NAME` (writer ``ncsn-triton``, a random token, this user, and the sha256 of
every file written); ``--force`` refuses a directory without a valid marker (whatever its name, which may come
from the untrusted manifest's ``model.name``), one holding files it did not write, and one whose files changed
since (an edited ``config.pbtxt``). Triton ignores the hidden marker file.

Every number written into ``config.pbtxt`` is checked against its ``ModelConfig`` field type first
(``max_batch_size`` and ``count`` are int32, ``max_queue_delay_microseconds`` uint64), and the self-check of the
baked graph runs under a deadline (``--check-timeout``, default 600 s).

Needs the ``triton`` extra (``onnx``; ``tritonclient`` for clients and the tests), never torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import BATCH, GRAPHS, TensorSpec
from .fileio import check_ancestor_writable, check_name_fits, confined_path, os_error_line
from .interrupt import RunTimeoutError, run_interruptibly
from .manifest import ExportDirectoryError, file_entry, read_manifest
from .noise import INIT_STREAM, initial_sample
from .ownership import MARKER_NAME, new_token, read_marker, write_marker
from .schedule import check_count

TRITON_GRAPHS = ("sampler", "gpu_sampler")
KINDS = ("cpu", "gpu")
SCHEDULE_INPUTS = ("timesteps", "step_sizes", "num_annealed_steps")
TRITON_DTYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
MODEL_FILE = "model.onnx"
CLIENT_INFO = "ncsn.json"
MAX_PROTO_BYTES = 2**31 - 1  # above this, weights go to model.onnx.data (external data)
WRITER = "ncsn-triton"
INT32_MAX = 2**31 - 1  # ModelConfig.max_batch_size, ModelInstanceGroup.count: int32
UINT64_MAX = 2**64 - 1  # ModelDynamicBatching.max_queue_delay_microseconds: uint64
DEFAULT_CHECK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TritonModel:
    """What :func:`write_repository` wrote."""

    name: str
    directory: Path
    graph: str
    kind: str
    max_batch_size: int
    instance_count: int
    timesteps: np.ndarray
    step_sizes: np.ndarray
    num_annealed_steps: int
    validation_max_abs_diff: float

    @property
    def config_path(self) -> Path:
        return self.directory / "config.pbtxt"

    @property
    def model_path(self) -> Path:
        return self.directory / "1" / MODEL_FILE


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as error:
        raise ImportError("ncsn-triton rewrites the graph with the onnx package: pip install 'ncsn-export[triton]'") from error
    return onnx


def bake_schedule(model: Any, values: dict[str, np.ndarray]) -> Any:
    """Turn graph inputs into initializers (constants) in place; returns ``model``.

    Args:
        model: ``onnx.ModelProto`` whose graph has inputs named as the keys of ``values``.
        values: input name -> array of exactly the input's dtype (scalars as 0-d arrays).
    """
    onnx = _onnx()
    from onnx import numpy_helper

    graph = model.graph
    names = {item.name for item in graph.input}
    missing = sorted(set(values) - names)
    if missing:
        raise ExportDirectoryError(f"the graph has no inputs {missing} to bake (inputs: {sorted(names)})")
    kept = [item for item in graph.input if item.name not in values]
    del graph.input[:]
    graph.input.extend(kept)
    for name, value in values.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model)
    return model


def _triton_dims(spec: TensorSpec, sample_shape: Sequence[int]) -> tuple[list[int], list[int] | None]:
    """(config dims without the batch axis, reshape shape or None) for a batched contract tensor."""
    shape = spec.concrete_shape(sample_shape)
    if not shape or shape[0] != BATCH or any(not isinstance(dim, int) for dim in shape[1:]):
        raise ValueError(f"{spec.name} {spec.shape} is not [batch, fixed dims...]: Triton cannot batch it")
    dims = [int(dim) for dim in shape[1:]]
    return (dims, None) if dims else ([1], [])  # a per-sample scalar travels as [1], reshaped to the graph's [batch]


def config_text(name: str, graph: str, sample_shape: Sequence[int], *, max_batch_size: int, instance_count: int, kind: str,
                max_queue_delay_us: int) -> str:
    """``config.pbtxt`` (Triton ``ModelConfig`` text format) for a baked sampler graph."""
    spec = GRAPHS[graph]

    def tensor(item: TensorSpec) -> str:
        dims, reshape = _triton_dims(item, sample_shape)
        text = f'    name: "{item.name}"\n    data_type: {TRITON_DTYPES[item.dtype]}\n    dims: [ {", ".join(map(str, dims))} ]\n'
        if reshape is not None:
            text += f"    reshape: {{ shape: [{', '.join(map(str, reshape))}] }}\n"
        return "  {\n" + text + "  }"

    inputs = ",\n".join(tensor(item) for item in spec.inputs if item.name not in SCHEDULE_INPUTS)
    outputs = ",\n".join(tensor(item) for item in spec.outputs)
    return (
        f"# Written by ncsn-triton from {spec.file}: schedule baked in, `sample` = ncsn_runtime.noise.initial_sample(seed),\n"
        f"# `seed` per sample; requests are batched along dim 0 without changing any request's samples.\n"
        f'name: "{name}"\n'
        f'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n  }}\n]\n"
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
    )


def model_name_from(manifest: dict[str, Any]) -> str:
    """A Triton-safe model name from the manifest's model name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(manifest["model"].get("name") or "ncsn")).strip("-.")
    return name or "ncsn"


def write_repository(
    export_dir: str | Path,
    output: str | Path,
    *,
    graph: str | None = None,
    kind: str = "cpu",
    max_batch_size: int = 64,
    instance_count: int = 1,
    num_inference_steps: int | None = None,
    model_name: str | None = None,
    max_queue_delay_us: int = 1000,
    force: bool = False,
    check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S,
) -> TritonModel:
    """Write ``output/<model>/config.pbtxt``, ``output/<model>/1/model.onnx`` and ``output/<model>/ncsn.json``.

    Args:
        export_dir: an ``ncsn-export`` directory.
        output: the model repository (created; other models in it are left alone).
        graph: ``"sampler"`` or ``"gpu_sampler"`` (``None``: gpu_sampler for ``kind="gpu"`` when exported, else sampler).
        kind: instance group kind, ``"cpu"`` or ``"gpu"``.
        max_batch_size: the most samples Triton batches into one run (>= 1).
        instance_count: model instances (>= 1).
        num_inference_steps: noise levels of the baked schedule (``None``: all trained levels).
        model_name: directory / model name (default: the manifest's model name).
        max_queue_delay_us: how long the dynamic batcher waits to fill a batch.
        force: replace an existing ``output/<model>``, only when ncsn-triton wrote it (:func:`check_replaceable`).
        check_timeout_s: deadline of the self-check below (seconds, > 0).

    The model directory is built in a temporary directory next to it and renamed into place, and the
    rewritten graph is checked against the export's graph (2 seeds, onnxruntime CPU) before that.
    """
    onnx = _onnx()
    if kind not in KINDS:
        raise ValueError(f"--kind must be one of {KINDS}, got {kind!r}")
    max_batch_size = check_count("--max-batch-size", max_batch_size, 1, INT32_MAX)
    instance_count = check_count("--instance-count", instance_count, 1, INT32_MAX)
    max_queue_delay_us = check_count("--max-queue-delay-us", max_queue_delay_us, 0, UINT64_MAX)
    if isinstance(check_timeout_s, bool) or not isinstance(check_timeout_s, (int, float)) \
            or not (math.isfinite(check_timeout_s) and check_timeout_s > 0):
        raise ValueError(f"--check-timeout must be a finite number of seconds > 0, got {check_timeout_s!r}")
    root = Path(export_dir)
    info = read_manifest(root)
    manifest = info.raw
    if graph is None:
        graph = "gpu_sampler" if kind == "gpu" and "gpu_sampler" in info.graphs else "sampler"
    if graph not in TRITON_GRAPHS:
        raise ValueError(f"--graph must be one of {TRITON_GRAPHS} (the fused samplers), got {graph!r}")
    if graph not in info.graphs:
        raise ExportDirectoryError(f"{root} has no {graph} graph (graphs: {sorted(info.graphs)}); re-export with it")
    name = model_name or model_name_from(manifest)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ValueError(f"--model-name must be letters, digits, '_', '.', '-', got {name!r}")
    repo = Path(output)
    target = repo / name
    # the temporary siblings are ``.NAME.XXXXXXXX`` and ``.NAME.old.XXXXXXXX``: NAME plus 14 bytes must fit
    check_name_fits(target, len(".") + len(".old.") + 8, "--model-name" if model_name else
                    "the model name from the export's manifest (choose another with --model-name)")
    if repo.exists() and not repo.is_dir():
        raise ValueError(f"--output {repo} exists and is not a directory")
    check_ancestor_writable(target, f"--output {repo}")  # `-o afile/sub`, a read-only parent
    if target.exists() or target.is_symlink():
        if not force:
            raise FileExistsError(f"{target} exists; pass --force to replace it")
        check_replaceable(target)

    from .pipeline import load_scheduler

    scheduler = load_scheduler(info)  # the manifest's scheduler_config, checked against the graphs' levels
    levels = scheduler.num_train_timesteps
    count = check_count("--num-inference-steps", levels if num_inference_steps is None else num_inference_steps, 1, levels)
    scheduler.set_timesteps(count)
    timesteps, _, step_sizes = scheduler.schedule_arrays()
    schedule = {"timesteps": timesteps.astype(np.int64), "step_sizes": step_sizes.astype(np.float32),
                "num_annealed_steps": np.array(scheduler.num_annealed_steps, dtype=np.int64)}
    source = info.graph_path(graph)  # verified, with the external-data (weights) files it references
    try:
        model = bake_schedule(onnx.load(str(source)), schedule)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:  # a graph we did not write
        raise ExportDirectoryError(f"{source} is not a valid ONNX graph (its sha256 matches the manifest, so the export "
                                   f"itself is broken): {' '.join(str(error).split())[:300]}") from None
    sample_shape = info.model.sample_shape
    init_range = [float(value) for value in info.model.init_range]

    made_repo = not repo.exists()
    repo.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    staging.chmod(0o755)  # mkdtemp makes it 0700; the server may run as another user
    try:
        (staging / "1").mkdir()
        model_path = staging / "1" / MODEL_FILE
        external = model.ByteSize() > MAX_PROTO_BYTES
        onnx.save(model, str(model_path), save_as_external_data=external, location=f"{MODEL_FILE}.data" if external else None)
        diff = check_baked_model(model_path, source, schedule, sample_shape, init_range, timeout_s=check_timeout_s)
        (staging / "config.pbtxt").write_text(
            config_text(name, graph, sample_shape, max_batch_size=max_batch_size, instance_count=instance_count, kind=kind,
                        max_queue_delay_us=max_queue_delay_us), encoding="utf-8")
        client = {"model": name, "source_graph": GRAPHS[graph].file, "sample_shape": list(sample_shape), "init_range": init_range,
                "init_stream": INIT_STREAM, "inputs": {"seed": "int64 [b, 1]: per-sample seed",
                                                       "sample": "float32 [b, *sample_shape]: initial_sample(seed)"},
                "output": "final_sample", "timesteps": timesteps.tolist(), "step_sizes": step_sizes.tolist(),
                "num_annealed_steps": scheduler.num_annealed_steps}
        (staging / CLIENT_INFO).write_text(json.dumps(client, indent=2) + "\n", encoding="utf-8")
        write_marker(staging, WRITER, new_token(), name=name, files=_listing(staging))
        old = None
        if target.exists() or target.is_symlink():
            check_replaceable(target)  # it may have appeared or changed meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=repo))
            target.rename(old / name)
        staging.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if made_repo:
            with contextlib.suppress(OSError):  # only when empty: the repository folder this run created
                repo.rmdir()
        if isinstance(error, OSError) and error.filename is None:  # onnx.save / write_text name no file
            raise OSError(error.errno, error.strerror or str(error), str(target)) from error
        raise
    return TritonModel(name, target, graph, kind, max_batch_size, instance_count, timesteps, step_sizes,
                       scheduler.num_annealed_steps, diff)


def check_replaceable(target: Path) -> None:
    """Refuse (``FileExistsError``) to replace ``target`` unless ncsn-triton provably wrote it and nothing changed.

    Provably wrote: ``target`` is a real directory holding our marker (:func:`ncsn_runtime.ownership.read_marker`)
    for this model name. Nothing changed: every entry is the marker or a file the marker lists, with the listed
    size and sha256 (a listed file that was deleted is fine).
    """
    if target.is_symlink() or not target.is_dir():
        raise FileExistsError(f"refusing to replace {target}: it is not a model directory written by ncsn-triton; "
                              "move it away or choose another --model-name")
    marker = read_marker(target, WRITER)
    listed = marker.get("files") if marker is not None else None
    if marker is None or marker.get("name") != target.name or not isinstance(listed, dict):
        raise FileExistsError(f"refusing to replace {target}: it was not written by ncsn-triton (no valid {MARKER_NAME} "
                              "in it); move it away or choose another --model-name")
    extra = sorted(relative for relative in _entries(target) if relative != MARKER_NAME and relative not in listed)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise FileExistsError(f"refusing to replace {target}: it holds files ncsn-triton did not write ({shown}); "
                              "move them away first")
    for relative, entry in listed.items():
        try:
            path = confined_path(target, relative, "marker entry")
        except ValueError:
            raise FileExistsError(f"refusing to replace {target}: its {MARKER_NAME} lists {relative!r}") from None
        if path.is_file() and not path.is_symlink() and file_entry(path) != entry:
            raise FileExistsError(f"refusing to replace {target}: {relative} changed since ncsn-triton wrote it; "
                                  "move it away first")


def _entries(root: Path) -> list[str]:
    """Relative paths of every non-directory entry under ``root`` (symlinks, to directories too, not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        found += [(base / name).relative_to(root).as_posix() for name in files]
        found += [(base / name).relative_to(root).as_posix() for name in dirs if (base / name).is_symlink()]
    return found


def _listing(directory: Path) -> dict[str, dict[str, Any]]:
    """``{relative: {"sha256", "bytes"}}`` of every file written into ``directory`` (the marker's ``files``)."""
    return {relative: file_entry(directory / relative) for relative in sorted(_entries(directory)) if relative != MARKER_NAME}


def check_baked_model(model_path: Path, source: Path, schedule: dict[str, np.ndarray], sample_shape: Sequence[int],
                      init_range: Sequence[float], seeds: Sequence[int] = (0, 1), *,
                      timeout_s: float = DEFAULT_CHECK_TIMEOUT_S) -> float:
    """Run the baked model and the export's graph (with the schedule fed) on ``seeds``; max abs difference.

    Both runs together must finish within ``timeout_s`` seconds (and stop on Ctrl-C). Raises
    ``ExportDirectoryError`` when they differ (> 1e-5), the baked graph does not load, or time runs out.
    """
    import onnxruntime as ort

    seed = np.asarray(seeds, dtype=np.int64)
    feeds = {"sample": initial_sample(seed, sample_shape, *init_range), "seed": seed}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = []
    for path in (model_path, source):
        try:
            sessions.append(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
        except Exception as error:  # onnxruntime's own Fail / InvalidGraph / NotImplemented
            raise ExportDirectoryError(f"onnxruntime cannot load {path.name if path == model_path else path}: "
                                       f"{' '.join(str(error).split())[:300]}") from None
    baked, original = sessions
    deadline = time.monotonic() + timeout_s
    try:
        got = run_interruptibly(baked, ["final_sample"], feeds, timeout_s=timeout_s)[0]
        want = run_interruptibly(original, ["final_sample"], {**feeds, **schedule},
                                 timeout_s=max(deadline - time.monotonic(), 1e-3))[0]
    except RunTimeoutError:
        raise ExportDirectoryError(f"the self-check of the baked {model_path.name} against {source.name} ({len(seeds)} "
                                   f"seeds, onnxruntime CPU) did not finish within {timeout_s:g} s; raise "
                                   "--check-timeout for a slow network") from None
    diff = float(np.max(np.abs(got - want)))
    if not diff <= 1e-5:
        raise ExportDirectoryError(f"the baked {model_path.name} differs from {source.name} by {diff} on seeds {list(seeds)}")
    return diff


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ncsn-triton", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("export_dir", metavar="EXPORT_DIR", help="directory written by ncsn-export")
    parser.add_argument("--output", "-o", required=True, metavar="REPO", help="Triton model repository to write into")
    parser.add_argument("--graph", choices=TRITON_GRAPHS, default=None,
                        help="fused graph to serve (default: gpu_sampler for --kind gpu when exported, else sampler)")
    parser.add_argument("--kind", choices=KINDS, default="cpu", help="instance group kind")
    parser.add_argument("--max-batch-size", type=int, default=64, help="most samples per batched run")
    parser.add_argument("--instance-count", type=int, default=1, help="model instances")
    parser.add_argument("--num-inference-steps", type=int, default=None, help="noise levels baked in (default: all trained)")
    parser.add_argument("--model-name", default=None, help="model name (default: the export's model name)")
    parser.add_argument("--max-queue-delay-us", type=int, default=1000, help="dynamic batcher wait to fill a batch")
    parser.add_argument("--force", action="store_true",
                        help="replace REPO/<model> if ncsn-triton wrote it and nothing in it changed since")
    parser.add_argument("--check-timeout", type=float, default=DEFAULT_CHECK_TIMEOUT_S, metavar="SECONDS",
                        help="deadline of the self-check of the baked graph against the export's")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = write_repository(args.export_dir, args.output, graph=args.graph, kind=args.kind,
                                  max_batch_size=args.max_batch_size, instance_count=args.instance_count,
                                  num_inference_steps=args.num_inference_steps, model_name=args.model_name,
                                  max_queue_delay_us=args.max_queue_delay_us, force=args.force,
                                  check_timeout_s=args.check_timeout)
    except (ExportDirectoryError, ValueError, TypeError, ImportError, FileExistsError, FileNotFoundError) as error:
        print(f"ncsn-triton: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment: a full disk, a read-only filesystem, ...
        print(f"ncsn-triton: error: {os_error_line(error)}; nothing was written to {args.output}", file=sys.stderr)
        return 1
    levels = len(result.timesteps)
    print(f"wrote {result.directory}: config.pbtxt, 1/{MODEL_FILE} ({result.graph}, {levels} levels x "
          f"{result.num_annealed_steps} steps baked in), {CLIENT_INFO}")
    print(f"instance_group {result.instance_count} x {result.kind}, max_batch_size {result.max_batch_size}, dynamic batching; "
          f"baked graph = export graph to {result.validation_max_abs_diff:.1e} (2 seeds)")
    if result.kind == "gpu" and result.graph == "sampler":
        print("note: sampler.onnx's bitwise noise ops have no CUDA kernels (they run on the CPU); export gpu_sampler for GPUs")
    print(f"serve: tritonserver --model-repository {Path(args.output).resolve()}; per request: seed int64 [b, 1] and "
          f"sample float32 [b, ...] = ncsn_runtime.noise.initial_sample(seed, ...) (see {CLIENT_INFO}) -> final_sample")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

