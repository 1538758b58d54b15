"""Writing an export directory atomically: stage in a hidden sibling, rename at the end.

A failure or Ctrl-C while staging removes the staging directory, so ``output_dir`` is either
untouched or complete. A staging directory left by a killed export (``kill -9``) is named after its
process id (``.NAME.partial-PID-XXXX``) and removed by the next export to the same place once that
process no longer runs, **and only when** it holds the ownership marker
(:data:`ncsn_runtime.ownership.MARKER_NAME`) that :func:`atomic_directory` writes into it right after creating
it: written by ncsn-export, owned by this user on this host, with the same process id and the token whose
first 8 hex digits end the directory's name. A sibling whose name merely looks like a staging name (a user's
``.out.old-2023-01``, or a directory of an older version without a marker) is never touched.

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
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

from ncsn_runtime.contract import FORMAT_NAME, MANIFEST_NAME
from ncsn_runtime.fileio import check_ancestor_writable, check_name_fits, read_json_object
from ncsn_runtime.ownership import MARKER_NAME, new_token, read_marker, write_marker

from .errors import ExportInputError

WRITER = "ncsn-export"
# what a staging name ``.NAME.partial-PID-XXXXXXXX`` adds to NAME (a process id has at most 7 digits on Linux)
STAGING_NAME_EXTRA = len(".") + len(".partial-") + 7 + len("-") + 8
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{8})")


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
        check_name_fits(output, STAGING_NAME_EXTRA, "`output`")  # before any stat: a too-long name raises OSError there
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
    except OverflowError:  # not a process id of this system
        return True
    return True


def remove_stale_staging(output: Path) -> list[Path]:
    """Remove ``.NAME.partial-*`` / ``.NAME.old-*`` siblings of ``output`` that a dead ncsn-export provably left.

    A sibling is removed only when its name matches, it is a real directory (not a symlink), its marker is ours
    (:func:`_owned_staging`) and the process that made it no longer runs. Everything else is left alone.
    """
    removed = []
    parent = output.parent
    if not parent.is_dir():
        return removed
    for entry in parent.iterdir():
        match = _TEMP_NAME.fullmatch(entry.name)
        if not match or match["name"] != output.name or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or not _owned_staging(entry, match) or _process_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _owned_staging(entry: Path, match: re.Match[str]) -> bool:
    """Whether ``entry``'s marker proves that an ncsn-export of this user on this host created it."""
    marker = read_marker(entry, WRITER)
    return (marker is not None and marker.get("kind") == match["kind"] and marker.get("name") == entry.name
            and marker.get("pid") == int(match["pid"]) and marker["token"][:8] == match["token"]
            and marker.get("host") == socket.gethostname())


def _make_temp_dir(parent: Path, name: str, kind: str) -> Path:
    """A new directory ``.NAME.KIND-PID-XXXXXXXX`` (mode 0777 minus the umask, like any mkdir) holding its marker."""
    for _ in range(100):
        token = new_token()
        path = parent / f".{name}.{kind}-{os.getpid()}-{token[:8]}"
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        try:
            write_marker(path, WRITER, token, kind=kind, name=path.name)
        except BaseException:
            path.rmdir()  # just made by us and still empty
            raise
        return path
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
        (staging / MARKER_NAME).unlink()  # the export itself never holds the marker
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
