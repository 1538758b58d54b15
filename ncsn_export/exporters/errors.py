"""The one exception type of the exporters, with messages that say what to do."""

from __future__ import annotations

import re


class ExportError(RuntimeError):
    """An export could not be produced or did not validate; the message names the cause and a fix."""


class ExportInputError(ExportError, ValueError):
    """The caller's input is wrong (model reference, model spec, output directory, an argument): ``ncsn-export`` exits 2."""


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


def _chain(error: BaseException) -> list[BaseException]:
    """The error and its causes, outermost first (the exporter wraps the real cause twice)."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)


def unsupported_op(error: BaseException) -> str | None:
    """The first ATen op named in an exporter error chain (e.g. ``aten.linalg_eigh.default``), if any."""
    text = "\n".join(str(item) for item in _chain(error))
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def tracing_error(artifact: str, error: BaseException) -> ExportError:
    """Wrap an exporter failure into an :class:`ExportError` naming the op (when known) and a fix."""
    root = _chain(error)[-1]
    first_line = _first_line(root)
    op = unsupported_op(error)
    where = f" at op `{op}`" if op else ""
    return ExportError(f"cannot export the score network to {artifact}{where} ({type(root).__name__}: {first_line[:400]}); "
                       f"{TRACING_ADVICE}")
