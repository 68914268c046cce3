"""Class subsets (--classes), one mask per class (--split-classes), and nnU-Net's largest-component steps."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.cli import main
from mrseg.io import read_image, write_image
from mrseg.model.postprocessing import KeepLargestComponent
from mrseg.postprocess import apply_postprocessing, keep_largest_components, select_classes, write_class_masks
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


# --------------------------------------------------------------------------- largest connected components


def test_largest_components_equal_nnunets_own_step():
    """nnU-Net's remove_all_but_largest_component_from_segmentation, voxel for voxel."""
    nnunet = pytest.importorskip("nnunetv2.postprocessing.remove_connected_components")
    rng = np.random.default_rng(3)
    labels = np.zeros((20, 24, 28), np.uint8)
    for value in (1, 2, 3, 4):
        labels[rng.random(labels.shape) < 0.03] = value  # many small islands per label, some touching diagonally
        labels[tuple(slice(int(a), int(a) + 6) for a in rng.integers(0, 14, size=3))] = value
    before = labels.copy()
    steps = [KeepLargestComponent((1, 2, 3, 4)), KeepLargestComponent((2,)), KeepLargestComponent((3, 4))]
    expected = labels
    for step in steps:
        expected = nnunet.remove_all_but_largest_component_from_segmentation(
            expected, list(step.labels) if len(step.labels) > 1 else step.labels[0])
        assert np.array_equal(keep_largest_components(labels, steps[: steps.index(step) + 1]), expected)
    assert np.array_equal(labels, before)  # the input is left as it was
    assert 0 < np.count_nonzero(expected) < np.count_nonzero(labels)


def test_components_touching_at_a_corner_are_one_and_equal_largest_ones_all_stay():
    labels = np.zeros((3, 5, 5), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # diagonal neighbours: one component of two voxels (26-connected)
    labels[2, 4, 4] = 1
    labels[0, 4, 0] = labels[0, 4, 1] = 1  # a second component of two voxels
    kept = keep_largest_components(labels, [KeepLargestComponent((1,))])
    assert kept[0, 0, 0] == kept[1, 1, 1] == kept[0, 4, 0] == kept[0, 4, 1] == 1 and kept[2, 4, 4] == 0


def test_postprocessing_keeps_the_grid_and_skips_absent_labels():
    image = phantom_image("oblique")
    labels = image.with_array(np.zeros(image.array.shape, np.uint8))
    labels.array[0, 0, 0] = labels.array[-1, -1, -1] = labels.array[-1, -1, -2] = 2
    done = apply_postprocessing(labels, [KeepLargestComponent((2,)), KeepLargestComponent((7,))])
    assert done.geometry == labels.geometry and done.array.sum() == 4 and done.array[0, 0, 0] == 0
    assert apply_postprocessing(labels, []) is labels
