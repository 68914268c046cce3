"""The output specification owns every output name."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrseg.errors import InputError
from mrseg.pipeline.outputs import OutputSpec, default_postfix


def test_names_of_every_output(tmp_path):
    spec = OutputSpec(tmp_path, postfix="seg")
    paths = spec.paths("scan")
    assert {k: p.name for k, p in paths.items()} == {
        "labels": "scan_seg.nii.gz", "dicom_seg": "scan_seg.dcm", "masks": "scan_seg",
        "statistics_json": "scan_seg_stats.json", "statistics_csv": "scan_seg_stats.csv",
        "preview": "scan_seg_preview.png"}
    assert spec.record_path("scan").name == "scan_seg_record.json"
    assert spec.staging_dir("scan") == tmp_path / ".mrseg" / "staging" / "scan_seg"
    assert spec.lock_path("scan") == tmp_path / ".mrseg" / "locks" / "scan_seg.lock"


@pytest.mark.parametrize("output_type, dicom, expected", [
    ("auto", False, ("labels",)), ("auto", True, ("labels", "dicom_seg")), ("nifti", True, ("labels",)),
    ("dicom-seg", True, ("dicom_seg",)), ("both", False, ("labels", "dicom_seg")),
])
def test_wanted_outputs_follow_the_output_type(output_type, dicom, expected):
    assert OutputSpec(Path("o"), output_type=output_type).wanted(dicom_input=dicom) == expected


def test_extras_are_wanted_in_commit_order():
    spec = OutputSpec(Path("o"), statistics=True, preview=True, split_classes=True)
    assert spec.wanted(dicom_input=False) == ("labels", "masks", "statistics_json", "statistics_csv", "preview")


def test_bad_specs_are_refused():
    with pytest.raises(InputError, match="output type must be one of auto, nifti, dicom-seg, both, got 'png'"):
        OutputSpec(Path("o"), output_type="png")
    with pytest.raises(InputError, match="postfix must be a plain name part"):
        OutputSpec(Path("o"), postfix="a/b")


def test_classes_are_stored_sorted_and_hashable():
    spec = OutputSpec.with_classes(Path("o"), {"liver": 5, "spleen": 1})
    assert spec.classes == (("spleen", 1), ("liver", 5)) and hash(spec)


def test_each_model_has_its_own_postfix():
    assert [default_postfix(m) for m in (None, "base", "body_comp", "demo", "path/to/model")] == [
        "seg", "seg", "body_comp_seg", "seg", "seg"]
