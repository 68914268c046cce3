"""Several models on one scan (base and body_comp): separate outputs, and --combine into one map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.io import Image, read_image, write_image
from mrseg.model import store
from mrseg.pipeline.outputs import default_postfix as model_postfix
from mrseg.postprocess import combine_label_maps, combined_classes
from parity import phantom_image


def test_each_model_has_its_own_postfix():
    assert [model_postfix(m) for m in (None, "base", "body_comp", "demo", "path/to/model")] == [
        "seg", "seg", "body_comp_seg", "seg", "seg"]


def test_combine_shifts_later_models_and_the_first_wins():
    grid = phantom_image("oblique")
    base = np.zeros(grid.array.shape, np.uint8)
    body = np.zeros(grid.array.shape, np.uint8)
    base[2:6] = 5
    body[4:10] = 1
    body[12:14] = 10
    combined = combine_label_maps([grid.with_array(base), grid.with_array(body)], [0, 40])
    assert combined.geometry == grid.geometry and combined.array.dtype == np.uint8
    assert (combined.array[2:6] == 5).all()            # base wins where both label
    assert (combined.array[6:10] == 41).all() and (combined.array[12:14] == 50).all()
    assert (combined.array[10:12] == 0).all()


def test_combined_class_table_is_one_to_one():
    offsets, table = combined_classes([{"spleen": 1, "liver": 5}, {"subcutaneous_fat": 1, "liver": 2}])
    assert offsets == [0, 5]
    assert table == {1: "spleen", 5: "liver", 6: "subcutaneous_fat", 7: "2:liver"}


def test_combine_refuses_other_grids():
    a = phantom_image("LPS")
    b = phantom_image("RAS")
    with pytest.raises(InputError, match="different grids"):
        combine_label_maps([a.with_array(a.array.astype(np.uint8)), b.with_array(b.array.astype(np.uint8))], [0, 4])


def test_base_and_body_comp_on_one_scan(model_dir, tmp_path, caplog):
    # Stand-ins for the published models (which cannot be downloaded here): two different small
    # models imported into the store under the published names.
    store.import_model(model_dir(), name="base")
    store.import_model(model_dir(kind="ResidualEncoderUNet"), name="body_comp")
    write_image(phantom_image("PIL"), tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "in"), "-o", str(out), "--model", "base", "body_comp", "--combine",
                 "--fast", "--no-progress"]) == 0
    base = read_image(out / "scan_seg.nii.gz")
    body = read_image(out / "scan_body_comp_seg.nii.gz")
    combined = read_image(out / "scan_combined.nii.gz")
    assert combined.geometry.same_grid(base.geometry)
    expected = np.where(base.array > 0, base.array, np.where(body.array > 0, body.array + 4, 0))
    assert np.array_equal(combined.array, expected) and base.array.max() > 0
    table = json.loads((out / "combined_classes.json").read_text())
    assert table["1"] == "class_1" and table["5"] == "2:class_1"
    reports = [json.loads(p.read_text()) for p in out.glob("mrseg_run_*.json")]
    assert sorted(r["settings"]["postfix"] for r in reports) == ["body_comp_seg", "seg"]
    assert sorted(r["model"]["name"] for r in reports) == ["base", "body_comp"]


def test_multi_model_option_errors(model_dir, tmp_path, caplog):
    write_image(phantom_image("LPS"), tmp_path / "in" / "scan.nii.gz")
    args = ["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert main([*args, "--model", "base", "body_comp", "--postfix", "x"]) == 2
    assert "--postfix names the output of one model" in caplog.text
    assert main([*args, "--model", str(model_dir()), "--combine"]) == 2
    assert "--combine needs two or more models" in caplog.text
    assert main([*args, "--model", str(model_dir()), str(model_dir(kind="ResidualEncoderUNet"))]) == 2
    assert "would write the same output names" in caplog.text
    assert not (tmp_path / "out").exists()


def test_combined_image_keeps_wide_values():
    grid = phantom_image("LPS")
    a = np.zeros(grid.array.shape, np.uint8)
    a[0] = 200
    combined = combine_label_maps([grid.with_array(a), grid.with_array(a)], [0, 200])
    assert combined.array.dtype == np.uint16 and combined.array.max() == 200
    assert isinstance(combined, Image)
