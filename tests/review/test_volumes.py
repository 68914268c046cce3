"""Display slices: whatever axes a file is stored in, patient right is on screen left (axial and
coronal), superior on top (coronal and sagittal), anterior on the left (sagittal) and at the top
(axial)."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io import read_image, write_image
from mrseg.review.volumes import VolumeCache, load_volume
from review_factory import side_of

LIVER, SPLEEN, LUNG, BLADDER = (BASE.index_of(n) for n in ("liver", "spleen", "right_lung", "urinary_bladder"))


@pytest.mark.parametrize("case", ["ras_case", "lps_case", "pir_case"])
def test_planes_show_the_patient_in_radiological_convention(review_folder, case):
    volume = load_volume(review_folder / "inputs" / f"{case}.nii.gz", review_folder / f"{case}_seg.nii.gz")
    assert volume.spacing == pytest.approx((6.0, 5.0, 4.0))  # the phantom's x, y, z spacing, whatever the storage
    i, j, k = volume.shape_ijk
    liver_k = int(np.median(np.nonzero(volume.labels == LIVER)[0]))
    axial = volume.plane("axial", liver_k, layer="labels").array
    assert axial.shape == (j, i)
    assert side_of(axial, LIVER) < 0.5 < side_of(axial, SPLEEN)  # liver (patient right) on screen left
    coronal = volume.plane("coronal", j // 2, layer="labels")
    assert coronal.array.shape == (k, i) and (coronal.row_spacing, coronal.column_spacing) == (4.0, 6.0)
    rows_lung = np.nonzero(np.isin(coronal.array, [LUNG, BASE.index_of("left_lung")]))[0]
    rows_liver = np.nonzero(coronal.array == LIVER)[0]
    assert rows_lung.mean() < rows_liver.mean()  # lungs above the liver: superior on top
    sagittal = volume.plane("sagittal", i // 2, layer="labels").array
    assert sagittal.shape == (k, j)
    muscle = BASE.index_of("right_autochthonous_muscle")  # the back muscle behind the liver
    planes = np.stack([volume.plane("sagittal", n, layer="labels").array for n in range(0, i, 2)])
    assert np.nonzero(planes == LIVER)[2].mean() < np.nonzero(planes == muscle)[2].mean()  # anterior: screen left


def test_slices_of_the_image_and_its_labels_match_and_bad_requests_are_refused(review_folder):
    volume = load_volume(review_folder / "inputs" / "ras_case.nii.gz", review_folder / "ras_case_seg.nii.gz")
    image = volume.plane("axial", 10).array
    labels = volume.plane("axial", 10, layer="labels").array
    assert image.shape == labels.shape and labels.dtype == np.uint8
    low, high = volume.window
    assert volume.value_range[0] <= low < high <= volume.value_range[1]
    with pytest.raises(InputError, match="outside 0"):
        volume.plane("axial", volume.count("axial"))
    with pytest.raises(InputError, match="plane must be one of"):
        volume.plane("oblique", 0)


def test_labels_on_another_grid_are_refused(review_folder, tmp_path):
    labels = read_image(review_folder / "lps_case_seg.nii.gz")
    cropped = labels.__class__(labels.array[1:], labels.geometry.__class__(
        labels.array[1:].shape, labels.geometry.spacing, labels.geometry.origin, labels.geometry.direction))
    write_image(cropped, tmp_path / "cropped.nii.gz")
    with pytest.raises(InputError, match="not on the grid"):
        load_volume(review_folder / "inputs" / "lps_case.nii.gz", tmp_path / "cropped.nii.gz")


def test_the_cache_loads_a_case_once_and_keeps_the_latest(review_folder):
    cache = VolumeCache(capacity=2)
    pairs = [(review_folder / "inputs" / f"{c}.nii.gz", review_folder / f"{c}_seg.nii.gz")
             for c in ("ras_case", "lps_case", "pir_case")]
    cache.warm(*pairs[0])
    first = cache.get(*pairs[0])
    assert cache.get(*pairs[0]) is first  # loaded once
    cache.get(*pairs[1])
    cache.get(*pairs[2])  # the first case leaves the cache
    assert cache.get(*pairs[0]) is not first
    cache.close()
