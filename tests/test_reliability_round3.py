"""Issue 18, part 4's small items: `--artifacts ""` refused, the scheduler config truly read-only, and one level
per sample at most (2-D timesteps refused) in both schedulers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ncsn_runtime import AnnealedLangevinDynamicsScheduler as NumpyScheduler

from ncsn_export.cli import main as export_main
from ncsn_export.exporters.artifacts import select_artifacts
from ncsn_export.exporters.errors import ExportInputError
from ncsn_export.scheduler import AnnealedLangevinDynamicsScheduler as TorchScheduler

CONFIG = {"num_train_timesteps": 10, "num_annealed_steps": 3, "sigma_min": 0.01, "sigma_max": 1.0, "sampling_eps": 1e-3}


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_empty_artifacts_are_refused(tmp_path, capsys, value):
    """Before: `--artifacts ""` exited 0 with only score/step/sampler."""
    with pytest.raises(ExportInputError, match="`artifacts` is empty"):
        select_artifacts(value)
    code = export_main(["--model", "toy-gmm", "--no-validate", "-q", "--artifacts", value, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "`artifacts` is empty" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    assert select_artifacts("score,,step").keys == select_artifacts("score,step").keys  # an empty part among names is fine


@pytest.mark.parametrize("scheduler_class", [NumpyScheduler, TorchScheduler])
def test_scheduler_config_is_read_only(scheduler_class):
    """Before: `config |= {...}` and `config.num_annealed_steps = 5` changed the "read-only" config."""
    scheduler = scheduler_class(**CONFIG)
    config = scheduler.config
    with pytest.raises(TypeError, match="read-only"):
        config |= {"num_annealed_steps": 5}
    with pytest.raises(TypeError, match="read-only"):
        config.num_annealed_steps = 5
    with pytest.raises(TypeError, match="read-only"):
        del config.num_annealed_steps
    with pytest.raises(TypeError, match="read-only"):
        config["num_annealed_steps"] = 5
    assert dict(scheduler.config) == CONFIG and scheduler.config.num_annealed_steps == 3
    assert copy.deepcopy(config) == CONFIG and dict(config | {"num_annealed_steps": 5})["num_annealed_steps"] == 5


@pytest.mark.parametrize("scheduler_class", [NumpyScheduler, TorchScheduler])
def test_two_dimensional_timesteps_are_refused(scheduler_class):
    """Before: add_noise with timesteps [[0, 9]] broadcast one sigma per feature of a [1, 2] sample."""
    scheduler = scheduler_class(**CONFIG)
    array = torch.zeros if scheduler_class is TorchScheduler else (lambda shape: np.zeros(shape, np.float32))
    x, noise = array((1, 2)), array((1, 2)) + 1
    levels = torch.tensor([[0, 9]]) if scheduler_class is TorchScheduler else np.array([[0, 9]])
    with pytest.raises(ValueError, match=r"one per sample \(shape \[B\]\), got shape \(1, 2\)"):
        scheduler.add_noise(x, noise, levels)
    with pytest.raises(ValueError, match=r"got shape \(1, 2\)"):
        scheduler.step(noise, levels, x, noise=noise)
    per_sample = torch.tensor([0, 9]) if scheduler_class is TorchScheduler else np.array([0, 9])
    out = scheduler.add_noise(array((2, 2)), array((2, 2)) + 1, per_sample)
    np.testing.assert_allclose(np.asarray(out), [[1.0, 1.0], [0.01, 0.01]], rtol=1e-6)
