"""One case end to end, in this process: resume from the case record, conflicts, failures, busy cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrseg.io import read_image
from mrseg.io.locks import FileLock
from mrseg.pipeline import CaseBusy, CaseSpec, ModelSpec, OutputSpec, load, process_case


def test_a_finished_case_is_skipped_and_extras_are_made_from_its_labels(model, case, tmp_path):
    out = tmp_path / "out"
    first = process_case(case, model, OutputSpec(out)).record
    assert first.status == "segmented" and first.tiles > 0 and "predict" in first.timings
    assert first.settings["precision"] == "fp32" and first.outputs["labels"].path == "scan_seg.nii.gz"
    labels_bytes = (out / "scan_seg.nii.gz").read_bytes()

    again = process_case(case, model, OutputSpec(out)).record
    assert again.status == "skipped" and again.segmented_at == first.segmented_at

    more = process_case(case, model, OutputSpec(out, statistics=True, preview=True)).record
    assert more.status == "completed" and "predict" not in more.timings and more.tiles == 0
    assert set(more.outputs) == {"labels", "statistics_json", "statistics_csv", "preview"}
    assert (out / "scan_seg.nii.gz").read_bytes() == labels_bytes
    stored = json.loads((out / "scan_seg_record.json").read_text())
    assert stored["status"] == "completed" and stored["segmented_at"] == first.segmented_at


def test_a_lost_label_map_is_segmented_again(model, case, tmp_path):
    out = tmp_path / "out"
    process_case(case, model, OutputSpec(out, statistics=True))
    (out / "scan_seg.nii.gz").unlink()
    assert process_case(case, model, OutputSpec(out, statistics=True)).record.status == "segmented"
    assert (out / "scan_seg.nii.gz").is_file()


def test_other_settings_are_a_conflict_unless_overwrite(model, model_dir, case, tmp_path):
    out = tmp_path / "out"
    process_case(case, model, OutputSpec(out))
    before = (out / "scan_seg_record.json").read_bytes()
    other = load(ModelSpec(model_dir(), folds=("0",), step=0.5, precision="fp32"))
    conflict = process_case(case, other, OutputSpec(out)).record
    assert conflict.status == "failed"
    assert "were made with other settings (step 0.8 then, 0.5 now); add --overwrite" in conflict.error
    assert (out / "scan_seg_record.json").read_bytes() == before
    process_case(case, model, OutputSpec(out, preview=True))  # a preview of the step-0.8 labels
    assert (out / "scan_seg_preview.png").exists()
    replaced = process_case(case, other, OutputSpec(out, overwrite=True)).record
    assert replaced.status == "segmented" and replaced.settings["step"] == 0.5
    assert not (out / "scan_seg_preview.png").exists()  # it showed labels that are gone


def test_outputs_without_a_record_are_kept_unless_overwrite(model, case, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan_seg.nii.gz").write_bytes(b"made by another tool")
    kept = process_case(case, model, OutputSpec(out)).record
    assert kept.status == "skipped" and "exists without a case record" in kept.error
    assert (out / "scan_seg.nii.gz").read_bytes() == b"made by another tool"
    assert process_case(case, model, OutputSpec(out, overwrite=True)).record.status == "segmented"
    assert read_image(out / "scan_seg.nii.gz").array.dtype == np.uint8


def test_a_bad_input_fails_and_writes_nothing(model, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    out = tmp_path / "out"
    out.mkdir()
    record = process_case(CaseSpec.of(bad), model, OutputSpec(out)).record
    assert record.status == "failed" and "bad.nii.gz: cannot read this image" in record.error
    assert list(out.iterdir()) == []


def test_a_case_held_by_another_run_is_busy(model, case, tmp_path):
    spec = OutputSpec(tmp_path / "out")
    other = FileLock(spec.lock_path(case.name))
    assert other.acquire()
    try:
        with pytest.raises(CaseBusy, match=r"scan.mha: being segmented by pid \d+ on "):
            process_case(case, model, spec)
    finally:
        other.release()
    assert process_case(case, model, spec).record.status == "segmented"


def test_kept_labels_equal_the_written_label_map(model, case, tmp_path):
    outcome = process_case(case, model, OutputSpec(tmp_path / "out"), keep_labels=True)
    assert outcome.labels is not None
    assert np.array_equal(outcome.labels.array, read_image(tmp_path / "out" / "scan_seg.nii.gz").array)
