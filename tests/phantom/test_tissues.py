"""The tissue catalogue: organs removed from a tissue map, clutter in the visceral fat."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.phantom.tissues import TISSUE_INDEX, mesenteric_clutter, to_classes, without_classes


def test_removing_a_class_removes_all_its_tissues_and_nothing_else():
    names = ["liver", "left_kidney_cortex", "left_kidney_medulla", "right_kidney_cortex", "muscle"]
    tissue_map = np.array([TISSUE_INDEX[n] for n in names], dtype=np.uint8)
    removed = without_classes(tissue_map, ["left_kidney"])
    assert removed.dtype == tissue_map.dtype
    assert [int(t) for t in removed] == [TISSUE_INDEX["liver"], TISSUE_INDEX["visceral_fat"],
                                         TISSUE_INDEX["visceral_fat"], TISSUE_INDEX["right_kidney_cortex"],
                                         TISSUE_INDEX["muscle"]]
    assert BASE.index_of("left_kidney") not in to_classes(removed)
    np.testing.assert_array_equal(without_classes(tissue_map, []), tissue_map)


def test_unknown_classes_and_fills_are_refused():
    tissue_map = np.zeros(3, np.uint8)
    with pytest.raises(InputError, match="unknown class 'kidney'"):
        without_classes(tissue_map, ["kidney"])
    with pytest.raises(InputError, match="fill must be a tissue"):
        without_classes(tissue_map, ["liver"], fill="concrete")


def _fat_around_an_organ() -> np.ndarray:
    tissue_map = np.full((20, 40, 50), TISSUE_INDEX["visceral_fat"], dtype=np.uint8)
    tissue_map[:, :5] = TISSUE_INDEX["subcutaneous_fat"]
    tissue_map[5:15, 10:30, 10:30] = TISSUE_INDEX["liver"]
    return tissue_map


@pytest.mark.parametrize("fraction", [0.1, 0.45])
def test_clutter_fills_that_share_of_the_visceral_fat_in_blobs_and_keeps_the_labels(fraction):
    tissue_map = _fat_around_an_organ()
    spacing_zyx = (4.0, 2.0, 2.0)  # anisotropic: blobs measured in mm
    cluttered = mesenteric_clutter(tissue_map, spacing_zyx, fraction=fraction, seed=3)
    fat = tissue_map == TISSUE_INDEX["visceral_fat"]
    changed = cluttered != tissue_map
    assert not changed[~fat].any()  # the organ and the subcutaneous fat are untouched
    assert changed[fat].mean() == pytest.approx(fraction, abs=0.01)
    new = np.unique(cluttered[changed])
    assert set(new.tolist()) == {TISSUE_INDEX["mesentery"], TISSUE_INDEX["muscle"]}
    assert (cluttered == TISSUE_INDEX["muscle"]).sum() == pytest.approx(fraction / 3 * fat.sum(), rel=0.05)
    np.testing.assert_array_equal(to_classes(cluttered), to_classes(tissue_map))  # label 0 stays 0
    # blobs, not salt and pepper: most clutter voxels have clutter on both sides along x
    inner = changed[:, :, 1:-1] & changed[:, :, :-2] & changed[:, :, 2:]
    assert inner.sum() > 0.6 * changed[:, :, 1:-1].sum()
    assert cluttered.dtype == tissue_map.dtype and tissue_map[fat].min() == TISSUE_INDEX["visceral_fat"]


def test_clutter_follows_its_seed_and_none_leaves_the_map_as_it_was():
    tissue_map = _fat_around_an_organ()
    first = mesenteric_clutter(tissue_map, (2.0, 2.0, 2.0), fraction=0.3, seed=5)
    np.testing.assert_array_equal(first, mesenteric_clutter(tissue_map, (2.0, 2.0, 2.0), fraction=0.3, seed=5))
    assert (first != mesenteric_clutter(tissue_map, (2.0, 2.0, 2.0), fraction=0.3, seed=6)).any()
    np.testing.assert_array_equal(mesenteric_clutter(tissue_map, (2.0, 2.0, 2.0), fraction=0.0, seed=5), tissue_map)


@pytest.mark.parametrize(("options", "message"), [
    ({"fraction": 1.5}, "fraction is the share of the visceral fat"),
    ({"fraction": 0.2, "blob_mm": 0.0}, "blob_mm must be a positive size"),
])
def test_clutter_options_are_checked(options, message):
    with pytest.raises(InputError, match=message):
        mesenteric_clutter(_fat_around_an_organ(), (2.0, 2.0, 2.0), seed=0, **options)
