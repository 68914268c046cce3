"""Finding cases: folders leave out label maps and earlier outputs; bad paths are refused up front."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.errors import InputError
from mrseg.io import write_image
from mrseg.io.paths import LABEL_MAP_DESCRIPTION
from mrseg.pipeline.cases import collect_cases
from parity import phantom_image


def test_folders_leave_out_label_maps_and_outputs_by_name_and_header(tmp_path):
    image = phantom_image("RAS")
    labels = image.with_array((image.array > 0).astype(np.uint8))
    write_image(image, tmp_path / "scan.nii.gz")
    write_image(labels, tmp_path / "scan_labels.nii.gz")      # mrseg phantom's truth
    write_image(labels, tmp_path / "scan_seg.nii.gz")         # an earlier output
    write_image(labels, tmp_path / "scan_seg_seg.nii.gz")     # an output of that output
    write_image(labels, tmp_path / "scan_mine.nii.gz")        # the run's own --postfix mine
    write_image(labels, tmp_path / "renamed.nii.gz", description=LABEL_MAP_DESCRIPTION)
    found = collect_cases([tmp_path], postfixes=["mine"])
    assert [c.name for c in found.cases] == ["scan"]
    reasons = {path.name: reason for path, reason in found.skipped}
    assert reasons["scan_labels.nii.gz"] == "its name ends in _labels"
    assert reasons["scan_mine.nii.gz"] == "its name ends in _mine"
    assert reasons["renamed.nii.gz"] == "its header says it is an mrseg label map"
    assert len(reasons) == 5


def test_a_file_named_explicitly_is_always_a_case(tmp_path):
    image = phantom_image("RAS")
    path = write_image(image.with_array((image.array > 0).astype(np.uint8)), tmp_path / "x_seg.nii.gz")
    assert [c.name for c in collect_cases([path]).cases] == ["x_seg"]


def test_a_folder_without_image_files_is_a_dicom_case(tmp_path):
    (tmp_path / "series").mkdir()
    (tmp_path / "series" / "1.dcm").write_bytes(b"\0" * 200)
    (case,) = collect_cases([tmp_path / "series"]).cases
    assert case.is_dicom and case.name == "series"


def test_bad_inputs_are_refused_before_any_work(tmp_path):
    with pytest.raises(InputError, match=r"missing.nii.gz: no such file or folder; check the path"):
        collect_cases([tmp_path / "missing.nii.gz"])
    with pytest.raises(InputError, match=r"\*.mha: the pattern matches no file"):
        collect_cases([str(tmp_path / "*.mha")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: the folder is empty; give image files \(.nii.gz, .nii, .mha"):
        collect_cases([tmp_path / "empty"])
    write_image(phantom_image("LPS"), tmp_path / "one" / "scan.nii.gz")
    write_image(phantom_image("LPS"), tmp_path / "two" / "scan.mha")
    with pytest.raises(InputError, match="would both write outputs named scan_"):
        collect_cases([tmp_path / "one", tmp_path / "two"])
    image = phantom_image("LPS")
    write_image(image.with_array((image.array > 0).astype(np.uint8)), tmp_path / "only" / "a_seg.nii.gz")
    with pytest.raises(InputError, match="no images to segment: every file given is a label map"):
        collect_cases([tmp_path / "only"])


def test_the_same_file_twice_is_one_case(tmp_path):
    path = write_image(phantom_image("LPS"), tmp_path / "a.nii.gz")
    assert len(collect_cases([path, tmp_path / "." / "a.nii.gz", str(tmp_path / "*.nii.gz")]).cases) == 1
