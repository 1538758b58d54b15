"""The JavaScript counter noise and scheduler (runtime/js) against the numpy spec (ncsn_runtime).

Reference values are computed here from ncsn_runtime, not stored. Needs ``node`` (>= 18); no npm packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ncsn_runtime import AnnealedLangevinDynamicsScheduler, noise

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "js" / "probe.mjs"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")

EDGE_SEEDS = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**53 - 1, 2**53, 2**53 + 1, 2**62 + 12345, 2**63 - 1]
EDGE_COUNTERS = [0, 1, 2**31, 2**32 - 1, 2**32, 2**53 - 1, 2**53 + 1, 2**63 - 1]
CONFIGS = [
    {"num_train_timesteps": 10, "num_annealed_steps": 100, "sigma_min": 0.01, "sigma_max": 1.0, "sampling_eps": 2e-5},
    {"num_train_timesteps": 232, "num_annealed_steps": 5, "sigma_min": 0.01, "sigma_max": 50.0, "sampling_eps": 6.2e-6},
    {
        "_class_name": "AnnealedLangevinDynamicsScheduler",
        "num_train_timesteps": 7,
        "num_annealed_steps": 3,
        "sigma_min": 0.1,
        "sigma_max": 20.0,
        "sampling_eps": 0.1,
    },
]


def run_probe(requests: list[dict]) -> list[dict]:
    """Run tests/js/probe.mjs on a list of requests; returns one {"ok", "value" | "error"} per request."""
    proc = subprocess.run([NODE, str(PROBE)], input=json.dumps(requests), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(requests)
    return results


def values(result: dict, dtype) -> np.ndarray:
    assert result["ok"], result.get("error")
    return np.asarray(result["value"], dtype=dtype)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (same-sign values)."""
    a32, b32 = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return np.abs(a32.view(np.int32).astype(np.int64) - b32.view(np.int32).astype(np.int64))


def test_philox_words_match_numpy_on_edge_seeds_counters_and_streams():
    cases = [(counter, stream) for counter in EDGE_COUNTERS for stream in (0, 1, 2**32 - 1)]
    requests = [
        {"op": "words", "seeds": [str(seed) for seed in EDGE_SEEDS], "counter": str(counter), "num_elements": 9, "stream": stream}
        for counter, stream in cases
    ]
    for (counter, stream), result in zip(cases, run_probe(requests), strict=True):
        expected = noise.philox_words(np.array(EDGE_SEEDS, dtype=np.uint64), counter, 9, stream)
        got = values(result, np.uint64).reshape(expected.shape)
        np.testing.assert_array_equal(got, expected, err_msg=f"counter={counter} stream={stream}")


def test_philox_known_answer():
    # Philox4x32-10 known-answer vector (Random123 kat_vectors): counter 0, key 0.
    (result,) = run_probe([{"op": "words", "seeds": ["0"], "counter": "0", "num_elements": 4, "stream": 0}])
    assert values(result, np.uint64).tolist() == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_normal_uniform_and_initial_sample_match_numpy():
    rng = np.random.default_rng(0)
    seeds = [int(s) for s in rng.integers(0, 2**63 - 1, 16, dtype=np.int64)] + EDGE_SEEDS
    seed_strings = [str(seed) for seed in seeds]
    shapes = [[1, 28, 28], [2], [7], [3, 5]]
    requests, expected = [], []
    for counter in EDGE_COUNTERS:
        for shape in shapes:
            requests.append({"op": "normal", "seeds": seed_strings, "counter": str(counter), "shape": shape, "stream": 0})
            expected.append(("normal", noise.counter_normal(seeds, counter, shape)))
    for shape in shapes:
        requests.append({"op": "uniform", "seeds": seed_strings, "counter": "3", "shape": shape, "stream": 1})
        expected.append(("uniform", noise.counter_uniform(seeds, 3, shape)))
        requests.append({"op": "initial", "seeds": seed_strings, "shape": shape, "low": -1.0, "high": 1.0})
        expected.append(("initial", noise.initial_sample(seeds, shape, -1.0, 1.0)))
    total = exact = 0
    for (kind, reference), result in zip(expected, run_probe(requests), strict=True):
        got = values(result, np.float32).reshape(reference.shape)
        if kind == "normal":
            # Box-Muller runs in float64 libm (numpy vs V8); one float64 ulp could flip a float32 rounding.
            distance = ulp_distance(got, reference)
            assert distance.max() <= 1, f"normal differs by {distance.max()} float32 ulps"
            total += distance.size
            exact += int((distance == 0).sum())
        else:
            np.testing.assert_array_equal(got, reference, err_msg=kind)
    assert exact / total > 0.999, f"only {exact}/{total} normals bit-identical"


def test_seed_forms_number_bigint_and_string_agree():
    big = 2**53 - 1
    forms = [{"number": big}, {"bigint": str(big)}, str(big)]
    results = run_probe([{"op": "normal", "seeds": [form], "counter": "5", "shape": [6], "stream": 0} for form in forms])
    reference = noise.counter_normal([big], 5, [6])
    for result in results:
        np.testing.assert_array_equal(values(result, np.float32).reshape(reference.shape), reference)
    huge = 2**63 - 1
    (result,) = run_probe([{"op": "normal", "seeds": [{"bigint": str(huge)}], "counter": "0", "shape": [4], "stream": 0}])
    np.testing.assert_array_equal(values(result, np.float32), noise.counter_normal([huge], 0, [4])[0])


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ({"number": 2**53}, "pass it as a BigInt or a decimal string"),
        ({"number": 1.5}, "must be an integer"),
        ({"number": -1}, "must be in [0, 9223372036854775807]"),
        (str(2**63), "must be in [0, 9223372036854775807]"),
        ("12abc", "decimal integer string"),
        (None, "must be a Number, BigInt or decimal string"),
    ],
)
def test_bad_seeds_are_rejected_with_clear_messages(seed, message):
    (result,) = run_probe([{"op": "normal", "seeds": [seed], "counter": "0", "shape": [4], "stream": 0}])
    assert not result["ok"]
    assert message in result["error"]
    assert "seed[0]" in result["error"]


