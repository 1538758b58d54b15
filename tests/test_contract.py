"""The JavaScript and C hosts' constants equal the one contract (ncsn_runtime.contract, ncsn_runtime.noise).

The hosts keep a few facts as literals (graph I/O names, file names, noise constants); these tests read
those literals from the source files and compare them with the Python modules, so the contract stays
defined once (docs/design.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ncsn_runtime import noise
from ncsn_runtime.contract import GRAPHS

ROOT = Path(__file__).resolve().parent.parent
MANIFEST_JS = ROOT / "runtime" / "js" / "manifest.js"
NOISE_JS = ROOT / "runtime" / "js" / "noise.js"
C_SOURCE = ROOT / "examples" / "c" / "ncsn_sample.c"


def _symbolic(spec) -> list[str]:
    """A TensorSpec's shape as the hosts write it: 'batch' / 'num_levels' and '...' for the sample dims."""
    return [str(dim) for dim in spec.shape]


def _python_io(key: str) -> dict[str, list[list]]:
    return {side: [[t.name, t.dtype, _symbolic(t)] for t in getattr(GRAPHS[key], side)] for side in ("inputs", "outputs")}


def _js_graph_io() -> dict[str, dict[str, list[list]]]:
    """runtime/js/manifest.js's GRAPH_IO literal, read as JSON (quotes and keys normalized, trailing commas dropped)."""
    text = MANIFEST_JS.read_text(encoding="utf-8")
    block = re.search(r"export const GRAPH_IO = (\{.*?\n\});", text, re.S)
    assert block, "GRAPH_IO not found in runtime/js/manifest.js"
    literal = re.sub(r"(\w+): ", r'"\1": ', block.group(1).replace("'", '"'))
    return json.loads(re.sub(r",(\s*[\]}])", r"\1", literal))


def test_js_graph_contract_equals_the_python_contract():
    contract = _js_graph_io()
    assert set(contract) == set(GRAPHS), sorted(contract)
    for key, io in contract.items():
        assert io == _python_io(key), key
    assert "GRAPH_CONTRACT = Object.fromEntries(Object.entries(GRAPH_IO)" in MANIFEST_JS.read_text(encoding="utf-8")


def test_c_graph_contract_equals_the_python_contract():
    """examples/c's CONTRACT table (names, dtypes, symbolic shapes of every graph, checked against the manifest)."""
    text = C_SOURCE.read_text(encoding="utf-8")
    block = re.search(r"static const GraphSpec CONTRACT\[\] = \{(.*?)\n\};", text, re.S)
    assert block, "CONTRACT not found in examples/c/ncsn_sample.c"
    contract = {}
    for row in re.split(r"\n    (?=\{\")", block.group(1).strip()):
        key = re.match(r'\{"(\w+)"', row).group(1)
        tensors = [[name, dtype, [dim for dim in re.findall(r'"([^"]+)"', dims)]]
                   for name, dtype, dims in re.findall(r'\{"(\w+)", "(\w+)", \{([^}]*)\}\}', row)]
        count = int(re.search(r"\}, (\d),\s*\{", row).group(1))
        contract[key] = {"inputs": tensors[:count], "outputs": tensors[count:]}
    assert set(contract) == set(GRAPHS), sorted(contract)
    for key, io in contract.items():
        assert io == _python_io(key), key


@pytest.mark.parametrize("name", ["PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1", "LANGEVIN_STREAM", "INIT_STREAM",
                                  "INPAINT_STREAM"])
def test_js_noise_constants_equal_the_python_noise(name):
    match = re.search(rf"export const {name} = (0x[0-9a-fA-F]+|\d+);", NOISE_JS.read_text(encoding="utf-8"))
    assert match, f"{name} not found in runtime/js/noise.js"
    assert int(match.group(1), 0) == getattr(noise, name)


def test_c_sampler_io_and_file_equal_the_python_contract():
    text = C_SOURCE.read_text(encoding="utf-8")
    inputs = re.search(r"static const char \*SAMPLER_INPUTS\[\] = \{([^}]*)\};", text)
    output = re.search(r'static const char \*SAMPLER_OUTPUT = "(\w+)";', text)
    assert inputs and output
    assert re.findall(r'"(\w+)"', inputs.group(1)) == list(GRAPHS["sampler"].input_names)
    assert [output.group(1)] == list(GRAPHS["sampler"].output_names)
    # the graph's file is the manifest's graphs.sampler.file (checked, confined, verified), not a literal
    assert "facts.sampler_file = file->string" in text


def test_c_inpaint_io_equals_the_python_contract():
    text = C_SOURCE.read_text(encoding="utf-8")
    inputs = re.search(r"static const char \*INPAINT_INPUTS\[\] = \{([^}]*)\};", text)
    assert inputs and re.findall(r'"(\w+)"', inputs.group(1)) == list(GRAPHS["inpaint"].input_names)
    assert "facts.inpaint_file = file->string" in text  # graphs.inpaint.file from the manifest, verified
    assert GRAPHS["inpaint"].output_names == GRAPHS["sampler"].output_names


def test_c_noise_constants_equal_the_python_noise():
    text = C_SOURCE.read_text(encoding="utf-8")
    for name in ("PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1"):
        assert re.search(rf"0x{getattr(noise, name):08x}u", text, re.I), name
    stream = re.search(r"uint32_t c\[4\] = \{\(uint32_t\)\(e / 4\), 0u, 0u, (\d+)u\};", text)
    assert stream, "initial_sample's counter block not found in examples/c/ncsn_sample.c"
    assert int(stream.group(1)) == noise.INIT_STREAM


def test_c_limits_equal_the_python_limits():
    """examples/c's resource limits (#define) are the Python runtime's (SECURITY.md's one table)."""
    from ncsn_runtime import fileio, manifest, schedule
    from ncsn_runtime.providers import MAX_THREADS

    text = C_SOURCE.read_text(encoding="utf-8")
    defines = {name: int(base) << int(shift or 0)  # `N`, `NULL` or `(NLL << K)`
               for name, base, shift in re.findall(r"#define (MAX_\w+) \(?(\d+)(?:U?LL)?(?: << (\d+))?\)?", text)}
    assert defines["MAX_THREADS"] == MAX_THREADS
    assert defines["MAX_FILES"] == manifest.MAX_FILES and defines["MAX_FILE_BYTES"] == manifest.MAX_FILE_BYTES
    assert defines["MAX_JSON_BYTES"] == fileio.MAX_JSON_BYTES
    assert defines["MAX_SAMPLE_ELEMENTS"] == manifest.MAX_SAMPLE_ELEMENTS
    assert defines["MAX_TRAIN_TIMESTEPS"] == schedule.MAX_TRAIN_TIMESTEPS
    assert defines["MAX_ANNEALED_STEPS"] == schedule.MAX_ANNEALED_STEPS
    assert defines["MAX_TOTAL_STEPS"] == schedule.MAX_TOTAL_STEPS
