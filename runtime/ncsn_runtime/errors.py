"""The runtime's error for a bad export directory (shared by the manifest reader and file verification)."""

from __future__ import annotations

__all__ = ["ExportDirectoryError"]


class ExportDirectoryError(ValueError):
    """An export directory is missing, incomplete, corrupt, of an unknown format, or breaks a resource limit."""
