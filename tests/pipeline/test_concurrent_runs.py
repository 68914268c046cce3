"""Two ``mrseg segment`` processes over the same four cases into one folder: each case once in total."""

from __future__ import annotations

import json

from mrseg.io import read_image
from mrseg_processes import hidden_items, mrseg_process, run_records


def test_two_runs_share_the_work_and_segment_each_case_once(model_dir, inputs, tmp_path):
    out = tmp_path / "out"
    args = ["segment", str(inputs), "-o", str(out), "--model", str(model_dir()), "--fast", "--no-progress",
            "--statistics"]
    first, second = mrseg_process(*args), mrseg_process(*args)
    results = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, results
    records = run_records(out)
    assert len(records) == 2
    segmented = [case["name"] for record in records for case in record["cases"] if case["status"] == "segmented"]
    assert sorted(segmented) == ["a", "b", "c", "d"]
    for record in records:
        assert {case["status"] for case in record["cases"]} <= {"segmented", "skipped"}
        assert sorted(case["name"] for case in record["cases"]) == ["a", "b", "c", "d"]
    for name in "abcd":
        case_record = json.loads((out / f"{name}_seg_record.json").read_text())
        assert case_record["status"] == "segmented"
        assert read_image(out / f"{name}_seg.nii.gz").array.max() > 0
        assert (out / f"{name}_seg_stats.json").is_file()
    assert hidden_items(out) == []
