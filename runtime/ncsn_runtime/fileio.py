"""The repository's one atomic file writer, one JSON-object reader and its path confinement.

* :func:`atomic_write`: write through a temporary file in the target's folder, then ``os.replace``.
  The temporary file is created with mode ``0o666`` so the kernel applies the umask (no ``mkstemp``
  0600); when a file is replaced, its permission bits are kept. On any error (or Ctrl-C) the
  temporary file is removed and the target is untouched.
* :func:`write_json_atomic`: a JSON object through :func:`atomic_write`; NaN / inf are refused
  (they are not JSON, and other hosts' parsers reject them).
* :func:`read_json_object`: a JSON file that must hold an object, with a size limit.
* :func:`open_regular`: open a file for reading only when it is a regular file (never a FIFO or device,
  which could block the reader forever); every reader of untrusted files goes through it.
* :func:`confined_path`: a relative path from an untrusted file (a manifest) resolved inside a root
  directory: no absolute paths, no ``..``, no symlink that leads out.
* :func:`check_name_fits`: refuse, before any work, an output name that is too long for its filesystem once
  our temporary prefix / suffix is added.
* :func:`os_error_line`: an environment error (full disk, read-only filesystem, ...) as one line naming the
  file and the cause, for every CLI.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = [
    "ENVIRONMENT_ERRNOS",
    "MAX_JSON_BYTES",
    "PathConfinementError",
    "atomic_write",
    "check_name_fits",
    "check_output_file",
    "confined_path",
    "open_regular",
    "os_error_line",
    "read_json_object",
    "write_json_atomic",
]

# errors of the machine, not of the input: a full disk or quota, a read-only or failing filesystem
ENVIRONMENT_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EIO)
                               if code is not None)
ATOMIC_NAME_EXTRA = len(".") + len(".") + 12 + len(".tmp")  # atomic_write's temporary ``.NAME.XXXXXXXXXXXX.tmp``
MAX_JSON_BYTES = 16 * 1024 * 1024  # manifests and configs are a few kB; refuse to parse anything huge


class PathConfinementError(ValueError):
    """A path read from an untrusted file points outside the directory it must stay in."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any] | bytes, *, make_parents: bool = True) -> Path:
    """Write ``path`` atomically: ``write(handle)`` (or the given bytes) into a temporary sibling, then rename.

    The new file's mode is the replaced file's mode, else ``0o666`` minus the umask.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous_mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        previous_mode = None
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random 48-bit names all taken
        raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, (bytes, bytearray, memoryview)):
                handle.write(write)
            else:
                write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if previous_mode is not None:
            os.chmod(tmp, previous_mode)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:  # a full disk in write(): name the file we write
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any], *, sort_keys: bool = True,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``payload`` as indented JSON (keys sorted unless asked; strict: NaN and inf raise ``ValueError``)."""
    try:
        text = json.dumps(payload, indent=2, sort_keys=sort_keys, allow_nan=False, default=default) + "\n"
    except ValueError as error:
        raise ValueError(f"cannot write {path}: {error} (NaN and inf are not JSON)") from None
    return atomic_write(path, text.encode("utf-8"))


