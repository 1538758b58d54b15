"""onnxruntime's mobile usability checker, run on a graph and read back as numbers: :func:`check_usability`.

``python -m onnxruntime.tools.check_onnx_model_mobile_usability MODEL`` first optimizes the model at onnxruntime's
*basic* level, then, per execution provider (NNAPI, Core ML NeuralNetwork, Core ML MLProgram), estimates the
partitions onnxruntime would hand to it from the provider's list of operators and the static shapes, and logs
``N partitions with a total of X/Y nodes can be handled by the EP EP.`` and ``Model should perform well with EP as
is: YES|MAYBE|NO`` (YES needs one partition holding more than 75 % of the nodes). This module runs the same
function (:func:`onnxruntime.tools.mobile_helpers.usability_checker.analyze_model`) with a logger of its own and
parses those lines. What the verdict does not check: the per-operator caveats (ranks, attributes, data types the
provider's op builder accepts), the provider's own minimum OS / feature level, and speed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["EPS", "EpVerdict", "check_usability"]

EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")
_PARTITIONS = re.compile(r"^(\d+) partitions with a total of (\d+)/(\d+) nodes can be handled by the (.+) EP\.$")
_VERDICT = re.compile(r"^Model should perform well with (.+) as is: (YES|MAYBE|NO)$")
_UNSUPPORTED = re.compile(r"^\s*Unsupported ops: (.+)$")
_SIZES = re.compile(r"^\s*Partition sizes: \[(.*)\]$")


@dataclass
class EpVerdict:
    """The checker's figures for one execution provider (as the model is, shapes as they are)."""

    ep: str
    verdict: str = "NO"
    partitions: int = 0
    supported_nodes: int = 0
    nodes: int = 0
    largest_partition: int = 0
    unsupported_ops: tuple[str, ...] = ()

    @property
    def coverage(self) -> float:
        """Share of the nodes in the largest partition (0..1)."""
        return self.largest_partition / self.nodes if self.nodes else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "unsupported_ops": list(self.unsupported_ops), "coverage": round(self.coverage, 4)}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


def check_usability(path: str | Path, fixed_shapes: bool = False) -> dict[str, EpVerdict]:
    """Run onnxruntime's usability checker on the ONNX file ``path`` (external data beside it); EP name -> figures.

    ``fixed_shapes=False``: the model as it is (the first pass per provider). True: the checker's second pass "if
    the shapes were fixed", which it runs only for a model with dynamic inputs whose first verdict is not YES
    (providers without it are left out).
    """
    from onnxruntime.tools.mobile_helpers.usability_checker import analyze_model

    logger = logging.getLogger("ncsn_export.usability_checker")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = _Lines()
    logger.addHandler(handler)
    try:
        analyze_model(Path(path).resolve(), skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    return parse_checker_log(handler.lines, fixed_shapes)


def parse_checker_log(lines: list[str], fixed_shapes: bool = False) -> dict[str, EpVerdict]:
    """The per-provider figures from the checker's log lines (first partition line and verdict of each provider;
    with ``fixed_shapes``, those after its "Checking if model will perform better if the dynamic shapes are fixed")."""
    results: dict[str, EpVerdict] = {}
    current: EpVerdict | None = None
    verdict = re.compile(r"^Model should perform well with (.+) if modified to have fixed input shapes: (YES|MAYBE|NO)$"
                         ) if fixed_shapes else _VERDICT
    for line in lines:
        text = line.strip()
        if text.startswith("Checking ") and text[len("Checking "):] in EPS:
            current = EpVerdict(text[len("Checking "):])
            continue
        if fixed_shapes and text.startswith("Checking if model will perform better") and current is not None:
            current = EpVerdict(current.ep)
            continue
        if current is None or current.ep in results:
            continue
        if (match := _PARTITIONS.match(text)) and not current.nodes:
            current.partitions, current.supported_nodes, current.nodes = (int(match[1]), int(match[2]), int(match[3]))
        elif (match := _SIZES.match(line)) and not current.largest_partition:
            sizes = [int(size) for size in match[1].split(",") if size.strip()]
            current.largest_partition = max(sizes, default=0)
        elif (match := _UNSUPPORTED.match(line)) and not current.unsupported_ops:
            current.unsupported_ops = tuple(op.strip() for op in match[1].split(","))
        elif (match := verdict.match(text)) and match[1] == current.ep:
            current.verdict = match[2]
            results[current.ep] = current
    return results
