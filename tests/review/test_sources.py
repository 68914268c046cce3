"""What each kind of review folder lists: segment outputs, a cohort with its manifest and QC
table, an annotation project whose accepted draft becomes its correction."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.annotation import Project, init_project
from mrseg.annotation.exchange import write_draft_files
from mrseg.cohort.manifest import Manifest, ManifestRow
from mrseg.cohort.qc import QC_TABLE
from mrseg.errors import InputError
from mrseg.io import read_image
from mrseg.model.store import bundled_model_folder
from mrseg.review import ReviewApp, open_source
from mrseg.review.sources import ANNOTATION, COHORT, SEGMENT


def test_a_segment_folder_lists_its_cases_worst_first_with_their_own_qc(review_folder):
    source = open_source(review_folder)
    assert source.kind == SEGMENT
    cases = {c.case: c for c in source.cases()}
    assert set(cases) == {"ras_case", "lps_case", "pir_case", "broken_case"}
    broken = cases["broken_case"]
    assert broken.failed and broken.labels is None and "not a NIfTI file" in broken.note
    ras = cases["ras_case"]
    assert ras.image == review_folder / "inputs" / "ras_case.nii.gz"
    assert ras.labels == review_folder / "ras_case_seg.nii.gz"
    assert ras.volumes["liver"] > 100 and ras.classes[5] == "liver"
    ordered = list(ReviewApp(review_folder).cases())
    assert ordered[0] == "broken_case"  # failures first, then the highest QC score
    scores = [cases[name].score for name in ordered[1:]]
    assert scores == sorted(scores, reverse=True)


def test_a_record_pointing_outside_its_folder_shows_no_labels(review_folder):
    record = (review_folder / "lps_case_seg_record.json")
    record.write_text(record.read_text().replace('"lps_case_seg.nii.gz"', '"../../etc/passwd"'))
    case = {c.case: c for c in open_source(review_folder).cases()}["lps_case"]
    assert case.labels is None


def test_a_cohort_adds_its_failed_cases_and_its_qc_table(review_folder):
    Manifest(review_folder, [ManifestRow("ras_case", "x", "done"), ManifestRow("lps_case", "y", "done"),
                             ManifestRow("pir_case", "z", "done"),
                             ManifestRow("late_case", "w", "failed", error="worker died (tried 2 time(s))")]).write()
    (review_folder / QC_TABLE).write_text("rank,case,score,flags,liver_ml\n"
                                          "1,pir_case,3,volume_outlier (liver 9000 mL: robust z 5.1),9000\n"
                                          "2,ras_case,0,,1500\n")
    source = open_source(review_folder)
    assert source.kind == COHORT
    cases = {c.case: c for c in source.cases()}
    assert cases["late_case"].status == "failed" and "worker died" in cases["late_case"].note
    assert cases["pir_case"].flags == ["volume_outlier (liver 9000 mL: robust z 5.1)"] and cases["pir_case"].score == 3
    assert cases["ras_case"].flags == []


def test_an_accepted_draft_counts_as_its_correction_with_zero_effort(review_folder, tmp_path):
    image = review_folder / "inputs" / "lps_case.nii.gz"
    folder = tmp_path / "project"
    init_project(folder, [image], bundled_model_folder("demo"))
    project = Project(folder)
    with project.changing() as state:
        entry = state.cases["lps_case"]
        entry.status, entry.round, entry.draft_model, entry.uncertainty = "in_correction", 1, 0, 0.31
    draft = read_image(review_folder / "lps_case_seg.nii.gz")
    names = {value: name for value, name in {5: "liver", 1: "spleen"}.items()}
    write_draft_files(image, draft.with_array(np.where(np.isin(draft.array, [1, 5]), draft.array, 0)), names,
                      project.case_folder(1, "lps_case"))
    source = open_source(folder)
    assert source.kind == ANNOTATION
    (case,) = source.cases()
    assert case.status == "in_correction" and case.uncertainty == 0.31 and case.classes[5] == "liver"
    assert case.labels == project.case_folder(1, "lps_case") / "draft.nii.gz"
    app = ReviewApp(folder, reviewer="tester")
    answer = app.decide("lps_case", "accept", "fine as drafted")
    assert "zero effort" in answer["effect"]
    accepted = project.read().cases["lps_case"]
    assert accepted.status == "accepted" and accepted.effort["voxels_changed"] == 0
    assert app.decisions.read()["lps_case"].decision == "accept"


def test_a_folder_with_nothing_to_review_is_refused(tmp_path):
    with pytest.raises(InputError, match="no cases to review"):
        open_source(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        open_source(tmp_path / "missing")
