"""``NCSNPipeline.from_pretrained(PATH_OR_HUB_ID, export=True)`` and ``pipe.save_pretrained(DIR)``.

What ``from_pretrained`` is given, and what it opens (:func:`resolve_pretrained`):

* an **export directory** (``manifest.json`` at its top): opened as it is;
* a **diffusers-ncsn pipeline folder** (``model_index.json``, ``unet/``, ``scheduler/``): with ``export=True`` it is
  exported on first use by :func:`ncsn_export.exporters.export_model` -- the code path and the validation of
  ``ncsn-export --model FOLDER`` -- into the cache, and later loads open the cached export; without ``export=True``
  the error names ``export=True`` and the ``ncsn-export`` command;
* a **Hugging Face Hub id** (``owner/name``, not an existing path): resolved with ``huggingface_hub.snapshot_download``
  (its own cache; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` work from that cache alone), then as above. A
  Hub export directory is copied out of the Hub cache (whose files are symlinks into ``blobs/``) into this cache,
  every file checked against its manifest.

Cache layout (``cache_dir=`` overrides the root; else ``$XDG_CACHE_HOME/ncsn-export``, else ``~/.cache/ncsn-export``)::

    ROOT/exports/KEY/        one export; KEY = sha256 of the folder's weights, configs, the export options and the
                             manifest format version (:func:`cache_key`)
    ROOT/exports/.KEY.lock   held (``fcntl.flock``) while KEY is checked or exported: a second process waits
    ROOT/hub/MANIFEST_SHA/   export directories fetched from the Hub, keyed by their manifest's sha256

A new entry is written into a private staging directory in ``ROOT/exports`` and renamed into place, so a killed
export leaves no partial entry (its staging directory is removed by the next export of that key). The cache is
untrusted like any export directory: an entry is read through its manifest and every listed file's size and
sha256 are checked before it is used; an entry that fails is exported again (logged).

Nothing here imports torch or ``ncsn_export`` at module level: only an actual export does (:func:`load_exporter`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME
from .errors import ExportDirectoryError
from .fileio import atomic_write, read_json_object
from .manifest import Manifest, parse_manifest, read_manifest
from .model_card import MODEL_CARD, model_card
from .verify import confined, sha256_file

__all__ = ["EXPORT_INSTALL_HINT", "STATS", "cache_key", "default_cache_dir", "resolve_pretrained", "save_pretrained",
           "verify_export_dir"]

logger = logging.getLogger("ncsn_runtime")

EXPORT_INSTALL_HINT = "pip install 'ncsn-export[export,diffusers]'"
PIPELINE_FILES = ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")
UNET_WEIGHTS = ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin")
# export_model's keyword arguments that from_pretrained(..., export_options=...) passes on; all but `progress`
# change what is written (graphs, or the validation recorded in the manifest), so they are part of the cache key.
EXPORT_OPTIONS = ("opset", "fp16", "artifacts", "final_denoise", "validate", "validation_budget", "batch_size",
                  "num_inference_steps", "num_annealed_steps", "full_batch_size", "tolerance", "full_tolerance")
UNKEYED_OPTIONS = ("progress",)
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_PARTIAL = re.compile(r"\.(?P<key>[0-9a-f]{64})\.partial-(?P<pid>\d+)-[0-9a-f]+")


@dataclass
class PretrainedStats:
    """Counters of this process (tests and logs read them): exports made, cache entries reused."""

    exports: int = 0
    cache_hits: int = 0


STATS = PretrainedStats()


# -- where things are ----------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ncsn-export`` (an absolute ``XDG_CACHE_HOME`` only, as the XDG spec says), else
    ``~/.cache/ncsn-export``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "ncsn-export"


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        return default_cache_dir()
    if not isinstance(cache_dir, (str, os.PathLike)) or str(cache_dir).strip() == "":
        raise TypeError(f"`cache_dir` must be a directory path (str or os.PathLike) or None, got {cache_dir!r}")
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"`cache_dir` {root} exists and is not a directory")
    return root


def is_pipeline_folder(root: Path) -> bool:
    """A diffusers-ncsn pipeline folder: ``model_index.json`` and no ``manifest.json``."""
    return (root / "model_index.json").is_file() and not (root / MANIFEST_NAME).exists()


def not_exported_message(reference: str, root: Path) -> str:
    """The error for a diffusers-ncsn folder opened without ``export=True``."""
    return (f"{root} is a diffusers-ncsn pipeline folder (model_index.json), not an ncsn-export directory: pass "
            f"export=True (NCSNPipeline.from_pretrained({reference!r}, export=True)) to export it on first use and "
            f"cache the export, or export it once with `ncsn-export --model {root} --output DIR` and load DIR")


# -- the cache key -------------------------------------------------------------------------------------------
def pipeline_digests(root: Path) -> dict[str, str]:
    """sha256 of what the exporter reads from a diffusers-ncsn folder: the configs and the UNet weights."""
    digests = {}
    for relative in (*PIPELINE_FILES, *UNET_WEIGHTS):
        path = root / relative
        if path.is_file():
            digests[relative] = sha256_file(path)
        elif relative in PIPELINE_FILES:
            raise ExportDirectoryError(f"diffusers-ncsn pipeline folder {root}: missing {relative}")
    if not any(name in digests for name in UNET_WEIGHTS):
        raise ExportDirectoryError(f"diffusers-ncsn pipeline folder {root}: no {' or '.join(UNET_WEIGHTS)}")
    return digests


def check_export_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The export options as a plain dict of JSON values; unknown names are refused, listing the accepted ones.

    Their values are checked by ``export_model`` itself (the same checks as ``ncsn-export``'s flags).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"`export_options` must be a mapping of export_model keyword arguments, got {type(options).__name__}")
    unknown = sorted(str(name) for name in options if name not in EXPORT_OPTIONS + UNKEYED_OPTIONS)
    if unknown:
        raise TypeError(f"`export_options`: unknown {', '.join(map(repr, unknown))}; accepted: "
                        f"{', '.join(EXPORT_OPTIONS + UNKEYED_OPTIONS)}")
    checked = {}
    for name, value in options.items():
        if isinstance(value, tuple):
            value = list(value)
        ok = value is None or isinstance(value, (bool, int, float, str)) or (
            isinstance(value, list) and all(isinstance(item, str) for item in value))
        if not ok:
            raise TypeError(f"`export_options[{name!r}]` must be None, a bool, int, float, str or list of str, "
                            f"got {type(value).__name__}")
        checked[name] = value
    return checked


def cache_key(digests: Mapping[str, str], options: Mapping[str, Any]) -> str:
    """sha256 (hex) of the folder's file digests, the keyed export options and the manifest format version."""
    payload = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "files": dict(digests),
               "options": {name: value for name, value in options.items() if name not in UNKEYED_OPTIONS}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, allow_nan=False).encode()).hexdigest()


