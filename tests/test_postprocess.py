"""Class subsets (--classes) and one mask per class (--split-classes)."""

from __future__ import annotations

import numpy as np

from mrseg.cli import main
from mrseg.io import read_image, write_image
from mrseg.postprocess import select_classes, write_class_masks
from parity import phantom_image


def test_select_keeps_only_the_chosen_values():
    image = phantom_image("oblique")
    labels = image.with_array(np.arange(image.array.size).reshape(image.array.shape).astype(np.uint8) % 6)
    kept = select_classes(labels, [1, 5])
    assert set(np.unique(kept.array)) == {0, 1, 5}
    assert np.array_equal(kept.array == 5, labels.array == 5) and kept.geometry == labels.geometry
    assert kept.array.dtype == np.uint8


def test_masks_per_class_keep_the_grid_and_replace_atomically(tmp_path):
    image = phantom_image("PIL")
    labels = image.with_array((np.arange(image.array.size).reshape(image.array.shape) % 3).astype(np.uint8))
    classes = {"spleen": 1, "right_kidney": 2, "liver": 5}
    folder = write_class_masks(labels, classes, tmp_path / "case_seg")
    assert sorted(p.name for p in folder.iterdir()) == ["liver.nii.gz", "right_kidney.nii.gz", "spleen.nii.gz"]
    spleen = read_image(folder / "spleen.nii.gz")
    assert spleen.geometry.same_grid(labels.geometry)
    assert np.array_equal(spleen.array, (labels.array == 1).astype(np.uint8))
    assert read_image(folder / "liver.nii.gz").array.max() == 0  # absent classes get an empty mask
    write_class_masks(labels, {"spleen": 1}, tmp_path / "case_seg")
    assert [p.name for p in tmp_path.iterdir()] == ["case_seg"]  # no staging folder left
    assert [p.name for p in folder.iterdir()] == ["spleen.nii.gz"]


def test_segment_with_classes_and_split_masks(model_dir, tmp_path, caplog):
    write_image(phantom_image("LPS"), tmp_path / "in" / "scan.nii.gz")
    model = str(model_dir())
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "all"), "--model", model, "--fast",
                 "--no-progress"]) == 0
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", model, "--fast",
                 "--classes", "class_2", "3", "--split-classes", "--no-progress"]) == 0
    full = read_image(tmp_path / "all" / "scan_seg.nii.gz").array
    subset = read_image(tmp_path / "out" / "scan_seg.nii.gz").array
    assert {2, 3} <= set(np.unique(full)) and set(np.unique(subset)) == {0, 2, 3}
    assert np.array_equal(subset, np.where(np.isin(full, [2, 3]), full, 0))
    masks = tmp_path / "out" / "scan_seg"
    assert sorted(p.name for p in masks.iterdir()) == ["class_2.nii.gz", "class_3.nii.gz"]
    assert np.array_equal(read_image(masks / "class_3.nii.gz").array, (full == 3).astype(np.uint8))
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "bad"), "--model", model,
                 "--classes", "clas_2"]) == 2
    assert "did you mean class_2" in caplog.text and not (tmp_path / "bad").exists()
