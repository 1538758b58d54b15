"""Write ``ncsn_export/exporters/ort_kernels.json``: which op/dtype pairs onnxruntime has kernels for, per EP.

Sources (named in the JSON's ``sources``):

* ``cpu``: the installed onnxruntime's own kernel registry (``get_all_opkernel_def()``, the data that
  onnxruntime's ``tools/python/gen_opkernel_doc.py`` renders as ``docs/OperatorKernels.md``).
* ``cuda``: the CUDAExecutionProvider section of onnxruntime's ``docs/OperatorKernels.md`` (the ai.onnx
  rows; pass the file, e.g. ``raw.githubusercontent.com/microsoft/onnxruntime/<commit>/docs/OperatorKernels.md``).
* ``webgpu``: onnxruntime's ``js/web/docs/webgpu-operators.md`` (op names and opset ranges; it lists no
  dtypes), with the WebGPU EP's documented dtype limits: no float64, no int64 arithmetic (int64 only in
  the shape / index / data-movement ops below), and therefore no bitwise ops and no ``Loop`` (not listed).

Only the ai.onnx domain, and only kernel rows still valid at opset >= ``MIN_OPSET``, are kept.

    python scripts/gen_kernel_table.py --cuda-doc OperatorKernels.md --cuda-commit <sha> \\
        --webgpu-doc webgpu-operators.md --webgpu-commit <sha>
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "ncsn_export" / "exporters" / "ort_kernels.json"
MIN_OPSET = 13
# WebGPU EP dtypes (WGSL has f32, f16, i32, u32, bool; no f64; int64 is held as 32-bit and only moved or indexed).
WEBGPU_TYPES = ["bool", "float", "float16", "int32", "uint32"]
WEBGPU_INT64_OPS = {"Cast", "Concat", "Expand", "Flatten", "Gather", "GatherElements", "Range", "Reshape", "Shape",
                    "Slice", "Squeeze", "Tile", "Transpose", "Unsqueeze", "Where"}
# Type-constraint names per op for WebGPU rows (the list has no parameters column): from onnx's schemas.


def _short(type_name: str) -> str:
    """``tensor(float)`` -> ``float``; ``seq(tensor(float))`` -> ``seq(float)``."""
    match = re.fullmatch(r"(\w+)\((.*)\)", type_name.strip())
    if not match:
        return type_name.strip()
    kind, inner = match.groups()
    return inner if kind == "tensor" else f"{kind}({_short(inner)})"


def _range(text: str) -> tuple[int, int | None]:
    text = text.strip()
    if text.endswith("+"):
        return int(text[:-1]), None
    if text.startswith("["):
        low, high = text.strip("[]").split(",")
        return int(low), int(high)
    return int(text), int(text)


def cpu_table() -> tuple[dict, str]:
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    table: dict[str, list] = {}
    for kernel in state.get_all_opkernel_def():
        if kernel.provider != "CPUExecutionProvider" or kernel.domain not in ("", "ai.onnx"):
            continue
        since, until = kernel.version_range
        until = None if until >= 2**31 - 1 else until
        if until is not None and until < MIN_OPSET:
            continue
        types = {name: sorted({_short(t) for t in allowed}) for name, allowed in kernel.type_constraints.items()}
        _merge(table.setdefault(kernel.op_name, []), since, until, types)
    return table, f"onnxruntime {ort.__version__} get_all_opkernel_def() (CPUExecutionProvider, ai.onnx)"


def _merge(rows: list, since: int, until: int | None, types: dict[str, list[str]]) -> None:
    """Typed kernels are registered once per dtype: merge rows with the same version range."""
    for row in rows:
        if row[0] == since and row[1] == until:
            for name, allowed in types.items():
                row[2][name] = sorted(set(row[2].get(name, [])) | set(allowed))
            return
    rows.append([since, until, types])


def cuda_table(doc: Path) -> dict[str, list]:
    """Rows of the CUDAExecutionProvider / ai.onnx section of OperatorKernels.md."""
    text = doc.read_text()
    start = text.index("## Operators implemented by CUDAExecutionProvider")
    end = text.find('<a name="', start)
    section = text[start:end if end > 0 else None]
    table: dict[str, list] = {}
    domain, op = None, None
    for line in section.splitlines():
        match = re.match(r"\|\*\*Operator Domain:\*\* \*([\w.]+)\*", line)
        if match:
            domain = match.group(1)
            continue
        cells = line.split("|")
        if domain != "ai.onnx" or len(cells) < 6 or line.startswith("|--") or cells[1] == "Op Name":
            continue
        op = cells[1] or op
        since, until = _range(cells[3])
        if until is not None and until < MIN_OPSET:
            continue
        types = {}
        for part in cells[4].split("<br/>"):
            match = re.match(r"\s*\*\*(\w+)\*\* = (.*)", part)
            if match:
                types[match.group(1)] = sorted(_short(t.strip()) for t in match.group(2).split(", "))
        _merge(table.setdefault(op, []), since, until, types)
    return table


def webgpu_table(doc: Path) -> dict[str, list]:
    """Rows of webgpu-operators.md (ai.onnx), typed with the WebGPU dtype limits."""
    import onnx.defs

    table: dict[str, list] = {}
    for line in doc.read_text().splitlines():
        match = re.match(r"\|\s*(\w+)\s*\|\s*ai\.onnx\(([^)]*)\)", line)
        if not match:
            continue
        op = match.group(1)
        allowed = WEBGPU_TYPES + (["int64"] if op in WEBGPU_INT64_OPS else [])
        for part in match.group(2).split(","):
            low, _, high = part.partition("-")
            since = int(low.rstrip("+"))
            until = None if part.endswith("+") else int(high or low)
            if until is not None and until < MIN_OPSET:
                continue
            try:
                schema = onnx.defs.get_schema(op, until or onnx.defs.onnx_opset_version(), "")
                names = [constraint.type_param_str for constraint in schema.type_constraints]
            except onnx.defs.SchemaError:
                names = ["T"]
            _merge(table.setdefault(op, []), since, until, {name: list(allowed) for name in names})
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda-doc", type=Path, required=True, help="onnxruntime docs/OperatorKernels.md")
    parser.add_argument("--cuda-commit", required=True, help="onnxruntime commit the OperatorKernels.md is from")
    parser.add_argument("--webgpu-doc", type=Path, required=True, help="onnxruntime js/web/docs/webgpu-operators.md")
    parser.add_argument("--webgpu-commit", required=True, help="onnxruntime commit the webgpu-operators.md is from")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    cpu, cpu_source = cpu_table()
    data = {
        "format": "ep -> op (ai.onnx) -> [[since_version, until_version or null, {type_constraint: [dtypes]}], ...]",
        "min_opset": MIN_OPSET,
        "sources": {
            "cpu": cpu_source,
            "cuda": f"microsoft/onnxruntime@{args.cuda_commit} docs/OperatorKernels.md, CUDAExecutionProvider ai.onnx rows",
            "webgpu": f"microsoft/onnxruntime@{args.webgpu_commit} js/web/docs/webgpu-operators.md (ops, opsets) + the "
                      f"WebGPU EP's documented limits: dtypes {WEBGPU_TYPES}, int64 only in {sorted(WEBGPU_INT64_OPS)}",
        },
        "providers": {"cpu": cpu, "cuda": cuda_table(args.cuda_doc), "webgpu": webgpu_table(args.webgpu_doc)},
    }
    for table in data["providers"].values():
        for rows in table.values():
            rows.sort(key=lambda row: row[0])
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    # one op per line: diffable, still compact
    text = re.sub(r'(?<=[{,])("[A-Za-z]+":\[\[)', r"\n\1", text)
    args.output.write_text(text + "\n")
    counts = {ep: len(table) for ep, table in data["providers"].items()}
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes): ops per EP {counts}")


if __name__ == "__main__":
    main()
