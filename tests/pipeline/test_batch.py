"""Many cases and several models: combined in memory, one bad case never stopping the rest."""

from __future__ import annotations

import json

import numpy as np

from mrseg.io import read_image
from mrseg.io.locks import FileLock
from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, clean_output_folder, load, run_batch
from mrseg.pipeline.staging import new_staging


def test_two_models_combine_in_memory(model, model_dir, case, tmp_path):
    second = load(ModelSpec(model_dir(kind="ResidualEncoderUNet"), folds=("0",), step=0.8, precision="fp32"))
    out = tmp_path / "out"
    result = run_batch([case], [(model, OutputSpec(out, postfix="one")), (second, OutputSpec(out, postfix="two"))],
                       combine=OutputSpec(out, postfix="combined", output_type="nifti"))
    assert [r.status for r in result.all_records()] == ["segmented", "segmented", "segmented"]
    one, two = (read_image(out / f"scan_{p}.nii.gz").array for p in ("one", "two"))
    combined = read_image(out / "scan_combined.nii.gz").array
    assert np.array_equal(combined, np.where(one > 0, one, np.where(two > 0, two + 4, 0)))
    assert json.loads((out / "combined_classes.json").read_text())["5"] == "2:class_1"
    rerun = run_batch([case], [(model, OutputSpec(out, postfix="one")), (second, OutputSpec(out, postfix="two"))],
                      combine=OutputSpec(out, postfix="combined", output_type="nifti"))
    assert [r.status for r in rerun.all_records()] == ["skipped", "skipped", "skipped"]
    assert not (out / ".mrseg").exists()


def test_a_bad_case_does_not_stop_the_others(model, case, tmp_path):
    bad = tmp_path / "in" / "bad.nii.gz"
    bad.write_text("not an image")
    result = run_batch([CaseSpec.of(bad), case], [(model, OutputSpec(tmp_path / "out"))])
    (records,) = result.records
    assert [r.status for r in records] == ["failed", "segmented"]
    assert "bad.nii.gz: cannot read this image" in records[0].error


def test_cleaning_a_folder_keeps_what_a_live_run_holds(tmp_path):
    out = tmp_path / "out"
    spec = OutputSpec(out)
    dead = new_staging(spec.staging_dir("dead"))
    (dead / "dead_seg.nii.gz").write_bytes(b"half")
    live = new_staging(spec.staging_dir("live"))
    lock = FileLock(spec.lock_path("live"))
    assert lock.acquire()
    try:
        clean_output_folder(out)
        assert not dead.exists() and live.exists()
    finally:
        lock.release()
    clean_output_folder(out)
    assert list(out.iterdir()) == []


def test_an_unreadable_label_map_of_another_tool_fails_only_the_combination(model, model_dir, case, tmp_path):
    second = load(ModelSpec(model_dir(kind="ResidualEncoderUNet"), folds=("0",), step=0.8, precision="fp32"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan_one.nii.gz").write_bytes(b"made by another tool")  # kept: no case record says it is ours
    result = run_batch([case], [(model, OutputSpec(out, postfix="one")), (second, OutputSpec(out, postfix="two"))],
                       combine=OutputSpec(out, postfix="combined", output_type="nifti"))
    assert [r.status for r in result.all_records()] == ["skipped", "segmented", "failed"]
    assert "not combined: no label map of one" in result.combined[0].error
    assert (out / "scan_one.nii.gz").read_bytes() == b"made by another tool"


def test_cleaning_an_output_folder_removes_old_leftovers_of_killed_writers_and_keeps_young_ones(tmp_path):
    import os

    old = [tmp_path / ".case_seg.nii.gz.ab12.part", tmp_path / ".case_seg.seg.nrrd.cd34.part.seg.nrrd"]
    young = tmp_path / ".other_seg.nii.gz.ef56.part"
    for path in (*old, young):
        path.write_text("half")
    for path in old:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    clean_output_folder(tmp_path)
    assert not any(p.exists() for p in old) and young.exists()
