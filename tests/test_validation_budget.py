"""The validation budget (issue 15 part 2): the full check is cut to fit, and says what it ran and left out."""

from __future__ import annotations

import json

import pytest

from ncsn_export.exporters import export_model
from ncsn_export.models.registry import load_model
from ncsn_export.validation_budget import (
    check_validate_mode,
    check_validation_budget,
    plan_full_check,
    spread_levels,
)

WHOLE = dict(num_levels=10, num_annealed_steps=100, full_batch=16, final_denoise=False)


def test_a_cheap_model_gets_the_whole_schedule():
    plan = plan_full_check("auto", 1e-5, 100.0, **WHOLE)
    assert plan.is_whole and plan.left_out() == "nothing" and plan.estimated_seconds == pytest.approx(1000 * 16e-5)


def test_the_batch_shrinks_first():
    plan = plan_full_check("auto", 0.01, 45.0, **WHOLE)  # B=4: 1000 calls x 4 x 0.01 s = 40 s
    assert plan.batch_size == 4 and plan.timesteps == tuple(range(10)) and plan.num_annealed_steps == 100
    assert not plan.is_whole and "samples 5-16" in plan.left_out() and "B=16 would take ~160 s" in plan.reason


def test_then_the_steps_per_level():
    plan = plan_full_check("auto", 0.5, 120.0, **WHOLE)  # the 73 M UNet: ~0.5 s per sample call, both engines
    assert plan.batch_size == 1 and plan.timesteps == tuple(range(10)) and plan.num_annealed_steps == 24
    assert plan.estimated_seconds <= 120.0 and "steps 25-100 of every level" in plan.left_out()
    assert plan.summary() == "levels 0-9 (10 of 10), 24 of 100 steps each, B=1"


def test_then_the_levels_spread_with_the_first_and_last():
    plan = plan_full_check("auto", 2.0, 11.0, **WHOLE)  # 5 calls fit
    assert plan.batch_size == 1 and plan.num_annealed_steps == 1 and plan.timesteps[0] == 0 and plan.timesteps[-1] == 9
    assert len(plan.timesteps) == 5 and plan.estimated_seconds <= 11.0 and plan.left_out().startswith("levels ")


def test_the_final_denoise_call_is_counted():
    with_denoise = plan_full_check("auto", 1.0, 3.0, **{**WHOLE, "final_denoise": True})
    assert with_denoise.timesteps == (0, 9) and with_denoise.estimated_seconds == 3.0


def test_a_budget_too_small_skips_with_the_reason():
    plan = plan_full_check("auto", 5.0, 6.0, **WHOLE)
    assert plan.skipped and "--validation-budget" in plan.reason and plan.summary().startswith("full check skipped")
    assert "the whole schedule" in plan.left_out()


def test_full_mode_ignores_the_budget():
    plan = plan_full_check("full", 10.0, 0.0, **WHOLE)
    assert plan.is_whole and plan.estimated_seconds == pytest.approx(160000.0) and plan.budget_seconds is None


@pytest.mark.parametrize("count,levels", [(2, (0, 9)), (3, (0, 4, 9)), (10, tuple(range(10))), (50, tuple(range(10)))])
def test_spread_levels(count, levels):
    assert spread_levels(count, 10) == levels


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "60", True, None, 1e9])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(ValueError, match="validation_budget"):
        check_validation_budget(bad)


def test_validate_modes():
    assert [check_validate_mode(v) for v in (True, False, "auto", "full", "none")] == ["auto", "none", "auto", "full", "none"]
    with pytest.raises(ValueError, match="`validate` must be"):
        check_validate_mode("fast")


def test_a_small_budget_cuts_the_full_check_and_the_manifest_says_so(tmp_path):
    """toy-gmm with budget 0: the full check is planned from the measured dynamic check and skipped, on record."""
    out = tmp_path / "toy"
    report = export_model(load_model("toy-gmm"), out, artifacts="sampler", validation_budget=0.0)
    manifest = json.loads((out / "manifest.json").read_text())
    plan = manifest["validation_schedule"]["full_plan"]
    assert plan["batch_size"] == 0 and "--validation-budget" in plan["reason"]
    assert "full" not in manifest["validation_schedule"] and not [r for r in manifest["validation"] if r["check"] == "full"]
    assert "full check skipped" in report.table


def test_the_default_budget_runs_the_whole_toy_schedule(tmp_path):
    out = tmp_path / "toy"
    export_model(load_model("toy-gmm"), out, artifacts="sampler")
    manifest = json.loads((out / "manifest.json").read_text())
    schedule = manifest["validation_schedule"]
    assert schedule["full_plan"]["left_out"] == "nothing" and schedule["full"]["batch_size"] == 16
    full_rows = [row for row in manifest["validation"] if row["check"] == "full"]
    assert len(full_rows) == 1 and full_rows[0]["passed"] and "full default schedule" in full_rows[0]["reference"]
