"""The ``mrseg evaluate`` command end to end on small synthetic NIfTI/MHA files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mrseg.cli import main
from mrseg.io import read_image, write_image


def test_help_lists_evaluate():
    done = subprocess.run([sys.executable, "-m", "mrseg", "evaluate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for option in ("--pred", "--ref", "--ref-map", "--meta", "--classes", "--nsd-tolerance", "--resample-pred"):
        assert option in done.stdout


def test_missing_prediction_exits_1_and_still_reports(cohort, tmp_path, caplog):
    out = tmp_path / "report"
    code = main(["evaluate", "--pred", str(cohort["preds"]), "--ref", str(cohort["refs"]), "--meta",
                 str(cohort["meta"]), "--classes", "liver", "spleen", "13", "--nsd-tolerance", "2",
                 "--distance-cap", "100", "-o", str(out)])
    assert code == 1
    assert "dsB_003: no prediction" in caplog.text and "1 failure(s)" in caplog.text
    for name in ("metrics.csv", "summary.csv", "report.md", "report.json", "plots/dice.png"):
        assert (out / name).is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["classes"] == ["spleen", "liver", "aorta"]
    assert report["settings"]["stratified_by"] == ["dataset", "modality", "sequence"]


def test_complete_cohort_exits_0(cohort, tmp_path):
    (cohort["refs"] / "dsB_003.nii.gz").unlink()
    out = tmp_path / "report"
    code = main(["evaluate", "--pred", str(cohort["preds"]), "--ref", str(cohort["refs"]), "--pattern",
                 r"(?P<dataset>[^_]+)_(?P<case>\d+)", "--by", "dataset", "--no-plots", "-o", str(out)])
    assert code == 0
    assert "## Dice by dataset" in (out / "report.md").read_text()
    assert not (out / "plots").exists()


def test_geometry_mismatch_exits_2_unless_resampling(cohort, tmp_path, caplog):
    path = cohort["preds"] / "dsA_001_seg.nii.gz"
    pred = read_image(path)
    write_image(pred.with_geometry(spacing=(1.2, 0.8, 2.5)), path)
    out = tmp_path / "report"
    args = ["evaluate", "--pred", str(cohort["preds"]), "--ref", str(cohort["refs"]), "--no-plots", "-o", str(out)]
    assert main(args) == 2
    assert "dsA_001_seg.nii.gz" in caplog.text and "spacing" in caplog.text and "--resample-pred" in caplog.text
    assert not out.exists()
    assert main([*args, "--resample-pred"]) == 1  # dsB_003 still has no prediction
    report = json.loads((out / "report.json").read_text())
    assert [c["resampled"] for c in report["cases"]] == [True, False, False, False, False]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ref-map", "nope"], "unknown label map 'nope'"),
        (["--classes", "livr"], "did you mean liver"),
        (["--meta", "missing.csv"], "cannot read the metadata CSV"),
        (["--pattern", "(?P<x"], "not a valid regular expression"),
    ],
)
def test_bad_options_exit_2(cohort, tmp_path, caplog, extra, message):
    args = ["evaluate", "--pred", str(cohort["preds"]), "--ref", str(cohort["refs"]), "-o", str(tmp_path / "r")]
    assert main([*args, *extra]) == 2
    assert message in caplog.text