def read_json_object(path: str | os.PathLike, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Read a JSON file that must hold an object; errors (``FileNotFoundError`` / ``ValueError``) name the file.

    NaN / Infinity literals are refused, like every other host's JSON parser does.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"{path} is {size} bytes; a JSON file here is at most {max_bytes} bytes")
        data = handle.read(max_bytes + 1)
    try:
        payload = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(payload).__name__}")
    return payload


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """``open(path, "rb")`` for a regular file only; a FIFO, device, socket or directory raises ``ValueError``.

    The file is opened with ``O_NONBLOCK`` (no effect on regular files) and checked with ``fstat`` on the open
    descriptor, so a FIFO swapped in after an earlier ``is_file()`` can neither block the open nor be read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file (a FIFO, device, socket or directory is never read)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def confined_path(root: str | os.PathLike, relative: object, what: str = "path") -> Path:
    """``root / relative`` after checking it stays inside ``root`` (``relative`` comes from untrusted data).

    Refused: non-strings, empty strings, absolute paths, backslashes, ``.`` / ``..`` components, NUL
    bytes, and paths whose resolved location (symlinks followed) is outside ``root``'s resolved location.
    """
    if not isinstance(relative, str) or not relative:
        raise PathConfinementError(f"{what} must be a non-empty relative path string, got {relative!r}")
    if "\x00" in relative or "\\" in relative:
        raise PathConfinementError(f"{what} {relative!r} holds a NUL byte or a backslash")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("/"):
        raise PathConfinementError(f"{what} {relative!r} is absolute; paths in an export directory are relative to it")
    if any(part in ("..", ".") for part in relative.split("/")) or "" in relative.split("/"):
        raise PathConfinementError(f"{what} {relative!r} holds '..', '.' or an empty component")
    base = Path(root).resolve()
    candidate = base.joinpath(*pure.parts)
    resolved = candidate.resolve()
    if resolved != base and base not in resolved.parents:
        raise PathConfinementError(f"{what} {relative!r} leads outside {base} (through a symlink)")
    return candidate


def check_output_file(path: str | os.PathLike, what: str = "--output") -> Path:
    """Check that a file can be written at ``path`` (before any long work); returns it.

    Refused: an existing directory, a parent that is a file, a parent that does not exist, and a folder
    this process cannot write to. (The file itself is written later with :func:`atomic_write`.)
    """
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(f"{what} {str(path)!r} must name a file")
    check_name_fits(path, ATOMIC_NAME_EXTRA, what)  # before any stat: a too-long name raises OSError there
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file name")
    parent = path.parent
    check_ancestor_writable(path, f"{what} {path}")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        raise ValueError(f"{what} {path} is not writable")
    return path


def check_ancestor_writable(path: Path, label: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory (``ValueError`` starting with ``label``)."""
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ValueError(f"{label}: {ancestor} is not a directory")
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise ValueError(f"{label}: {ancestor} is not writable")
            return


def _name_max(path: Path) -> int:
    """The longest file name (bytes) the filesystem holding ``path``'s nearest existing ancestor allows (255 if unknown)."""
    for ancestor in path.parents:
        if ancestor.exists():
            try:
                return int(os.pathconf(ancestor, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
                return 255
    return 255


def check_name_fits(path: Path, extra: int, label: str) -> None:
    """Refuse (``ValueError`` starting with ``label``) a ``path.name`` longer than the filesystem's name limit
    minus ``extra``: the bytes our temporary sibling's name adds (``.NAME.partial-PID-TOKEN`` and the like)."""
    size = len(os.fsencode(path.name))
    limit = _name_max(path)
    if size + extra > limit:
        shown = path.name if len(path.name) <= 40 else f"{path.name[:20]}...{path.name[-12:]}"
        raise ValueError(f"{label}: the name {shown!r} is too long ({size} bytes; with the {extra} bytes of our temporary "
                         f"name it exceeds this filesystem's {limit}-byte limit); use a name of at most {limit - extra} "
                         "bytes")


def os_error_line(error: OSError, path: object = None) -> str:
    """``error`` as one line naming the file (``error.filename``, else ``path``) and the cause.

    For example ``/data/out/score.onnx: No space left on device [ENOSPC]``.
    """
    where = error.filename if error.filename is not None else path
    if where is not None and error.filename2 is not None:
        where = f"{where} -> {error.filename2}"
    cause = error.strerror or " ".join(str(error).split()) or type(error).__name__
    code = errno.errorcode.get(error.errno) if isinstance(error.errno, int) else None
    text = f"{cause} [{code}]" if code else cause
    return f"{where}: {text}" if where is not None else text
