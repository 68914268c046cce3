"""mrseg dataset build: phantom folders and CSVs into nnU-Net raw datasets, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.io import read_image, write_image
from mrseg.training.dataset import CASES_FILE, build_dataset, cases_from_csv, cases_from_folder


def test_a_phantom_folder_becomes_an_nnunet_raw_dataset(phantom_folder, tmp_path):
    cases = cases_from_folder(phantom_folder)
    target = build_dataset(cases, tmp_path / "raw", dataset_id=7, name="Phantoms")
    assert target.name == "Dataset007_Phantoms"
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["numTraining"] == len(cases) == 6
    assert meta["labels"]["background"] == 0 and len(meta["labels"]) == BASE.num_classes + 1
    assert meta["labels"]["liver"] == BASE.index_of("liver") and meta["channel_names"] == {"0": "MRI"}
    for case in cases:
        image = target / "imagesTr" / f"{case.name}_0000.nii.gz"
        assert image.read_bytes() == Path(case.image).read_bytes()  # copied bit for bit
        labels = read_image(target / "labelsTr" / f"{case.name}.nii.gz")
        assert np.array_equal(labels.array, read_image(case.label).array)
    records = {r["case"]: r for r in json.loads((target / CASES_FILE).read_text())}
    assert records["ct_contrast_002"]["modality"] == "ct" and records["mr_t2_haste_001"]["sequence"] == "t2_haste"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no work folder left


def test_csv_rows_are_remapped_into_the_40_classes(phantom_folder, tmp_path):
    source = read_image(phantom_folder / "mr_t1_in_000_labels.nii.gz")
    amos = np.zeros_like(source.array)
    amos[source.array == BASE.index_of("liver")] = 6  # AMOS22: 6 liver, 8 aorta, 15 prostate/uterus
    amos[source.array == BASE.index_of("aorta")] = 8
    amos[:2] = 15  # a class outside the 40: background
    write_image(source.with_array(amos), tmp_path / "amos_labels.nii.gz")
    mha = tmp_path / "image.mha"
    write_image(read_image(phantom_folder / "mr_t1_in_000.nii.gz"), mha)
    table = tmp_path / "cases.csv"
    table.write_text("image,label,modality,sequence,dataset,label_map\n"
                     "image.mha,amos_labels.nii.gz,mr,t1,AMOS,amos22\n")
    (case,) = cases_from_csv(table)
    target = build_dataset([case], tmp_path / "raw", dataset_id=8, name="Amos")
    labels = read_image(target / "labelsTr" / "image.nii.gz").array
    assert set(np.unique(labels)) == {0, BASE.index_of("liver"), BASE.index_of("aorta")}
    assert np.array_equal(labels == BASE.index_of("liver"), source.array == BASE.index_of("liver"))
    image = read_image(target / "imagesTr" / "image_0000.nii.gz")  # the MHA became NIfTI, same grid
    assert image.geometry.same_grid(source.geometry)


def _one_case_folder(phantom_folder: Path, folder: Path) -> Path:
    folder.mkdir()
    for suffix in (".nii.gz", "_labels.nii.gz", ".json"):
        (folder / f"a{suffix}").write_bytes((phantom_folder / f"mr_t1_in_000{suffix}").read_bytes())
        (folder / f"b{suffix}").write_bytes((phantom_folder / f"mr_t2_haste_001{suffix}").read_bytes())
    return folder


def test_a_label_off_the_image_grid_names_the_case_and_leaves_nothing(phantom_folder, tmp_path):
    folder = _one_case_folder(phantom_folder, tmp_path / "in")
    labels = read_image(folder / "b_labels.nii.gz")
    shifted = labels.geometry.__class__(labels.geometry.shape, labels.geometry.spacing,
                                        tuple(o + 5.0 for o in labels.geometry.origin), labels.geometry.direction)
    write_image(labels.__class__(labels.array, shifted), folder / "b_labels.nii.gz")
    raw = tmp_path / "raw"
    with pytest.raises(InputError, match=r"case b .*not on the image's grid: origin"):
        build_dataset(cases_from_folder(folder), raw, dataset_id=9, name="Bad")
    assert list(raw.iterdir()) == []  # case a was written to the work folder, which is gone


def test_label_values_outside_the_map_name_the_case(phantom_folder, tmp_path):
    folder = _one_case_folder(phantom_folder, tmp_path / "in")
    labels = read_image(folder / "a_labels.nii.gz")
    array = labels.array.copy()
    array[0, 0, 0] = 77
    write_image(labels.with_array(array), folder / "a_labels.nii.gz")
    with pytest.raises(InputError, match=r"case a .*label values 77 are not in the 'base' label map"):
        build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=9, name="Bad")


def test_a_dataset_of_its_own_classes_keeps_their_values_and_names(phantom_folder, tmp_path):
    folder = _one_case_folder(phantom_folder, tmp_path / "in")
    for case in ("a", "b"):  # liver → 1, spleen → 2, everything else background
        source = read_image(folder / f"{case}_labels.nii.gz")
        own = np.select([source.array == BASE.index_of("liver"), source.array == BASE.index_of("spleen")], [1, 2], 0)
        write_image(source.with_array(own.astype(np.uint8)), folder / f"{case}_labels.nii.gz")
    target = build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=11, name="Own",
                           labels={"liver": 1, "spleen": 2})
    meta = json.loads((target / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2}
    written = read_image(target / "labelsTr" / "a.nii.gz").array
    assert set(np.unique(written)) == {0, 1, 2}
    assert np.array_equal(written, read_image(folder / "a_labels.nii.gz").array)


def test_own_classes_refuse_values_they_do_not_name_and_gaps(phantom_folder, tmp_path):
    folder = _one_case_folder(phantom_folder, tmp_path / "in")  # 40-class labels: values up to 40
    with pytest.raises(InputError, match=r"case a .*label value\(s\) \[.*\] are not among the dataset's classes"):
        build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=12, name="Own",
                      labels={"liver": 1, "spleen": 2})
    with pytest.raises(InputError, match="numbered 1 … N without gaps"):
        build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=12, name="Own",
                      labels={"liver": 1, "spleen": 3})
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_an_existing_dataset_is_kept_unless_overwritten(phantom_folder, tmp_path):
    folder = _one_case_folder(phantom_folder, tmp_path / "in")
    cases = cases_from_folder(folder)
    first = build_dataset(cases, tmp_path / "raw", dataset_id=10, name="Twice")
    with pytest.raises(InputError, match="exists; pass overwrite"):
        build_dataset(cases, tmp_path / "raw", dataset_id=10, name="Twice")
    assert build_dataset(cases[:1], tmp_path / "raw", dataset_id=10, name="Twice", overwrite=True) == first
    assert json.loads((first / "dataset.json").read_text())["numTraining"] == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,labels\na.nii.gz,b.nii.gz\n", "missing \\['label'\\], unknown \\['labels'\\]"),
        ("image,label\na.nii.gz,\n", "line 2: image and label must both be given"),
        ("image,label\n", "no cases listed"),
    ],
)
def test_bad_csvs_are_refused(tmp_path, text, message):
    table = tmp_path / "cases.csv"
    table.write_text(text)
    with pytest.raises(InputError, match=message):
        cases_from_csv(table)


def test_other_bad_input_is_refused(phantom_folder, tmp_path):
    cases = cases_from_folder(_one_case_folder(phantom_folder, tmp_path / "in"))
    with pytest.raises(InputError, match="dataset id must be 1..999"):
        build_dataset(cases, tmp_path / "raw", dataset_id=1000, name="X")
    with pytest.raises(InputError, match="dataset name must be letters"):
        build_dataset(cases, tmp_path / "raw", dataset_id=11, name="has_underscore")
    with pytest.raises(InputError, match="share the name 'a'"):
        build_dataset([cases[0], cases[0]], tmp_path / "raw", dataset_id=11, name="Dup")
    with pytest.raises(InputError, match="modality must be one of ct, mr"):
        build_dataset([cases[0].__class__(**{**cases[0].__dict__, "modality": "pet"})], tmp_path / "raw",
                      dataset_id=11, name="Pet")
    with pytest.raises(InputError, match="no NAME.nii.gz / NAME_labels.nii.gz pairs"):
        cases_from_folder(tmp_path / "raw")


def test_cli_builds_a_dataset_and_reports_errors(phantom_folder, tmp_path, caplog):
    assert main(["dataset", "build", str(phantom_folder), "--raw", str(tmp_path / "raw"), "--id", "12",
                 "--name", "Cli"]) == 0
    assert (tmp_path / "raw" / "Dataset012_Cli" / "dataset.json").is_file()
    assert main(["dataset", "build", str(phantom_folder), "--raw", str(tmp_path / "raw"), "--id", "12",
                 "--name", "Cli"]) == 2
    assert "exists; pass overwrite" in caplog.text


def test_cases_are_stored_in_lps_so_left_and_right_stay_apart(phantom_folder, tmp_path):
    from mrseg.io import orientation_code, reorient

    lps = read_image(phantom_folder / "mr_t1_in_000.nii.gz")
    lps_labels = read_image(phantom_folder / "mr_t1_in_000_labels.nii.gz")
    assert orientation_code(lps.geometry) == "LPS"
    folder = tmp_path / "cases"
    for code in ("RAS", "PIL"):
        image, _ = reorient(lps, code)
        labels, _ = reorient(lps_labels, code)
        write_image(image, folder / f"{code}.nii.gz")
        write_image(labels, folder / f"{code}_labels.nii.gz")
        (folder / f"{code}.json").write_text(json.dumps({"modality": "mr", "sequence": "t1_in"}))
    target = build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=9, name="Turned")
    for code in ("RAS", "PIL"):
        stored = read_image(target / "imagesTr" / f"{code}_0000.nii.gz")
        stored_labels = read_image(target / "labelsTr" / f"{code}.nii.gz")
        assert orientation_code(stored.geometry) == "LPS" and stored.geometry.same_grid(lps.geometry)
        assert np.array_equal(stored.array, lps.array) and np.array_equal(stored_labels.array, lps_labels.array)
    kept = build_dataset(cases_from_folder(folder), tmp_path / "raw", dataset_id=10, name="Kept", orientation=None)
    assert orientation_code(read_image(kept / "imagesTr" / "RAS_0000.nii.gz").geometry) == "RAS"
