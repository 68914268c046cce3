"""A real ``mrseg segment`` process killed with SIGKILL at several points of a three-case run, then
the same command again: every output complete, nothing hidden left, finished cases not redone."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from mrseg.io import read_image
from mrseg_processes import KILL_AT, hidden_items, mrseg_process, run_mrseg, run_records

pytestmark = pytest.mark.slow  # each test runs real predictions (10-20 s)

EXTRAS = ("--statistics", "--preview", "--split-classes")


def segment_args(inputs: Path, out: Path, model: Path) -> list[str]:
    return ["segment", str(inputs / "a.nii.gz"), str(inputs / "b.mha"), str(inputs / "c.nrrd"), "-o", str(out),
            "--model", str(model), "--fast", "--no-progress", *EXTRAS]


def assert_complete(inputs: Path, out: Path) -> None:
    for source, name in (("a.nii.gz", "a"), ("b.mha", "b"), ("c.nrrd", "c")):
        image = read_image(inputs / source)
        labels = read_image(out / f"{name}_seg.nii.gz")
        assert labels.geometry.same_grid(image.geometry, atol=1e-4) and labels.array.max() > 0
        stats = json.loads((out / f"{name}_seg_stats.json").read_text())
        assert stats["classes"] and (out / f"{name}_seg_stats.csv").read_text().startswith("label,")
        assert (out / f"{name}_seg_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        masks = sorted(p.name for p in (out / f"{name}_seg").iterdir())
        assert masks == sorted(f"class_{k}.nii.gz" for k in range(1, 5))
        record = json.loads((out / f"{name}_seg_record.json").read_text())
        assert set(record["outputs"]) == {"labels", "masks", "statistics_json", "statistics_csv", "preview"}
        for output in record["outputs"].values():
            assert (out / output["path"]).exists()
    assert hidden_items(out) == []


@pytest.mark.parametrize("point", ["b:segment", "b:write", "b:statistics", "b:commit", "b:rename"])
def test_killed_run_finishes_on_rerun_without_redoing_finished_cases(point, model_dir, inputs, tmp_path):
    out = tmp_path / "out"
    args = segment_args(inputs, out, model_dir())
    killed = run_mrseg(*args, env={"MRSEG_KILL_AT": point}, driver=KILL_AT)
    assert killed.returncode == -signal.SIGKILL
    record_a = (out / "a_seg_record.json").read_bytes()  # a finished before the kill
    assert not (out / "c_seg.nii.gz").exists()
    staged_whole = point in ("b:commit", "b:rename")  # b's record was staged: its commit is finished, not redone
    assert not (out / "b_seg_record.json").exists()  # the record is the last thing a commit moves
    if point != "b:rename":
        assert not list(out.glob("b_seg*"))  # complete or absent: nothing of b is visible

    again = run_mrseg(*args)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert_complete(inputs, out)
    assert (out / "a_seg_record.json").read_bytes() == record_a
    (rerun,) = [r for r in run_records(out)]  # the killed run never wrote its run record
    status = {case["name"]: case["status"] for case in rerun["cases"]}
    assert status == {"a": "skipped", "b": "skipped" if staged_whole else "segmented", "c": "segmented"}


def test_external_sigkill_during_prediction(model_dir, inputs, tmp_path):
    """The test kills the process from outside as soon as it announces b's prediction."""
    out = tmp_path / "out"
    args = segment_args(inputs, out, model_dir())
    process = mrseg_process("-vv", *args)
    assert process.stderr is not None
    deadline = time.monotonic() + 300
    for line in process.stderr:
        if "b: segment" in line:
            process.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not list(out.glob("b_seg*")) and (out / "a_seg_record.json").exists()

    again = run_mrseg(*args)
    assert again.returncode == 0, again.stderr
    assert_complete(inputs, out)
    status = {case["name"]: case["status"] for case in run_records(out)[-1]["cases"]}
    assert status == {"a": "skipped", "b": "segmented", "c": "segmented"}


def test_labels_after_a_crash_equal_an_uninterrupted_run(model_dir, inputs, tmp_path):
    args_clean = segment_args(inputs, tmp_path / "clean", model_dir())
    assert run_mrseg(*args_clean).returncode == 0
    args = segment_args(inputs, tmp_path / "crashed", model_dir())
    assert run_mrseg(*args, env={"MRSEG_KILL_AT": "b:statistics"}, driver=KILL_AT).returncode == -signal.SIGKILL
    assert run_mrseg(*args).returncode == 0
    for name in ("a", "b", "c"):
        clean = read_image(tmp_path / "clean" / f"{name}_seg.nii.gz").array
        resumed = read_image(tmp_path / "crashed" / f"{name}_seg.nii.gz").array
        assert np.array_equal(clean, resumed)
