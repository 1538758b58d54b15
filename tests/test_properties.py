"""Property-based tests (hypothesis) of the parsers that read untrusted input: scheduler configs, manifests,
relative paths, and both CLIs' argument checks. Each either accepts a value within the documented limits or
raises its documented error type; nothing else (no OverflowError, KeyError, MemoryError, traceback)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ncsn_runtime.config import check_scheduler_config
from ncsn_runtime.contract import GRAPHS
from ncsn_runtime.fileio import PathConfinementError, confined_path
from ncsn_runtime.manifest import MAX_SAMPLE_ELEMENTS, ExportDirectoryError, Manifest, parse_manifest
from ncsn_runtime.schedule import MAX_ANNEALED_STEPS, MAX_TOTAL_STEPS, MAX_TRAIN_TIMESTEPS

EXAMPLES = int(os.environ.get("NCSN_HYPOTHESIS_EXAMPLES", "300"))  # more for a deeper local search
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2, 10, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**9, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
                    max_leaves=8)
PARAMS = ("num_train_timesteps", "num_annealed_steps", "sigma_min", "sigma_max", "sampling_eps")


@SETTINGS
@given(st.dictionaries(st.sampled_from([*PARAMS, "_class_name", "other"]), NUMBERS, max_size=7))
def test_scheduler_config_parser_accepts_only_values_within_limits(config):
    try:
        checked = check_scheduler_config(config)
    except (TypeError, ValueError):
        return
    assert 1 <= checked["num_train_timesteps"] <= MAX_TRAIN_TIMESTEPS
    assert 1 <= checked["num_annealed_steps"] <= MAX_ANNEALED_STEPS
    assert checked["num_train_timesteps"] * checked["num_annealed_steps"] <= MAX_TOTAL_STEPS
    assert 0 < checked["sigma_min"] < checked["sigma_max"] < math.inf and 0 < checked["sampling_eps"] < math.inf


@SETTINGS
@given(st.integers(1, MAX_TRAIN_TIMESTEPS), st.integers(1, MAX_ANNEALED_STEPS),
       st.floats(1e-6, 1.0), st.floats(1.01, 100.0), st.floats(1e-9, 1.0))
def test_every_valid_config_builds_a_scheduler(levels, steps, sigma_min, ratio, eps):
    from ncsn_runtime import AnnealedLangevinDynamicsScheduler

    config = {"num_train_timesteps": levels, "num_annealed_steps": steps, "sigma_min": sigma_min,
              "sigma_max": sigma_min * ratio, "sampling_eps": eps}
    if levels * steps > MAX_TOTAL_STEPS:
        with pytest.raises(ValueError, match="exceeds the limit"):
            AnnealedLangevinDynamicsScheduler(**config)
        return
    scheduler = AnnealedLangevinDynamicsScheduler(**config)
    assert len(scheduler.timesteps) == levels and scheduler.step_size.dtype.name == "float32"


def _valid_manifest(sample_shape=(2,)) -> dict:
    def table(specs):
        return [spec.as_dict(sample_shape) for spec in specs]

    graphs = {key: {"file": GRAPHS[key].file, "inputs": table(GRAPHS[key].inputs), "outputs": table(GRAPHS[key].outputs)}
              for key in ("score", "step", "sampler")}
    files = {name: {"sha256": "ab" * 32, "bytes": 10} for name in ("score.onnx", "step.onnx", "sampler.onnx",
                                                                    "scheduler/scheduler_config.json")}
    return {"format": "ncsn-export", "format_version": 1, "scheduler_config": "scheduler/scheduler_config.json",
            "model": {"name": "m", "sample_shape": list(sample_shape), "dtype": "float32", "is_image": False,
                      "init_range": [0.0, 1.0], "data_range": [-1.0, 1.0], "final_denoise": False, "num_train_timesteps": 10},
            "graphs": graphs, "files": files, "opset": 18}


def _paths(value):
    """Every (container, key) inside a JSON value."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield value, key
            yield from _paths(child)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield value, index
            yield from _paths(child)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


def test_the_valid_manifest_parses(root):
    info = parse_manifest(root, _valid_manifest((1, 4, 4)))
    assert isinstance(info, Manifest) and info.model.sample_shape == (1, 4, 4)
    assert set(info.graphs) == {"score", "step", "sampler"}