# -- verification and copying --------------------------------------------------------------------------------
def verify_export_dir(root: Path) -> Manifest:
    """Read ``root``'s manifest and check every listed file (confined path, size, sha256)."""
    manifest = read_manifest(root)
    for relative in manifest.files:
        manifest.verified_path(relative)
    return manifest


def _copy_listed(source: Path, manifest: Manifest, staging: Path, symlinks_within: Path | None = None) -> None:
    """Copy ``manifest.json`` and every file it lists from ``source`` into ``staging``, each checked on the copy.

    ``symlinks_within``: where a symlinked source file may lead (a Hub snapshot's repository folder); None: the
    source's paths are confined to ``source`` (symlinks followed).
    """
    for relative in (MANIFEST_NAME, *manifest.files):
        path = source.joinpath(*relative.split("/"))
        if symlinks_within is None:
            path = confined(source, relative, "file")
        else:
            confined(staging, relative, "file")  # the name itself (no '..', absolute, backslash)
            real = path.resolve()
            base = symlinks_within.resolve()
            if base not in real.parents:
                raise ExportDirectoryError(f"{path} leads outside {base}")
            path = real
        if not path.is_file():
            raise ExportDirectoryError(f"{source / relative} is listed in {MANIFEST_NAME} but missing")
        target = staging.joinpath(*relative.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    copied = verify_export_dir(staging)  # the copy is what is checked: a file changed meanwhile fails here
    if copied.raw != manifest.raw:
        raise ExportDirectoryError(f"{source / MANIFEST_NAME} changed while it was copied")


def _staging_dir(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = parent / f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a staging directory in {parent}")  # pragma: no cover


def _install(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing what is there (moved aside first, then deleted)."""
    retired = None
    if target.exists() or target.is_symlink():
        retired = target.parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(target, retired)
    os.replace(staging, target)
    if retired is not None:
        if retired.is_dir() and not retired.is_symlink():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _remove_stale(exports: Path, key: str) -> None:
    for entry in exports.iterdir():
        match = _PARTIAL.fullmatch(entry.name)
        if match and match["key"] == key and int(match["pid"]) != os.getpid() and not _process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created); where there is no ``fcntl`` the rename alone keeps entries whole."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: last writer wins, each entry verified on use
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process exporting the same model (%s)", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- exporting -----------------------------------------------------------------------------------------------
def load_exporter() -> Any:
    """``ncsn_export.exporters.export_model``; an :class:`ImportError` saying what to install when torch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(f"from_pretrained(..., export=True) exports the folder with ncsn_export, which needs torch "
                          f"(not installed here): {EXPORT_INSTALL_HINT}, and diffusers-ncsn with --no-deps for its "
                          "UNet class; or export elsewhere with `ncsn-export --model FOLDER --output DIR` and load DIR "
                          "(the runtime alone needs no torch)") from None
    try:
        from ncsn_export.exporters import export_model
    except ImportError as error:
        raise ImportError(f"from_pretrained(..., export=True) needs the ncsn_export package and its export extra "
                          f"({error}): {EXPORT_INSTALL_HINT}") from None
    return export_model


def export_to_cache(folder: Path, cache_root: Path, options: Mapping[str, Any]) -> Path:
    """The cached export of the diffusers-ncsn ``folder`` made with ``options`` (exported now when missing or bad)."""
    key = cache_key(pipeline_digests(folder), options)
    exports = cache_root / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    target = exports / key
    with _locked(exports / f".{key}.lock"):
        if target.exists():
            try:
                verify_export_dir(target)
            except ExportDirectoryError as error:
                logger.warning("cached export %s failed its check (%s); exporting %s again", target, error, folder)
            else:
                STATS.cache_hits += 1
                logger.info("using the cached export %s of %s", target, folder)
                return target
        export_model = load_exporter()
        _remove_stale(exports, key)
        staging = _staging_dir(exports, key)
        try:
            logger.info("exporting %s into the cache %s (first use; ncsn-export's code path and validation)", folder, target)
            export_model(str(folder), staging / "export", **options)
            STATS.exports += 1
            verify_export_dir(staging / "export")
            _install(staging / "export", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# -- the Hugging Face Hub ------------------------------------------------------------------------------------
def looks_like_hub_id(reference: str) -> bool:
    return bool(_HUB_ID.fullmatch(reference)) and ".." not in reference and "--" not in reference


def hub_snapshot(repo_id: str, revision: str | None, local_files_only: bool) -> Path:
    """The local snapshot folder of ``repo_id`` from ``huggingface_hub``'s cache (downloaded unless offline)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportDirectoryError(f"{repo_id!r} is not a local directory; as a Hugging Face Hub id it needs huggingface_hub "
                                   "(pip install huggingface_hub)") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=local_files_only))
    except Exception as error:  # huggingface_hub's errors: not cached offline, unknown repo, no network, ...
        text = " ".join(str(error).split())[:400] or type(error).__name__
        raise ExportDirectoryError(f"{repo_id!r} is not a local directory, and the Hugging Face Hub has no usable copy of "
                                   f"it ({type(error).__name__}: {text})") from None


def materialize_hub_export(snapshot: Path, cache_root: Path) -> Path:
    """Copy a Hub export directory out of the Hub cache into ``ROOT/hub/MANIFEST_SHA`` (checked), once.

    The snapshot's files are symlinks into the repository's ``blobs/``: each may lead only inside that repository
    folder; the manifest's names are checked against the (symlink-free) copy.
    """
    repository = snapshot.parent.parent
    manifest_file = snapshot / MANIFEST_NAME
    real = manifest_file.resolve()
    if repository.resolve() not in real.parents:
        raise ExportDirectoryError(f"{manifest_file} leads outside {repository}")
    try:
        raw = read_json_object(real)
    except (OSError, ValueError) as error:
        raise ExportDirectoryError(f"{manifest_file}: {error}") from None
    target = cache_root / "hub" / sha256_file(real)
    with contextlib.suppress(ExportDirectoryError):
        if target.is_dir() and verify_export_dir(target).raw == raw:
            return target
    staging = _staging_dir(target.parent, target.name)
    try:
        manifest = parse_manifest(staging, raw)
        _copy_listed(snapshot, manifest, staging, symlinks_within=repository)
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# -- from_pretrained -----------------------------------------------------------------------------------------
def resolve_pretrained(reference: str | os.PathLike, *, export: bool = False, cache_dir: str | os.PathLike | None = None,
                       export_options: Mapping[str, Any] | None = None, revision: str | None = None,
                       local_files_only: bool = False) -> Path:
    """The export directory that ``from_pretrained(reference, ...)`` opens (see the module docstring)."""
    if not isinstance(reference, (str, os.PathLike)) or str(reference).strip() == "":
        raise TypeError(f"`pretrained_model_name_or_path` must be a directory path or a Hub id, got {reference!r}")
    if not isinstance(export, bool):
        raise TypeError(f"`export` must be True or False, got {export!r}")
    options = check_export_options(export_options)
    if options and not export:
        raise ValueError("`export_options` only apply with export=True")
    text = os.fspath(reference)
    root = Path(text)
    from_hub = False
    if not root.exists() and isinstance(text, str) and looks_like_hub_id(text):
        root, from_hub = hub_snapshot(text, revision, local_files_only), True
    elif revision is not None:
        raise ValueError(f"`revision` applies to a Hugging Face Hub id; {text!r} is a local path")
    if not root.is_dir():
        return root  # read_manifest reports the missing directory
    if is_pipeline_folder(root):
        if not export:
            raise ExportDirectoryError(not_exported_message(text, root))
        return export_to_cache(root, _cache_root(cache_dir), options)
    if from_hub and (root / MANIFEST_NAME).exists():
        return materialize_hub_export(root, _cache_root(cache_dir))
    if export and not (root / MANIFEST_NAME).exists():
        raise ExportDirectoryError(f"{root} is neither a diffusers-ncsn pipeline folder (no model_index.json) nor an "
                                   f"ncsn-export directory (no {MANIFEST_NAME}); export=True exports a diffusers-ncsn "
                                   "folder (for other models: `ncsn-export --model NAME_OR_REF --output DIR`)")
    return root


# -- save_pretrained -----------------------------------------------------------------------------------------
def _check_save_target(target: Path, source: Path) -> None:
    """``target`` may be absent, empty, or an earlier save (its manifest, listed files and model card only)."""
    if target.resolve() == source.resolve():
        raise ValueError(f"`save_directory` {target} is the pipeline's own export directory")
    if target.exists() and not target.is_dir():
        raise ValueError(f"`save_directory` {target} exists and is not a directory")
    if not target.is_dir() or not any(target.iterdir()):
        return
    try:
        previous = read_manifest(target)
    except ExportDirectoryError:
        raise ValueError(f"`save_directory` {target} exists, is not empty and is not an ncsn-export directory; "
                         "choose another directory") from None
    allowed = {MANIFEST_NAME, MODEL_CARD, *previous.files}
    extra = sorted(path.relative_to(target).as_posix() for path in target.rglob("*")
                   if not path.is_dir() and path.relative_to(target).as_posix() not in allowed)
    if extra:
        raise ValueError(f"refusing to replace {target}: it holds files the export did not write "
                         f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}); move them away")


def save_pretrained(pipe: Any, save_directory: str | os.PathLike) -> Path:
    """Write ``pipe``'s export directory to ``save_directory`` with a model card; returns the directory.

    Every file the manifest lists is copied and checked (size, sha256) on the copy, in a staging directory beside
    ``save_directory`` that is renamed into place at the end: the result is complete or absent. An existing
    ``save_directory`` is replaced only when it is empty or an earlier export holding nothing else.
    """
    if not isinstance(save_directory, (str, os.PathLike)) or str(save_directory).strip() == "":
        raise TypeError(f"`save_directory` must be a directory path, got {save_directory!r}")
    source = Path(pipe.export_dir)
    target = Path(save_directory).absolute()
    _check_save_target(target, source)
    manifest = read_manifest(source)  # read again: the directory may have changed since the pipeline was opened
    staging = _staging_dir(target.parent, target.name)
    try:
        _copy_listed(source, manifest, staging)
        atomic_write(staging / MODEL_CARD, model_card(manifest, pipe.scheduler.config, target.name).encode())
        _check_save_target(target, source)  # it may have appeared meanwhile
        _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %s (%d files and %s)", target, len(manifest.files) + 1, MODEL_CARD)
    return target
