"""The manifest (rewritten atomically, one row per case) and the attempts log workers append to."""

from __future__ import annotations

import pytest

from mrseg.cohort.manifest import (
    ATTEMPTS_FILE,
    COLUMNS,
    MANIFEST_FILE,
    AttemptLog,
    Manifest,
    append_event,
    summarize,
)
from mrseg.errors import InputError
from mrseg.pipeline import CaseSpec


def test_rows_survive_a_write_and_read(tmp_path):
    manifest = Manifest(tmp_path)
    assert manifest.add([CaseSpec.of(tmp_path / "a.nii.gz"), CaseSpec.of(tmp_path / "b.mha")]) == ["a", "b"]
    manifest.rows["a"].status, manifest.rows["a"].seconds, manifest.rows["a"].output = "done", 1.234, "a_seg.nii.gz"
    manifest.rows["b"].status, manifest.rows["b"].error, manifest.rows["b"].attempts = "failed", "b.mha: bad, x", 1
    manifest.write()
    assert (tmp_path / MANIFEST_FILE).read_text().splitlines()[0] == ",".join(COLUMNS)
    again = Manifest.read(tmp_path)
    assert [(r.case, r.status, r.error, r.attempts, r.seconds) for r in again.rows.values()] == [
        ("a", "done", "", 0, 1.23), ("b", "failed", "b.mha: bad, x", 1, None)]
    assert again.counts() == {"done": 1, "failed": 1, "pending": 0, "running": 0}
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place


def test_adding_known_cases_keeps_their_rows_and_a_name_clash_is_refused(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.add([CaseSpec.of(tmp_path / "a.nii.gz")])
    manifest.rows["a"].status = "done"
    assert manifest.add([CaseSpec.of(tmp_path / "a.nii.gz"), CaseSpec.of(tmp_path / "c.nii.gz")]) == ["c"]
    assert manifest.rows["a"].status == "done"
    with pytest.raises(InputError, match=r"other/a.nii.gz: the cohort already has a case a from .*a.nii.gz"):
        manifest.add([CaseSpec.of(tmp_path / "other" / "a.nii.gz")])


def test_a_file_that_is_not_a_manifest_is_refused(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text("name,path\nx,y\n")
    with pytest.raises(InputError, match="not a cohort manifest"):
        Manifest.read(tmp_path)


def test_the_attempts_log_is_read_incrementally_and_ignores_a_torn_line(tmp_path):
    log = AttemptLog(tmp_path)
    assert log.update() == []
    append_event(tmp_path, {"event": "start", "id": "1", "case": "a", "worker": "w1", "host": "h", "pid": 5,
                            "started": 100.0})
    assert [a.case for a in log.update()] == ["a"]
    append_event(tmp_path, {"event": "end", "id": "1", "case": "a", "finished": 104.0, "seconds": 4.0,
                            "status": "segmented", "error": None})
    with open(tmp_path / ATTEMPTS_FILE, "a") as stream:
        stream.write('{"event": "start", "id": "2", "ca')  # a worker killed mid-write
    (attempt,) = log.update()
    assert (attempt.status, attempt.seconds, attempt.finished) == ("segmented", 4.0, 104.0)
    append_event(tmp_path, {"event": "start", "id": "3", "case": "b", "worker": "w2", "host": "h", "pid": 6,
                            "started": 101.0})
    assert [a.id for a in log.update()] == ["3"]  # the torn line is skipped, the next event still read
    assert [a.id for a in log.attempts("b")] == ["3"] and len(list(log)) == 2


def test_the_summary_gives_counts_failures_throughput_and_eta(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.add([CaseSpec.of(tmp_path / f"c{i}.nii.gz") for i in range(6)])
    for i in range(4):
        append_event(tmp_path, {"event": "start", "id": str(i), "case": f"c{i}", "worker": "w", "host": "h", "pid": 1,
                                "started": 10.0 * i})
        append_event(tmp_path, {"event": "end", "id": str(i), "case": f"c{i}", "finished": 10.0 * i + 10,
                                "seconds": 10.0, "status": "segmented"})
        manifest.rows[f"c{i}"].status = "done"
    manifest.rows["c4"].status, manifest.rows["c4"].error = "failed", "c4.nii.gz: not an image"
    log = AttemptLog(tmp_path)
    log.update()
    summary = summarize(manifest, log)
    assert summary.counts == {"done": 4, "failed": 1, "pending": 1, "running": 0}
    assert summary.cases_per_minute == pytest.approx(6.0)  # 4 cases in 40 s
    assert summary.eta_seconds == pytest.approx(10.0)
    lines = summary.lines()
    assert lines[0] == "6 case(s): 4 done, 1 failed, 1 pending, 0 running"
    assert "throughput 6.00 cases/min, about 10 s left" in lines[1]
    assert lines[-1] == "failed   c4: c4.nii.gz: not an image"


def test_the_summary_counts_the_reviewers_decisions(tmp_path):
    from mrseg.report.decisions import DecisionTable

    manifest = Manifest(tmp_path)
    manifest.add([CaseSpec.of(tmp_path / f"c{i}.nii.gz") for i in range(4)])
    table = DecisionTable(tmp_path)
    table.decide("c0", "accept")
    table.decide("c1", "reject", note="liver labelled as spleen")
    table.decide("c2", "flag")
    table.decide("elsewhere", "reject")  # not a case of this cohort
    lines = summarize(manifest, AttemptLog(tmp_path)).lines()
    assert "review: 3 of 4 case(s) decided: 1 accept, 1 flag, 1 reject (review.csv)" in lines
    assert "rejected c1: liver labelled as spleen" in lines and "flagged  c2" in lines
