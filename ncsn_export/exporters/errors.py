"""The one exception type of the exporters, with messages that say what to do."""

from __future__ import annotations

import re


class ExportError(RuntimeError):
    """An export could not be produced or did not validate; the message names the cause and a fix."""


_OP_PATTERNS = (
    re.compile(r"OpOverload\(op='([\w.:]+)'"),
    re.compile(r"\b(aten\.[\w.]+)"),
    re.compile(r"\b(aten::\w+)"),
)

TRACING_ADVICE = (
    "make forward(sample, timestep) use tensor ops only: no .item()/.tolist()/.numpy(), no Python branches "
    "on tensor values, no in-place ops on inputs; replace unsupported ops with exportable equivalents, or "
    "pass a custom_translation_table for them"
)


def unsupported_op(error: BaseException) -> str | None:
    """The first ATen op named in an exporter error (e.g. ``aten.linalg_eigh.default``), if any."""
    text = f"{error}\n{error.__cause__ or ''}"
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def tracing_error(artifact: str, error: BaseException) -> ExportError:
    """Wrap an exporter failure into an :class:`ExportError` naming the op (when known) and a fix."""
    first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    op = unsupported_op(error)
    where = f" at op `{op}`" if op else ""
    return ExportError(f"cannot export the score network to {artifact}{where} ({type(error).__name__}: {first_line[:300]}); "
                       f"{TRACING_ADVICE}")