@SETTINGS
@given(st.data())
def test_manifest_parser_with_one_value_replaced(root, data):
    manifest = _valid_manifest()
    places = list(_paths(manifest))
    container, key = data.draw(st.sampled_from(places))
    container[key] = data.draw(st.one_of(JSON, NUMBERS.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v)))))
    json.dumps(manifest)  # what a manifest.json can hold
    try:
        info = parse_manifest(root, copy.deepcopy(manifest))
    except ExportDirectoryError:
        return
    shape = info.model.sample_shape
    assert len(shape) >= 1 and all(isinstance(n, int) and n >= 1 for n in shape) and math.prod(shape) <= MAX_SAMPLE_ELEMENTS
    for relative in [info.scheduler_config, *info.files, *(graph.file for graph in info.graphs.values())]:
        assert confined_path(root, relative).resolve().is_relative_to(root.resolve())
    for graph in info.graphs.values():
        assert [t.name for t in graph.inputs] == [t.name for t in GRAPHS[graph.key].inputs]


@SETTINGS
@given(st.one_of(JSON, NUMBERS))
def test_manifest_parser_on_arbitrary_json(root, value):
    try:
        parse_manifest(root, value)
    except ExportDirectoryError:
        return
    pytest.fail(f"accepted {value!r}")


SEGMENTS = st.sampled_from(["a", "b.onnx", "..", ".", "", "/", "\\", "C:", "x\x00", "~", "scheduler", "%2e%2e"])


@SETTINGS
@given(st.lists(SEGMENTS, min_size=0, max_size=6).map("/".join) | st.text(max_size=12))
def test_confined_paths_stay_inside(root, relative):
    try:
        path = confined_path(root, relative)
    except PathConfinementError:
        return
    assert path.resolve().is_relative_to(root.resolve()) and ".." not in Path(relative).parts and not relative.startswith("/")


INTS = st.one_of(st.integers(-(2**64), 2**64), st.sampled_from([0, 1, 2**63 - 1, 2**63, 10**9]))


@SETTINGS
@given(num_samples=INTS, seed=INTS, steps=st.none() | INTS, batch=st.none() | INTS, nrow=st.none() | INTS,
       scale=st.none() | INTS, suffix=st.sampled_from([".npy", ".png", ".txt", ""]))
def test_sample_cli_argument_checks(tmp_path_factory, num_samples, seed, steps, batch, nrow, scale, suffix):
    from ncsn_runtime.cli import _check_args
    from ncsn_runtime.noise import MAX_SEED

    out = tmp_path_factory.getbasetemp() / f"out{suffix}"
    args = argparse.Namespace(num_samples=num_samples, seed=seed, steps=steps, batch_size=batch, nrow=nrow, output=str(out),
                              device_id=0, scale=scale, trajectory=None)
    try:
        _check_args(args)
    except ValueError:
        return
    assert suffix in (".npy", ".png") and num_samples >= 1 and seed >= 0 and seed + num_samples - 1 <= MAX_SEED
    assert (steps is None or steps >= 1) and (batch is None or batch >= 1) and (nrow is None or nrow >= 1)
    assert scale is None or 1 <= scale <= 16


@SETTINGS
@given(st.lists(st.sampled_from(["-n", "--seed", "--steps", "--batch-size", "--mode", "--provider", "-o", "1", "-5", "x", "nan",
                                 "99999999999999999999999", "fused", "cpu", "a.npy"]), max_size=8))
def test_sample_cli_parser_exits_2_or_parses(argv):
    from ncsn_runtime.cli import build_parser

    try:
        build_parser().parse_args(["export", *argv])
    except SystemExit as exit_:
        assert exit_.code == 2


@SETTINGS
@given(batch=NUMBERS, levels=NUMBERS, steps=NUMBERS, tolerance=NUMBERS)
def test_export_argument_checks(batch, levels, steps, tolerance):
    from ncsn_export.exporters.errors import ExportInputError
    from ncsn_export.exporters.inputs import MAX_VALIDATION_BATCH, check_export_arguments

    try:
        check_export_arguments(batch, levels, steps, tolerance)
    except ExportInputError:
        return
    assert isinstance(batch, int) and 1 <= batch <= MAX_VALIDATION_BATCH
    assert steps is None or 1 <= steps <= MAX_ANNEALED_STEPS  # None: the scheduler's own num_annealed_steps
    assert tolerance is None or (math.isfinite(tolerance) and tolerance > 0)
