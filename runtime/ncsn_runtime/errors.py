"""The runtime's error for a bad export directory (shared by the manifest reader and file verification)."""

from __future__ import annotations

__all__ = ["EnvironmentVariableError", "ExportDirectoryError"]


class ExportDirectoryError(ValueError):
    """An export directory is missing, incomplete, corrupt, of an unknown format, or breaks a resource limit."""


class EnvironmentVariableError(ValueError):
    """An environment variable we read (e.g. ``NCSN_NUM_THREADS``) holds a value we cannot use; the message names it."""
