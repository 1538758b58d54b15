"""The runtime's module boundaries: no import cycles between its modules, and the runtime CLI and the Ray
engine share their argument checks through ``ncsn_runtime.arguments`` instead of importing each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "runtime" / "ncsn_runtime"


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """Sibling modules of ``ncsn_runtime`` that ``path`` imports (``from .x import``; ``TYPE_CHECKING`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update([node.module.split(".")[0]] if node.module else [alias.name for alias in node.names])
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not module_level_only:
                    visit(node.body, False)
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list) and children and isinstance(children[0], (ast.stmt, ast.ExceptHandler)):
                    visit([c for c in children if isinstance(c, ast.stmt)] +
                          [s for h in children if isinstance(h, ast.ExceptHandler) for s in h.body], top)

    visit(tree.body, True)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    return {path.stem: _imports(path, module_level_only) for path in PACKAGE.glob("*.py")}


def test_module_level_imports_have_no_cycle():
    graph = _graph(module_level_only=True)
    assert "pipeline" in graph and "sessions" in graph and "sampling" in graph and "verify" in graph
    state: dict[str, int] = {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, child])}")
            if child not in state:
                walk(child, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [])


def test_cli_and_distributed_do_not_import_each_other():
    graph = _graph(module_level_only=False)
    assert "distributed" in graph["cli"]  # the CLI dispatches --engine ray (lazily)
    assert "cli" not in graph["distributed"]
    assert "arguments" in graph["cli"] and "arguments" in graph["distributed"]


def test_file_verification_is_separate_from_the_manifest_format():
    graph = _graph(module_level_only=True)
    assert "verify" in graph["manifest"] and "manifest" not in graph["verify"]
    assert "pipeline" not in graph["sessions"] and "pipeline" not in graph["sampling"]
