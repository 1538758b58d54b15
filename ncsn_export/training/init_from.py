"""Start a run from a trained model on another noise schedule (NCSNv2 fine-tuning on an extended schedule).

Every weight is copied except the per-level embeddings of the conditional norms, which are interpolated in
log sigma from the old levels to the new ones (levels above the old sigma_max take the old top level's row,
below sigma_min the old last one's). The NCSNv2 ``sigmas`` buffer is the new schedule's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def interpolate_levels(rows: torch.Tensor, old_sigmas: np.ndarray, new_sigmas: np.ndarray) -> torch.Tensor:
    """Embedding rows [L_old, F] at ``old_sigmas`` -> [L_new, F] at ``new_sigmas`` (linear in log sigma, clamped)."""
    x_old = -np.log(np.asarray(old_sigmas, dtype=np.float64))
    x_new = -np.log(np.asarray(new_sigmas, dtype=np.float64))
    if np.any(np.diff(x_old) <= 0):
        raise ValueError("old sigmas must be strictly decreasing")
    table = rows.detach().double().numpy()
    out = np.stack([np.interp(x_new, x_old, table[:, j]) for j in range(table.shape[1])], axis=1)
    return torch.from_numpy(out).to(rows.dtype)


def init_from_run(model: nn.Module, new_sigmas: np.ndarray, weights: str | Path, record_path: str | Path) -> dict:
    """Load ``weights`` (+ its JSON record) into ``model`` (built for ``new_sigmas``); returns provenance for the record."""
    from ..models.default import load_refinenet

    old, record = load_refinenet(weights, record_path)
    if old.config["ngf"] != model.config["ngf"] or old.config["in_channels"] != model.config["in_channels"]:
        raise ValueError(f"--init-from {weights}: its ngf/channels {old.config} do not fit this run's {model.config}")
    old_sigmas = old.sigmas.detach().numpy()
    if not old.ncsnv2:
        sched = record["scheduler_config"]
        from ncsn_runtime.schedule import geometric_sigmas

        old_sigmas = geometric_sigmas(sched["sigma_max"], sched["sigma_min"], sched["num_train_timesteps"])
    state = model.state_dict()
    for name, value in old.state_dict().items():
        if name == "sigmas":
            continue
        if name.endswith("embed.weight"):
            value = interpolate_levels(value, old_sigmas, new_sigmas)
        if state[name].shape != value.shape:
            raise ValueError(f"--init-from {weights}: {name} has shape {tuple(value.shape)}, this run {tuple(state[name].shape)}")
        state[name] = value
    model.load_state_dict(state)
    return {"weights": str(weights), "iterations": record.get("training", {}).get("iterations"),
            "scheduler_config": dict(record["scheduler_config"])}
