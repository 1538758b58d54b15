"""The graph contract: the one place that names every graph, file, input, output, dtype and shape.

Every host reads these facts from here (Python exporter and runtime) or from the manifest that the
exporter writes from here (JavaScript, C); ``tests/test_contract.py`` compares the JavaScript and C
constants with this module. The design behind it is ``docs/design.md``.

Shapes are written symbolically: ``"batch"`` is the dynamic batch axis, ``"num_levels"`` the dynamic
schedule length, and :data:`SAMPLE_DIMS` stands for the per-sample shape of the model (for example
``[1, 28, 28]``), expanded by :meth:`GraphSpec.concrete_inputs`. A shape ``()`` is a scalar.

Graphs (``manifest["graphs"][key]``):

* ``score``: the score network alone. ``sample f32[B, ...], timestep i64[B] -> score f32[B, ...]``.
* ``step``: network + one Langevin step with the counter noise drawn in the graph.
* ``sampler``: the whole annealed loop (an ONNX ``Loop``) with in-graph counter noise.
* ``gpu_step``: network + one Langevin step with the noise ``z`` as an input: no control flow, no
  bitwise ops, no float64, so it can be captured as a CUDA graph and run on WebGPU.
* ``gpu_sampler``: the fused loop with the same I/O as ``sampler``, whose noise uses only ops that
  have CUDA kernels (no bitwise ops).
* ``inpaint``: the ``sampler`` loop conditioned on ``known`` and a binary ``mask`` (1 = known; Song & Ermon
  2019, Section 5): the known region is set to ``known + sigma_i * z_i`` (:data:`INPAINT_STREAM`, counter
  ``i``) when level ``i`` starts and after every Langevin step; the result holds ``known`` there
  (``ncsn_runtime.inpaint``, ``ncsn_export/exporters/inpaint_graph.py``). Not a sampling graph: no ``graph=``.

Noise (see :mod:`ncsn_runtime.noise` for the definition): stream :data:`LANGEVIN_STREAM` at counter
``langevin_counter(i, t, T) = i * T + t`` for annealed step ``t`` of schedule position ``i``;
:data:`INIT_STREAM` counter 0 for the initial sample; :data:`INPAINT_STREAM` counter ``i`` for
inpainting. The final denoising step (``final_denoise``) draws no noise: it is the Langevin update
with ``step_size = 2 * sigma_last**2`` and ``z = 0``, i.e. ``x + sigma_last**2 * score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .noise import INIT_STREAM, INPAINT_STREAM, LANGEVIN_STREAM, langevin_counter

__all__ = [
    "ARTIFACTS",
    "BATCH",
    "GRAPHS",
    "GRAPH_NAMES",
    "INIT_STREAM",
    "INPAINT_STREAM",
    "LANGEVIN_STREAM",
    "NUM_LEVELS",
    "SAMPLE_DIMS",
    "SAMPLING_GRAPHS",
    "GraphSpec",
    "TensorSpec",
    "langevin_counter",
]

BATCH = "batch"
NUM_LEVELS = "num_levels"
SAMPLE_DIMS = "..."  # placeholder for the model's per-sample shape inside a symbolic shape

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "ncsn-export"
FORMAT_VERSION = 1
SCHEDULER_CONFIG_PATH = "scheduler/scheduler_config.json"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype (numpy name) and symbolic shape."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]

    def concrete_shape(self, sample_shape: Sequence[int]) -> list[str | int]:
        """The shape with :data:`SAMPLE_DIMS` replaced by ``sample_shape`` (symbols stay strings)."""
        out: list[str | int] = []
        for dim in self.shape:
            if dim == SAMPLE_DIMS:
                out.extend(int(size) for size in sample_shape)
            else:
                out.append(dim)
        return out

    def as_dict(self, sample_shape: Sequence[int]) -> dict[str, object]:
        """``{"name", "dtype", "shape"}`` as written in the manifest's graph I/O table."""
        return {"name": self.name, "dtype": self.dtype, "shape": self.concrete_shape(sample_shape)}


