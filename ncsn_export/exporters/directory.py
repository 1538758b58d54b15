"""Writing an export directory atomically: stage in a hidden sibling, rename at the end.

A failure or Ctrl-C while staging removes the staging directory, so ``output_dir`` is either
untouched or complete. An existing non-empty ``output_dir`` is refused unless ``force`` is set, and
even then only an earlier export (a directory holding ``manifest.json``) is replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ncsn_runtime.manifest import MANIFEST_NAME

from .errors import ExportError


def check_output_dir(output_dir: str | os.PathLike, force: bool) -> Path:
    """Refuse an ``output_dir`` that is a file or a non-empty directory (unless ``force`` and it is an export)."""
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ExportError(f"`output` {output} exists and is not a directory")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise ExportError(f"`output` {output} exists and is not empty; pass --force (force=True) to replace it")
        if not (output / MANIFEST_NAME).is_file():
            raise ExportError(f"refusing to replace {output}: it is not an ncsn-export directory (no {MANIFEST_NAME}); "
                              "choose another `output`")
    return output


def _make_readable(root: Path) -> None:
    """mkdtemp / mkstemp create 0700 / 0600 entries; an export directory is meant to be shared and served."""
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


@contextlib.contextmanager
def atomic_directory(output_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``output_dir``, on any exception it is deleted."""
    output = check_output_dir(output_dir, force).absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        yield staging
        check_output_dir(output, force)  # it may have appeared meanwhile
        _make_readable(staging)
        if output.is_dir() and not any(output.iterdir()):
            output.rmdir()
        if output.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, retired / output.name)
            os.replace(staging, output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
