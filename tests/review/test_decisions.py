"""review.csv: the latest decision per case, one line notes, a clear, and two writers at once."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from mrseg.errors import InputError
from mrseg.report.decisions import COLUMNS, DecisionTable


def test_the_latest_decision_per_case_is_kept_with_time_and_reviewer(tmp_path):
    table = DecisionTable(tmp_path)
    table.decide("a", "flag", note="liver cut\nat the top", reviewer="ana")
    table.decide("b", "accept", reviewer="ben")
    table.decide("a", "reject", note="motion", reviewer="ana")
    rows = list(csv.DictReader((tmp_path / "review.csv").open()))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["case"], r["decision"], r["note"], r["reviewer"]) for r in rows] == [
        ("a", "reject", "motion", "ana"), ("b", "accept", "", "ben")]
    assert rows[0]["time"].startswith("20")
    assert table.read()["a"].decision == "reject"
    table.decide("a", "flag", note="two\nlines")
    assert table.read()["a"].note == "two lines"  # a note stays on one line
    table.decide("a", "clear")
    assert set(table.read()) == {"b"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".review.csv")]  # no temporary file left


def test_an_unknown_decision_and_a_foreign_table_are_refused(tmp_path):
    table = DecisionTable(tmp_path)
    with pytest.raises(InputError, match="decision must be one of accept, flag, reject or clear"):
        table.decide("a", "maybe")
    (tmp_path / "review.csv").write_text("id,verdict\n1,ok\n")
    with pytest.raises(InputError, match="not a review table"):
        table.read()


WRITER = """
import sys
from mrseg.report.decisions import DecisionTable
table = DecisionTable(sys.argv[1])
for n in range(40):
    table.decide(f"{sys.argv[2]}{n}", "accept", reviewer=sys.argv[2])
"""


def test_two_processes_deciding_at_once_lose_nothing(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), who]) for who in ("x", "y")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    assert len(DecisionTable(tmp_path).read()) == 80