@dataclass(frozen=True)
class GraphSpec:
    """One graph of an export: manifest key, file name, inputs and outputs (in order)."""

    key: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def concrete_inputs(self, sample_shape: Sequence[int]) -> list[dict[str, object]]:
        return [spec.as_dict(sample_shape) for spec in self.inputs]

    def concrete_outputs(self, sample_shape: Sequence[int]) -> list[dict[str, object]]:
        return [spec.as_dict(sample_shape) for spec in self.outputs]


_SAMPLE = TensorSpec("sample", "float32", (BATCH, SAMPLE_DIMS))
_SEED = TensorSpec("seed", "int64", (BATCH,))
_LEVEL = TensorSpec("timestep", "int64", ())
_STEP_SIZE = TensorSpec("step_size", "float32", ())
_NEXT = TensorSpec("next_sample", "float32", (BATCH, SAMPLE_DIMS))
_SAMPLER_INPUTS = (
    _SAMPLE,
    _SEED,
    TensorSpec("timesteps", "int64", (NUM_LEVELS,)),
    TensorSpec("step_sizes", "float32", (NUM_LEVELS,)),
    TensorSpec("num_annealed_steps", "int64", ()),
)
# ONNX forbids an output named like an input, hence final_sample / next_sample.
_FINAL = TensorSpec("final_sample", "float32", (BATCH, SAMPLE_DIMS))

GRAPHS: dict[str, GraphSpec] = {
    spec.key: spec
    for spec in (
        GraphSpec("score", "score.onnx",
                  (_SAMPLE, TensorSpec("timestep", "int64", (BATCH,))),
                  (TensorSpec("score", "float32", (BATCH, SAMPLE_DIMS)),),
                  "the score network s(x, level)"),
        GraphSpec("step", "step.onnx",
                  (_SAMPLE, _SEED, _LEVEL, _STEP_SIZE, TensorSpec("counter", "int64", ())),
                  (_NEXT,),
                  "network + one Langevin step, counter noise in the graph"),
        GraphSpec("sampler", "sampler.onnx", _SAMPLER_INPUTS, (_FINAL,),
                  "the whole annealed loop (ONNX Loop) + network, counter noise in the graph"),
        GraphSpec("gpu_step", "gpu_step.onnx",
                  (_SAMPLE, TensorSpec("noise", "float32", (BATCH, SAMPLE_DIMS)), _LEVEL, _STEP_SIZE),
                  (_NEXT,),
                  "network + one Langevin step, noise z as an input (CUDA graphs, WebGPU)"),
        GraphSpec("gpu_sampler", "gpu_sampler.onnx", _SAMPLER_INPUTS, (_FINAL,),
                  "the fused loop with noise from ops that have CUDA kernels (no bitwise ops)"),
        GraphSpec("inpaint", "inpaint.onnx",
                  (*_SAMPLER_INPUTS, TensorSpec("sigmas", "float32", (NUM_LEVELS,)),
                   TensorSpec("known", "float32", (BATCH, SAMPLE_DIMS)), TensorSpec("mask", "float32", (BATCH, SAMPLE_DIMS))),
                  (_FINAL,),
                  "the sampler loop conditioned on a known image and a binary mask (1 = known), counter noise in the graph"),
    )
}
GRAPH_NAMES: tuple[str, ...] = tuple(GRAPHS)
SAMPLING_GRAPHS: tuple[str, ...] = tuple(key for key in GRAPHS if key != "inpaint")  # graphs that sample (graph=)

# Optional torch artifacts (manifest key -> file).
ARTIFACTS: dict[str, str] = {"torchscript": "sampler.pt", "torch_export": "sampler.pt2"}

# ORT-format models (``--artifacts ort``, onnxruntime Mobile / minimal builds): one ``ort/KEY.ort`` per shipped ONNX
# graph, listed under ``manifest["artifacts"]["ort:KEY"]``, with the operators and types they need for a reduced build
# in ``ort/required_operators.config`` (``manifest["artifacts"]["ort"]``). Same inputs / outputs as the ONNX graph.
ORT_DIR = "ort"
ORT_PREFIX = "ort:"
ORT_CONFIG = f"{ORT_DIR}/required_operators.config"


def ort_file(key: str) -> str:
    """Relative path of graph ``key``'s ORT-format model (``ort/score.ort``)."""
    return f"{ORT_DIR}/{key}.ort"
