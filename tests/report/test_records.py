"""Case and run records: JSON round trips, unreadable records, the run record's counts."""

from __future__ import annotations

import json
import os

import pytest

from mrseg.errors import InputError
from mrseg.report.records import CaseRecord, OutputFile, now, read_case_record, run_record, write_run_record


def record(status: str = "segmented", **changes: object) -> CaseRecord:
    fields = dict(name="scan", input="in/scan.nii.gz", status=status, settings={"step": 0.5, "folds": ["0"]},
                  outputs={"labels": OutputFile("scan_seg.nii.gz", 123)}, timings={"predict": 1.23456},
                  tiles=4, segmented_at=now(), host="node1", pid=42)
    fields.update(changes)
    return CaseRecord(**fields)  # type: ignore[arg-type]


def test_a_case_record_survives_json(tmp_path):
    original = record()
    path = tmp_path / "scan_seg_record.json"
    path.write_text(original.to_json())
    back = read_case_record(path)
    assert back is not None and back.outputs == original.outputs and back.settings == original.settings
    assert back.timings == {"predict": 1.235} and json.loads(path.read_text())["record_version"] == 1


@pytest.mark.parametrize("content", ["", "{not json", '{"name": "x"}', "[]"])
def test_an_unreadable_record_proves_nothing(tmp_path, content):
    path = tmp_path / "r.json"
    path.write_text(content)
    assert read_case_record(path) is None
    assert read_case_record(tmp_path / "missing.json") is None


def test_the_run_record_counts_statuses_and_lists_cases(tmp_path):
    records = [record(), record("skipped", name="b"), record("failed", name="c", error="c: bad", outputs={})]
    report = run_record(records, model={"name": "demo"}, settings={"step": 0.5}, started=now(), load_seconds=1.5)
    assert report["counts"] == {"segmented": 1, "completed": 0, "skipped": 1, "failed": 1}
    assert [c["status"] for c in report["cases"]] == ["segmented", "skipped", "failed"]
    assert report["cases"][0]["outputs"] == {"labels": "scan_seg.nii.gz"} and report["versions"]["mrseg"]
    path = write_run_record(report, tmp_path, postfix="seg")
    assert path.name.endswith(f"_{os.getpid()}_seg.json") and json.loads(path.read_text())["counts"]["failed"] == 1


def test_a_run_record_that_cannot_be_written_names_the_path(tmp_path):
    report = run_record([], model={}, settings={}, started=now(), load_seconds=0.0)
    (tmp_path / "file.txt").write_text("x")
    for folder in (tmp_path / "file.txt", tmp_path / "file.txt" / "sub"):
        with pytest.raises(InputError, match="file.txt.*: cannot write the run record"):
            write_run_record(report, folder)
