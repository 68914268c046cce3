"""Report files: long CSV, summary CSV, Markdown, JSON and PNG box plots."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from mrseg.errors import InputError
from mrseg.evaluation import METRICS, evaluate_cohort, write_report
from mrseg.evaluation.report import LONG_COLUMNS, SUMMARY_COLUMNS

CLASSES = ["spleen", "right_kidney", "liver", "aorta"]


@pytest.fixture()
def evaluation(cohort):
    return evaluate_cohort(cohort["preds"], cohort["refs"], classes=CLASSES, metadata=cohort["meta"])


def test_report_files(evaluation, tmp_path):
    pytest.importorskip("matplotlib")
    files = write_report(evaluation, tmp_path / "report", distance_cap=80.0)

    with files.metrics_csv.open() as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0])[:5] == LONG_COLUMNS
    assert {"dataset", "modality", "sequence", "scanner"} <= set(rows[0])
    assert len(rows) == len(evaluation.cases) * len(CLASSES) * len(METRICS)
    liver = {r["metric"]: r for r in rows if r["case"] == "dsA_001" and r["class"] == "liver"}
    assert float(liver["dice"]["value"]) == evaluation.cases[0].metrics["liver"].dice
    missing = [r for r in rows if r["case"] == "dsB_003" and r["metric"] == "hd95"]
    assert all(r["value"] == "" for r in missing)
    assert {r["status"] for r in missing} <= {"missing prediction", "absent in both"}

    with files.summary_csv.open() as stream:
        summary = list(csv.DictReader(stream))
    assert tuple(summary[0]) == SUMMARY_COLUMNS
    assert {r["group_by"] for r in summary} == {"all", "dataset", "modality", "sequence"}
    hd95 = next(r for r in summary if r["group_by"] == "all" and r["class"] == "liver" and r["metric"] == "hd95")
    assert hd95["n_capped"] == "1" and float(hd95["max"]) == 80.0

    text = files.markdown.read_text()
    assert "## Per organ, all cases" in text and "## Dice by sequence (mean ± SD, n)" in text
    assert "| class | CT | T1 in-phase | T2 HASTE |" in text
    assert "## Failures" in text and "dsB_003 | missing prediction" in text
    assert "extra_seg.nii.gz has no reference" in text
    assert " ± " in text and "[" in text

    report = json.loads(files.json.read_text())
    assert report["counts"] == {"references": 5, "failures": 1, "unmatched_predictions": 1}
    assert report["settings"]["distance_cap_mm"] == 80.0 and report["settings"]["classes"] == CLASSES
    assert report["cases"][4]["classes"]["liver"]["hd95"] is None

    names = sorted(p.name for p in files.plots)
    assert "dice.png" in names and "hd95_by_sequence.png" in names and "nsd_by_dataset.png" in names
    for path in files.plots:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    leftovers = [p for p in (tmp_path / "report").rglob("*") if p.name.endswith(".part")]
    assert not leftovers


def test_report_without_plots_or_strata(cohort, tmp_path):
    evaluation = evaluate_cohort(cohort["preds"], cohort["refs"], classes=["liver"])
    files = write_report(evaluation, tmp_path / "out", plots=False)
    assert files.plots == () and not (tmp_path / "out" / "plots").exists()
    assert "by sequence" not in files.markdown.read_text()
    with pytest.raises(InputError, match="no case has the stratum 'sequence'.*give --meta or --pattern"):
        write_report(evaluation, tmp_path / "out", by=["sequence"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_report(evaluation, tmp_path / "file")


def test_plots_without_matplotlib_name_the_extra(evaluation, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"report extra .*--no-plots"):
        write_report(evaluation, tmp_path / "report")
    assert not (tmp_path / "report").exists()
    assert write_report(evaluation, tmp_path / "report", plots=False).plots == ()