def test_seeds_for_batch_matches_numpy_and_checks_range():
    top = 2**63 - 4  # the last of 4 seeds is 2**63 - 1, as noise.seeds_for_batch allows
    results = run_probe(
        [
            {"op": "seeds_for_batch", "seed": str(top), "batch_size": 4},
            {"op": "seeds_for_batch", "seed": {"number": 7}, "batch_size": 3},
            {"op": "seeds_for_batch", "seed": ["1", "99", str(2**62)], "batch_size": 3},
            {"op": "seeds_for_batch", "seed": str(top + 1), "batch_size": 4},
            {"op": "seeds_for_batch", "seed": ["1", "2"], "batch_size": 3},
        ]
    )
    assert [int(s) for s in results[0]["value"]] == noise.seeds_for_batch(top, 4).tolist()
    assert [int(s) for s in results[1]["value"]] == noise.seeds_for_batch(7, 3).tolist()
    assert [int(s) for s in results[2]["value"]] == [1, 99, 2**62]
    assert not results[3]["ok"] and "`seed` must be in [0, 9223372036854775804]" in results[3]["error"]
    assert not results[4]["ok"] and "has 2 entries but batchSize is 3" in results[4]["error"]


def _python_scheduler(config: dict, request: dict) -> AnnealedLangevinDynamicsScheduler:
    scheduler = AnnealedLangevinDynamicsScheduler.from_config(config)
    if "set_timesteps" in request:
        options = request["set_timesteps"]
        scheduler.set_timesteps(
            num_inference_steps=options.get("numInferenceSteps"),
            sampling_eps=options.get("samplingEps"),
            timesteps=options.get("timesteps"),
        )
    if "set_sigmas" in request:
        options = request["set_sigmas"]
        low, high, eps = options.get("sigmaMin"), options.get("sigmaMax"), options.get("samplingEps")
        scheduler.set_sigmas(options["numInferenceSteps"], low, high, eps)
    return scheduler


def test_schedule_matches_numpy_scheduler():
    requests = []
    for config in CONFIGS:
        top = config["num_train_timesteps"]
        requests.append({"op": "schedule", "config": config})
        for count in sorted({1, 2, 3, top // 2 or 1, top}):
            requests.append({"op": "schedule", "config": config, "set_timesteps": {"numInferenceSteps": count}})
        requests.append({"op": "schedule", "config": config, "set_timesteps": {"timesteps": [0, top - 1], "samplingEps": 3e-4}})
        for options in ({"sigmaMin": 0.05, "sigmaMax": 3.0}, {"samplingEps": 1e-3}):
            requests.append({"op": "schedule", "config": config, "set_sigmas": {"numInferenceSteps": min(4, top), **options}})
    for request, result in zip(requests, run_probe(requests), strict=True):
        assert result["ok"], result.get("error")
        scheduler = _python_scheduler(request["config"], request)
        got = result["value"]
        assert got["timesteps"] == scheduler.timesteps.tolist(), request
        # float64 exp/log in numpy vs V8 may differ by one float64 ulp -> at most one float32 ulp after rounding
        references = {"sigmas": scheduler.sigmas, "step_size": scheduler.step_size, "train_sigmas": scheduler.train_sigmas}
        for key, reference in references.items():
            assert ulp_distance(np.asarray(got[key], np.float32), reference).max() <= 1, (key, request)


def test_step_and_add_noise_match_numpy_scheduler():
    config = CONFIGS[0]
    rng = np.random.default_rng(1)
    sample, score, z = (rng.standard_normal(24).astype(np.float32) * scale for scale in (1.0, 30.0, 1.0))
    scheduler = AnnealedLangevinDynamicsScheduler.from_config(config)
    scheduler.set_timesteps(5)
    level = int(scheduler.timesteps[2])
    expected_step = scheduler.step(score.reshape(4, 6), level, sample.reshape(4, 6), noise=z.reshape(4, 6)).prev_sample
    full = AnnealedLangevinDynamicsScheduler.from_config(config)
    levels = np.array([0, 3, 9, 4])
    expected_noisy = full.add_noise(sample.reshape(4, 6), z.reshape(4, 6), levels)
    step_result, noise_result, bad_level = run_probe(
        [
            {
                "op": "step",
                "config": config,
                "num_inference_steps": 5,
                "timestep": level,
                "sample": sample.tolist(),
                "score": score.tolist(),
                "noise": z.tolist(),
            },
            {"op": "add_noise", "config": config, "sample": sample.tolist(), "noise": z.tolist(), "timesteps": levels.tolist()},
            {
                "op": "step",
                "config": config,
                "num_inference_steps": 5,
                "timestep": 1,
                "sample": sample.tolist(),
                "score": score.tolist(),
                "noise": z.tolist(),
            },
        ]
    )
    np.testing.assert_array_equal(values(step_result, np.float32), expected_step.ravel())
    np.testing.assert_array_equal(values(noise_result, np.float32), expected_noisy.ravel())
    assert not bad_level["ok"] and "is not in the current schedule" in bad_level["error"]
