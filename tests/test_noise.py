"""The counter-based noise contract: known answers, torch == numpy, batch independence, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ncsn_runtime import noise
from scipy import stats

from ncsn_export import noise as torch_noise

EDGE_SEEDS = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**62 + 12345, 2**63 - 1], dtype=np.int64)
EDGE_COUNTERS = [0, 1, 2**31, 2**32 - 1, 2**32, 2**32 + 7, 2**62, 2**63 - 1]


@pytest.mark.parametrize(
    "counter, key, expected",
    [  # Known-answer vectors of Philox4x32-10 published with Random123 (Salmon et al. 2011).
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in noise.philox4x32(counter, key)) == expected
    words = torch_noise.philox4x32(*(torch.tensor(c, dtype=torch.int64) for c in counter + key))
    assert tuple(int(w) for w in words) == expected


@pytest.mark.parametrize("counter", EDGE_COUNTERS)
def test_torch_equals_numpy_on_edge_values(counter):
    shape = (3, 5, 7)  # 105 elements: not a multiple of 4, exercises the tail of the last block
    reference = noise.counter_normal(EDGE_SEEDS, counter, shape)
    got = torch_noise.counter_normal(torch.from_numpy(EDGE_SEEDS), torch.tensor(counter), list(shape))
    assert got.dtype == torch.float32 and tuple(got.shape) == (len(EDGE_SEEDS), *shape)
    np.testing.assert_allclose(got.numpy(), reference, rtol=0, atol=1e-6)
    uniform = torch_noise.counter_uniform(torch.from_numpy(EDGE_SEEDS), torch.tensor(counter), [11])
    np.testing.assert_array_equal(uniform.numpy(), noise.counter_uniform(EDGE_SEEDS, counter, (11,)))


def test_noise_depends_only_on_its_own_seed():
    alone = noise.counter_normal([42], 9, (1, 6, 6))[0]
    for batch in ([42, 1, 2], [7, 42], [42] * 5, list(range(40, 50))):
        position = batch.index(42)
        np.testing.assert_array_equal(noise.counter_normal(batch, 9, (1, 6, 6))[position], alone)
    torch_batch = torch_noise.counter_normal(torch.tensor([3, 42, 9, 9]), torch.tensor(9), [1, 6, 6])
    np.testing.assert_allclose(torch_batch[1].numpy(), alone, atol=1e-6, rtol=0)


def test_streams_counters_and_seeds_give_different_noise():
    base = noise.counter_normal([1], 0, (64,))
    assert not np.array_equal(base, noise.counter_normal([2], 0, (64,)))
    assert not np.array_equal(base, noise.counter_normal([1], 1, (64,)))
    assert not np.array_equal(base, noise.counter_normal([1], 0, (64,), stream=noise.INIT_STREAM))


def test_uniform_and_initial_sample_ranges():
    u = noise.counter_uniform(np.arange(8), 0, (4096,))
    assert u.dtype == np.float32 and u.min() > 0.0 and u.max() < 1.0
    x0 = noise.initial_sample(np.arange(8), (2,), low=-8.0, high=8.0)
    assert x0.shape == (8, 2) and x0.min() > -8.0 and x0.max() < 8.0


def test_bad_seeds_and_counters_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        noise.counter_normal([-1], 0, (4,))
    with pytest.raises(TypeError, match="seed"):
        noise.counter_normal([0.5], 0, (4,))
    with pytest.raises(ValueError, match="seed"):
        noise.counter_normal([], 0, (4,))
    with pytest.raises(ValueError, match="counter"):
        noise.counter_normal([0], -1, (4,))
    with pytest.raises(ValueError, match="seed"):
        noise.seeds_for_batch(2**63 - 2, 4)
    with pytest.raises(ValueError, match="batch_size"):
        noise.seeds_for_batch([1, 2], 3)
    assert noise.seeds_for_batch(10, 3).tolist() == [10, 11, 12]


# --- statistics over >= 1e6 draws -------------------------------------------------------------
NUM_SEEDS, NUM_ELEMENTS = 64, 16384  # 1,048,576 draws per array
SIGMAS = 5.0  # every threshold is 5 standard errors of its statistic under the null hypothesis


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def noise_statistics(draw) -> dict[str, bool]:
    """Pass/fail of each check for ``draw(seeds, counter) -> [B, NUM_ELEMENTS]`` float noise."""
    seeds = np.arange(NUM_SEEDS)
    z = draw(seeds, 0).astype(np.float64)
    n = z.size
    standard_error = 1.0 / np.sqrt(n)
    neighbours = draw(seeds + 1, 0).astype(np.float64)
    next_counter = draw(seeds, 1).astype(np.float64)
    return {
        "mean": abs(z.mean()) < SIGMAS * standard_error,
        "variance": abs(z.var() - 1.0) < SIGMAS * np.sqrt(2.0 / n),
        # Kolmogorov-Smirnov vs N(0, 1): reject at p < 1e-4 (about the same strictness as 5 sigma)
        "ks": stats.kstest(z.ravel(), "norm").pvalue > 1e-4,
        "lag1_elements": abs(correlation(z[:, :-1], z[:, 1:])) < SIGMAS * standard_error,
        "across_counters": abs(correlation(z, next_counter)) < SIGMAS * standard_error,
        "neighbouring_seeds": abs(correlation(z, neighbours)) < SIGMAS * standard_error,
    }


def good(seeds, counter):
    return noise.counter_normal(seeds, counter, (NUM_ELEMENTS,))


BAD_GENERATORS = {
    # seed // 2 as the key: seeds 2k and 2k+1 draw the same noise
    "neighbouring_seeds": lambda seeds, counter: good(seeds // 2, counter),
    # a moving average introduces a lag-1 correlation of 0.5
    "lag1_elements": lambda seeds, counter: (lambda z: (z + np.roll(z, 1, axis=1)) / np.sqrt(2.0))(good(seeds, counter)),
    # ignoring the counter repeats the same z at every Langevin step
    "across_counters": lambda seeds, counter: good(seeds, 0),
    # right mean and variance, wrong distribution
    "ks": lambda seeds, counter: (noise.counter_uniform(seeds, counter, (NUM_ELEMENTS,), stream=0) - 0.5) * np.sqrt(12.0),
    "mean": lambda seeds, counter: good(seeds, counter) + 0.01,
    "variance": lambda seeds, counter: good(seeds, counter) * 1.01,
}


@pytest.mark.slow
def test_counter_normal_passes_statistics():
    results = noise_statistics(good)
    assert all(results.values()), results


@pytest.mark.slow
@pytest.mark.parametrize("failing_check", sorted(BAD_GENERATORS))
def test_deliberately_bad_generators_fail(failing_check):
    results = noise_statistics(BAD_GENERATORS[failing_check])
    assert not results[failing_check], f"a generator broken in `{failing_check}` passed: {results}"
