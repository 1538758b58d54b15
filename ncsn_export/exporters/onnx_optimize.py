"""The exporter's graph optimizer without the rewrite rule that costs most of the trace: :func:`optimize_exported`.

``torch.onnx.export(dynamo=True)`` ends with onnxscript's ``optimize_ir`` (constant folding + its default rewrite
rules + clean-up passes) and ``onnx_fusions.fuse``. Profiled on the default 0.5 M-parameter RefineNet
(``bench/bench_export_time.py --profile-rules``), one rule, ``SlicesSplit`` (several Slices of one tensor into one
Split), took 48 of the 54 s spent in all rewrite rules and matched nothing: its matcher tries every node
against a multi-output pattern. This module runs the same passes in the same order with that rule left out; every
other rule and pass is the exporter's own. Where onnxscript's internals differ from what this expects (another
version), it falls back to the exporter's full optimizer.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("ncsn_export")

SKIPPED_RULES = ("SlicesSplit",)  # expensive, and Slice vs Split is only a graph-size difference


def _rules() -> list[Any] | None:
    try:
        from onnxscript import rewriter

        rules = list(rewriter._DEFAULT_REWRITE_RULES)  # no public name for the exporter's default rule list
    except (ImportError, AttributeError):
        return None
    return [rule for rule in rules if getattr(rule, "name", None) not in SKIPPED_RULES]


def optimize_exported(program: Any) -> str:
    """Optimize ``program`` (a ``torch.onnx.ONNXProgram`` exported with ``optimize=False``) in place.

    Returns ``"fast"`` (the exporter's passes minus :data:`SKIPPED_RULES`) or ``"exporter"`` (its own optimizer,
    when this onnxscript's internals are not the expected ones).
    """
    rules = _rules()
    try:
        import onnx_ir.passes.common as common_passes
        from onnx_ir.passes import PassManager, Sequential
        from onnxscript import rewriter
        from onnxscript.optimizer import _constant_folding
        from onnxscript.rewriter import onnx_fusions
    except (ImportError, AttributeError):
        rules = None
    if not rules:
        logger.debug("onnxscript %s: using the exporter's own optimizer", _version())
        program.optimize()
        return "exporter"
    model = program.model
    passes = Sequential(
        common_passes.InlinePass(),
        PassManager(
            [
                _constant_folding.FoldConstantsPass(
                    shape_inference=True,
                    input_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                    output_size_limit=_constant_folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                ),
                rewriter.RewritePass(rules),
                common_passes.RemoveUnusedNodesPass(),
                common_passes.RemoveUnusedFunctionsPass(),
                common_passes.RemoveUnusedOpsetsPass(),
            ],
            steps=2,
            early_stop=True,
        ),
        common_passes.RemoveUnusedNodesPass(),
        common_passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common_passes.LiftSubgraphInitializersToMainGraphPass(),
        common_passes.DeduplicateInitializersPass(),
        common_passes.CommonSubexpressionEliminationPass(),
        common_passes.OutputFixPass(),
        common_passes.NameFixPass(),
    )
    passes(model)
    onnx_fusions.fuse(model)
    return "fast"


def _version() -> str:
    try:
        import onnxscript

        return str(onnxscript.__version__)
    except ImportError:  # pragma: no cover - onnxscript is a dependency of the dynamo exporter
        return "?"
