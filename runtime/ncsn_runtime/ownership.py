"""Ownership markers: the proof that a directory was written by this package, before anything deletes it.

The rule (SECURITY.md, issue 18): a tool deletes or replaces a directory only when it provably wrote it. A
name that merely looks like one of ours (``.out.old-2023-01``, ``REPO/thesis``) proves nothing, so every
directory that a tool may later delete carries a marker file, :data:`MARKER_NAME`, written by the tool right
after it created the directory::

    {"writer": "ncsn-export", "kind": "partial", "token": "<32 random hex digits>", "uid": 1000,
     "host": "build-7", "pid": 4242, "created": 1764750000.0, ...}

:func:`read_marker` accepts a marker only when it is a regular file (not a symlink), small, valid JSON, names
the expected ``writer``, and is owned by the current user (``st_uid``, which a JSON field alone cannot prove).
Callers then compare the fields that tie the marker to its directory (the token in the directory's name, the
process id, the files it lists) before deleting anything.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import Any

from .fileio import atomic_write, read_json_object

__all__ = ["MARKER_NAME", "MAX_MARKER_BYTES", "new_token", "read_marker", "write_marker"]

MARKER_NAME = ".ncsn-owner.json"
MAX_MARKER_BYTES = 4 * 1024 * 1024  # a Triton marker lists a few files; an export's staging marker is ~200 bytes


def new_token() -> str:
    """32 random hex digits (128 bits)."""
    return secrets.token_hex(16)


def write_marker(directory: str | os.PathLike, writer: str, token: str, **fields: Any) -> Path:
    """Write ``directory/MARKER_NAME`` (atomically) naming ``writer``, ``token``, this user, host and process."""
    payload = {"writer": writer, "token": token, "uid": _uid(), "host": socket.gethostname(), "pid": os.getpid(),
               "created": time.time(), **fields}
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(Path(directory) / MARKER_NAME, text.encode("utf-8"), make_parents=False)


def read_marker(directory: str | os.PathLike, writer: str) -> dict[str, Any] | None:
    """The marker in ``directory`` when it is ours (see the module docstring), else ``None``. Never raises for
    a missing, foreign or malformed marker."""
    path = Path(directory) / MARKER_NAME
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MARKER_BYTES or info.st_uid != _uid():
        return None
    try:
        payload = read_json_object(path, max_bytes=MAX_MARKER_BYTES)
    except (OSError, ValueError):
        return None
    if payload.get("writer") != writer or not isinstance(payload.get("token"), str) or len(payload["token"]) != 32:
        return None
    if payload.get("uid") != _uid():
        return None
    return payload


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1
