"""The cohort plan: written by the first run, matched by every rerun."""

from __future__ import annotations

import pytest

from mrseg.cohort.plan import PLAN_FILE, CohortPlan, read_plan, settle_plan
from mrseg.errors import InputError
from mrseg.pipeline import ModelSpec, OutputSpec


def plan(out, **model):
    return CohortPlan(ModelSpec(out.parent / "model", folds=("0",), **model),
                      OutputSpec.with_classes(out, {"liver": 5}, preview=True), retries=1)


def test_the_plan_survives_json_and_always_asks_for_statistics(tmp_path):
    first = plan(tmp_path / "out", threads=4)
    assert first.outputs.statistics and first.model.threads is None  # threads belong to the run, not the cohort
    again = CohortPlan.from_json(first.to_json(), out_dir=tmp_path / "out")
    assert again == first


def test_a_rerun_must_use_the_same_settings_but_may_change_the_retries(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    settle_plan(plan(out), out)
    assert (out / PLAN_FILE).is_file()
    settle_plan(plan(out, threads=8), out)  # threads are not part of the plan
    with pytest.raises(InputError, match=r"holds a cohort run with other settings \(step 0.5 then, 0.8 now\)"):
        settle_plan(plan(out, step=0.8), out)
    more = CohortPlan(plan(out).model, plan(out).outputs, retries=5)
    settle_plan(more, out)
    assert read_plan(out).retries == 5


def test_an_unreadable_plan_is_refused(tmp_path):
    (tmp_path / PLAN_FILE).write_text("{")
    with pytest.raises(InputError, match="not a readable cohort plan"):
        read_plan(tmp_path)
    with pytest.raises(InputError, match="retries must be 0 or more"):
        CohortPlan(ModelSpec(tmp_path), OutputSpec(tmp_path), retries=-1)


def test_a_plan_written_before_the_ensemble_setting_reads_as_the_whole_ensemble(tmp_path):
    """Plans of earlier versions lack ``ensemble``: they ran every member, and a rerun that does
    too is the same cohort; one with --no-ensemble is not."""
    import json

    out = tmp_path / "out"
    out.mkdir()
    written = json.loads(plan(out).to_json())
    del written["model"]["ensemble"]
    (out / PLAN_FILE).write_text(json.dumps(written))
    assert read_plan(out).model.ensemble is True
    settle_plan(plan(out), out)
    with pytest.raises(InputError, match=r"other settings \(ensemble True then, False now\)"):
        settle_plan(plan(out, ensemble=False), out)
