"""Helpers for the untrusted-input tests: copy an export directory and tamper with it, hashes kept consistent."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncsn_runtime.manifest import file_entry


def copy_export(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def read_manifest_json(export_dir: Path) -> dict[str, Any]:
    return json.loads((export_dir / "manifest.json").read_text())


def write_manifest_json(export_dir: Path, manifest: Any) -> None:
    (export_dir / "manifest.json").write_text(json.dumps(manifest))


def rehash(export_dir: Path, *relative: str) -> None:
    """Update manifest.files[relative] to the file's current sha256 and size ("hash updated" in the issue)."""
    manifest = read_manifest_json(export_dir)
    for name in relative:
        manifest["files"][name] = file_entry(export_dir / name)
    write_manifest_json(export_dir, manifest)


def tampered(source: Path, target: Path, edit_manifest: Callable[[dict], Any] | None = None,
             edit_config: Callable[[dict], Any] | None = None) -> Path:
    """A copy of ``source`` with its manifest and/or scheduler config edited (config hash updated)."""
    copy_export(source, target)
    if edit_config is not None:
        path = target / "scheduler" / "scheduler_config.json"
        config = json.loads(path.read_text())
        edited = edit_config(config)
        path.write_text(json.dumps(edited if isinstance(edited, list) else config))
        rehash(target, "scheduler/scheduler_config.json")
    if edit_manifest is not None:
        manifest = read_manifest_json(target)
        edited = edit_manifest(manifest)  # edits in place; a returned list replaces the manifest
        write_manifest_json(target, edited if isinstance(edited, list) else manifest)
    return target
