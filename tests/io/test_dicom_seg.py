"""DICOM-SEG output read back with highdicom and compared voxel by voxel with the NIfTI labels."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import SegmentationStorage

from dicom_factory import write_series
from dicom_phantoms import dciodvfy_errors
from mrseg.classes import BASE, BODY_COMP, CATALOGUES
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.evaluation.label_maps import label_map
from mrseg.io import Image, read_image, reorient
from mrseg.io.dicom import select_series
from mrseg.io.dicom_seg import _read_source, write_dicom_seg

NAMES = {c.index: c.name for c in BASE.classes}
BY_NAME = {c.name: c for c in BASE.classes}


def base_value(label: str) -> int:
    return BY_NAME[label].index if label in BY_NAME else -1


def read_back(path, series, value_of=base_value) -> tuple[hd.seg.Segmentation, np.ndarray]:
    """The segmentation and its label map in the source slices' order, each segment's voxels set to
    ``value_of(its segment label)``."""
    seg = hd.seg.segread(str(path))
    uids = [_read_source(f).SOPInstanceUID for f in series.files]
    numbers = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                skip_overlap_checks=True)
    lut = np.zeros(max(int(numbers.max()), len(seg.SegmentSequence)) + 1, np.int64)
    for item in seg.SegmentSequence:
        lut[item.SegmentNumber] = value_of(item.SegmentLabel)
    return seg, lut[numbers]


def test_real_series_round_trip_with_codes_and_laterality(shared_data, tmp_path):
    folder = shared_data / "dicom" / "example_ct_series"
    image = read_image(folder)
    reference, _ = reorient(read_image(shared_data / "labels" / "example_ct_series__totalseg117.nii.gz"),
                            "LPS")
    assert reference.geometry.same_grid(image.geometry)
    labels = reference.with_array(label_map("totalseg").apply(reference.array).astype(np.uint8))
    series = select_series(folder)
    written = write_dicom_seg(labels, series, tmp_path / "ct_seg.dcm", classes=NAMES, model_name="base")
    path = written.path
    seg, back = read_back(path, series)
    assert np.array_equal(back, labels.array)  # voxel by voxel
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    # the anonymised source has empty Study and Series Instance UIDs: new ones, and notes that say so
    assert series.uid == "" and [n.split(": ")[0].rsplit(" ", 1)[-1] for n in written.notes] == [
        "StudyInstanceUID", "SeriesInstanceUID"]
    referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced and referenced in written.notes[1] and seg.StudyInstanceUID in written.notes[0]
    assert dciodvfy_errors(path) == []  # before: empty Type 1 StudyInstanceUID and SeriesInstanceUID
    present = sorted(int(v) for v in np.unique(labels.array) if v)
    assert [BY_NAME[s.SegmentLabel].index for s in seg.SegmentSequence] == present
    codings = set()
    for item in seg.SegmentSequence:
        entry = BY_NAME[item.SegmentLabel]
        coded = item.SegmentedPropertyTypeCodeSequence[0]
        assert (coded.CodeValue, coded.CodingSchemeDesignator) == (entry.coding.code, "SCT")
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        modifier = getattr(coded, "SegmentedPropertyTypeModifierCodeSequence", None)
        side = modifier[0].CodeMeaning.lower() if modifier else None
        assert side == entry.laterality
        codings.add((coded.CodeValue, side))
        assert len(item.RecommendedDisplayCIELabValue) == 3
        assert item.SegmentAlgorithmName == "mrseg base" and item.SegmentAlgorithmType == "AUTOMATIC"
    assert len(codings) == len(seg.SegmentSequence)  # left and right never share a coding
    assert {"right_autochthonous_muscle", "left_autochthonous_muscle"} <= {s.SegmentLabel for s in seg.SegmentSequence}


def test_synthetic_series_and_errors(tmp_path):
    write_series(tmp_path / "series")
    series = select_series(tmp_path / "series")
    image = read_image(tmp_path / "series")
    array = np.zeros(image.array.shape, np.uint8)
    array[1:3, 2:6, 1:4] = BY_NAME["left_kidney"].index
    array[3:5, 5:9, 4:7] = BY_NAME["right_kidney"].index
    labels = image.with_array(array)
    path = write_dicom_seg(labels, series, tmp_path / "out" / "seg.dcm", classes=NAMES).path
    _, back = read_back(path, series)
    assert np.array_equal(back, array)
    with pytest.raises(InputError, match="no class is present"):
        write_dicom_seg(labels.with_array(np.zeros_like(array)), series, tmp_path / "out" / "empty.dcm",
                        classes=NAMES)
    with pytest.raises(InputError, match="do not cover 1 of the 5 frames"):
        write_dicom_seg(Image.from_array(array[:-1].copy(), spacing=labels.geometry.spacing,
                                         origin=labels.geometry.origin, direction=labels.geometry.direction),
                        series, tmp_path / "out" / "short.dcm", classes=NAMES)
    shifted = Image.from_array(array, spacing=labels.geometry.spacing, origin=(0.0, 0.0, 0.0),
                               direction=labels.geometry.direction)
    with pytest.raises(InputError, match="do not cover 5 of the 5 frames"):
        write_dicom_seg(shifted, series, tmp_path / "out" / "shifted.dcm", classes=NAMES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["seg.dcm"]


def test_body_composition_segments_carry_tissue_types_and_regions(tmp_path):
    """Every body-composition class has its own coding: the fats by type and anatomic regions, the
    muscles (DICOM's Abdominal wall muscle: no specific concept could be checked) by the part of the
    wall they make up and by laterality."""
    write_series(tmp_path / "series", slices=BODY_COMP.num_classes)
    series = select_series(tmp_path / "series")
    image = read_image(tmp_path / "series")
    array = np.zeros(image.array.shape, np.uint8)
    for entry in BODY_COMP.classes:
        array[entry.index - 1, 2:6, 1:5] = entry.index  # one class per slice
    names = {c.index: c.name for c in BODY_COMP.classes}
    path = write_dicom_seg(image.with_array(array), series, tmp_path / "bc.dcm", classes=names,
                           model_name="body_comp").path
    seg, back = read_back(path, series, value_of=BODY_COMP.index_of)
    assert np.array_equal(back, array)
    codings: dict[str, tuple] = {}
    for item in seg.SegmentSequence:
        coded = item.SegmentedPropertyTypeCodeSequence[0]
        modifier = getattr(coded, "SegmentedPropertyTypeModifierCodeSequence", None)
        regions = tuple(r.CodeValue for r in getattr(item, "AnatomicRegionSequence", []))
        category = item.SegmentedPropertyCategoryCodeSequence[0].CodeValue
        codings[item.SegmentLabel] = (category, coded.CodeValue, modifier[0].CodeValue if modifier else None, regions)
    assert codings["subcutaneous_fat"] == ("85756007", "67769002", None, ())
    assert codings["visceral_fat"] == ("85756007", "55603005", None, ("818987002",))
    assert codings["abdominal_subcutaneous_fat"] == ("85756007", "67769002", None, ("818981001",))
    assert codings["gluteofemoral_fat"] == ("85756007", "67769002", None, ("46862004", "68367000"))
    for muscle, region in (("rectus_abdominis", "59380008"), ("oblique_muscle", "58602004"),
                           ("quadratus_lumborum", "52612000")):
        assert codings[f"left_{muscle}"] == ("91723000", "1142228004", "7771000", (region,))
        assert codings[f"right_{muscle}"] == ("91723000", "1142228004", "24028007", (region,))
    assert len(set(codings.values())) == len(codings) == BODY_COMP.num_classes  # no two classes share one


def test_classes_named_side_last_get_the_catalogue_codes():
    from mrseg.classes import find_class

    assert find_class("kidney_left") is find_class("left_kidney") is BY_NAME["left_kidney"]
    assert find_class("rectus_abdominis_right").coding.regions == (("59380008", "Anterior abdominal wall structure"),)
    assert find_class("left") is None and find_class("_left") is None and find_class("tumour_left") is None


def test_catalogue_codes_agree_with_the_dicom_standard():
    """Every SNOMED code of the catalogues that DICOM PS3.16 lists (pydicom ships its concept table as
    ``codes.SCT``) carries the meaning DICOM gives it: a mistyped code number would name another concept."""
    from pydicom.sr.codedict import codes

    dicom_meanings: dict[str, list[str]] = {}
    for keyword in codes.SCT.dir():
        concept = getattr(codes.SCT, keyword)
        dicom_meanings.setdefault(concept.value, []).append(concept.meaning.lower())
    used = {}
    for cat in CATALOGUES.values():
        for entry in cat.classes:
            if entry.coding is not None:
                used[entry.coding.code] = entry.coding.meaning
                used.update(entry.coding.regions)
    checked = 0
    for code, meaning in used.items():
        if code in dicom_meanings:
            checked += 1
            known = dicom_meanings[code]
            assert any(meaning.lower() in k for k in known), (code, meaning, known)
    assert checked >= 25  # the codes DICOM does not list (e.g. 67769002, 206007) come from the peer tools' tables
    for cat in CATALOGUES.values():  # every class is coded, and no two classes of a model share a coding
        codings = [(e.coding.code, e.laterality, e.coding.regions) for e in cat.classes if e.coding is not None]
        assert len(set(codings)) == len(codings) == cat.num_classes, cat.name


def test_segment_a_dicom_series_writes_nifti_and_dicom_seg(model_dir, tmp_path, caplog):
    write_series(tmp_path / "in" / "study")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in" / "study"), "-o", str(out), "--model", str(model_dir()),
                 "--fast", "--no-progress"]) == 0
    nifti = read_image(out / "study_seg.nii.gz")
    assert (out / "study_seg.dcm").is_file()
    _, back = read_back(out / "study_seg.dcm", select_series(tmp_path / "in" / "study"),
                        value_of=lambda label: int(label.split("_")[1]))  # the test model's class_K names
    assert np.array_equal(back, nifti.array)
    # A plain image file cannot become a DICOM-SEG: that case fails with the reason, nothing written.
    from mrseg.io import write_image
    write_image(nifti, tmp_path / "plain.nii.gz")
    assert main(["segment", str(tmp_path / "plain.nii.gz"), "-o", str(tmp_path / "o2"), "--model",
                 str(model_dir()), "--output-type", "dicom-seg", "--fast", "--no-progress"]) == 1
    assert "DICOM-SEG output needs a DICOM series" in caplog.text
    assert not list((tmp_path / "o2").glob("plain_seg*"))
