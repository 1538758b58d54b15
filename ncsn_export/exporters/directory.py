"""Writing an export directory atomically: stage in a hidden sibling, rename at the end.

A failure or Ctrl-C while staging removes the staging directory, so ``output_dir`` is either
untouched or complete. A staging directory left by a killed export (``kill -9``) is named after its
process id (``.NAME.partial-PID-XXXX``) and removed by the next export to the same place once that
process no longer runs.

An existing ``output_dir`` is replaced only when ``force`` is set **and** it is an earlier export:
its ``manifest.json`` is an ``ncsn-export`` manifest and every file in it is either that manifest or
listed under the manifest's ``files``. Any other file (a user's notes, a web app that happens to have
a ``manifest.json``) makes ``--force`` refuse, naming the files, unless ``allow_extra_files`` is set
as well (``--force --allow-extra-files``), which deletes them with the old export.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from ncsn_runtime.contract import FORMAT_NAME, MANIFEST_NAME
from ncsn_runtime.fileio import check_ancestor_writable, read_json_object

from .errors import ExportInputError

LEGACY_STALE_SECONDS = 3600  # staging dirs of older versions carry no process id: removed once this old
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?:partial|old)-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+$")


def resolve_output(output_dir: str | os.PathLike) -> Path:
    """The absolute output path with ``..`` and symlinks of its parent resolved; refuses ``/``, ``.`` and the like."""
    raw = Path(output_dir)
    if str(output_dir).strip() == "":
        raise ExportInputError("`output` must name a directory, got an empty path")
    resolved = raw.resolve()
    if resolved.parent == resolved:
        raise ExportInputError(f"`output` {str(output_dir)!r} resolves to the filesystem root; choose a directory to create")
    return resolved


def check_output_dir(output_dir: str | os.PathLike, force: bool, allow_extra_files: bool = False) -> Path:
    """Check that ``output_dir`` may be written (see the module docstring); returns its resolved path."""
    output = resolve_output(output_dir)
    try:
        check_ancestor_writable(output, f"`output` {output_dir}")
    except ValueError as error:
        raise ExportInputError(str(error)) from None
    if output.exists() and not output.is_dir():
        raise ExportInputError(f"`output` {output} exists and is not a directory")
    if not output.is_dir() or not any(output.iterdir()):
        return output
    if not force:
        raise ExportInputError(f"`output` {output} exists and is not empty; pass --force (force=True) to replace an "
                               "earlier export there")
    listed = _export_files(output)
    extra = sorted(path.relative_to(output).as_posix() for path in _entries(output)
                   if path.relative_to(output).as_posix() not in listed)
    if extra and not allow_extra_files:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise ExportInputError(f"refusing to replace {output}: it holds files the export did not write ({shown}); move them "
                               "away, or pass --allow-extra-files (allow_extra_files=True) to delete them too")
    return output


def _export_files(output: Path) -> set[str]:
    """Relative paths an earlier export wrote (its manifest and the files it lists); refuses anything else."""
    manifest_path = output / MANIFEST_NAME
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise ExportInputError(f"refusing to replace {output}: it is not an ncsn-export directory (no {MANIFEST_NAME}); "
                               "choose another `output`")
    try:
        manifest = read_json_object(manifest_path)
    except (OSError, ValueError) as error:
        raise ExportInputError(f"refusing to replace {output}: {error}") from None
    files = manifest.get("files")
    if manifest.get("format") != FORMAT_NAME or not isinstance(files, dict):
        raise ExportInputError(f"refusing to replace {output}: its {MANIFEST_NAME} is not an ncsn-export manifest "
                               f"(format={manifest.get('format')!r}); choose another `output`")
    return {MANIFEST_NAME, *(key for key in files if isinstance(key, str))}


def _entries(root: Path) -> Iterator[Path]:
    """Every non-directory entry under ``root`` (symlinks are not followed)."""
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        yield from (base / name for name in files)
        yield from (base / name for name in dirs if (base / name).is_symlink())


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove ``.NAME.partial-*`` / ``.NAME.old-*`` siblings of ``output`` whose export process is gone."""
    removed = []
    parent = output.parent
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _TEMP_NAME.fullmatch(entry.name)
        if not match or match["name"] != output.name or not entry.is_dir() or entry.is_symlink():
            continue
        pid = match["pid"]
        stale = (not _process_alive(int(pid))) if pid else time.time() - entry.stat().st_mtime > LEGACY_STALE_SECONDS
        if stale and int(pid or 0) != os.getpid():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _make_temp_dir(parent: Path, name: str, kind: str) -> Path:
    """A new directory ``.NAME.KIND-PID-XXXX`` (mode 0777 minus the umask, like any mkdir)."""
    for _ in range(100):
        path = parent / f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a staging directory in {parent}")  # pragma: no cover


@contextlib.contextmanager
def atomic_directory(output_dir: str | os.PathLike, force: bool = False, allow_extra_files: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``output_dir``, on any exception it is deleted."""
    output = check_output_dir(output_dir, force, allow_extra_files)
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output)
    staging = _make_temp_dir(output.parent, output.name, "partial")
    try:
        yield staging
        check_output_dir(output, force, allow_extra_files)  # it may have appeared or changed meanwhile
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        if output.exists():
            retired = _make_temp_dir(output.parent, output.name, "old")
            os.replace(output, retired / output.name)
            os.replace(staging, output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
