"""The tissue catalogue: organs removed from a tissue map, clutter in the visceral fat, the perirenal space,
aortic ectasia, extraperitoneal fat, smooth random deformation."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.phantom.tissues import (
    TISSUE_INDEX,
    aortic_ectasia,
    extraperitoneal_fat,
    mesenteric_clutter,
    perirenal_fat,
    smoothly_deformed,
    to_classes,
    without_classes,
)


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


def _kidneys_in_fat() -> np.ndarray:
    """Fat (z, y, x) with a left kidney (cortex round a medulla), a right one, a liver above the
    right kidney and muscle above the left one; z runs towards the head."""
    tissue_map = np.full((40, 30, 60), TISSUE_INDEX["visceral_fat"], dtype=np.uint8)
    tissue_map[10:20, 10:20, 36:46] = TISSUE_INDEX["left_kidney_cortex"]
    tissue_map[13:17, 13:17, 39:43] = TISSUE_INDEX["left_kidney_medulla"]
    tissue_map[12:18, 10:20, 12:22] = TISSUE_INDEX["right_kidney_cortex"]
    tissue_map[24:30, 8:22, 10:24] = TISSUE_INDEX["liver"]
    tissue_map[28:32, 8:22, 34:48] = TISSUE_INDEX["muscle"]
    return tissue_map


def test_perirenal_space_wraps_each_kidney_reaches_up_and_changes_only_fat():
    tissue_map = _kidneys_in_fat()
    spacing_zyx = (3.0, 2.0, 2.0)
    spaced = perirenal_fat(tissue_map, spacing_zyx, (1.0, 0.0, 0.0), margin_mm=4.0, rise_mm=24.0)
    changed = spaced != tissue_map
    assert set(np.unique(spaced[changed]).tolist()) == {TISSUE_INDEX["perirenal_fat"]}
    assert (tissue_map[changed] == TISSUE_INDEX["visceral_fat"]).all()  # organs and muscle stay
    np.testing.assert_array_equal(to_classes(spaced), to_classes(tissue_map))
    z, _, x = np.nonzero(changed)
    left, right = x >= 30, x < 30
    # around the left kidney (z 10-19): 4 mm is one slice below it, 8 slices (24 mm) plus one above it,
    # but no higher than the muscle at z 28; two voxels (4 mm) to either side in x
    assert z[left].min() == 9 and z[left].max() == 27
    assert x[left].min() == 34 and x[left].max() == 47
    # the right kidney's space rises into the liver's way and stops there (the liver stays liver)
    assert z[right].min() == 11 and z[right].max() == 23
    assert (spaced[24:30, 8:22, 10:24] == TISSUE_INDEX["liver"]).all()
    # nothing below the kidneys beyond the margin, nothing between them
    assert not changed[:9].any() and not changed[:, :, 25:33].any()


def test_perirenal_space_follows_the_head_direction_of_the_grid():
    tissue_map = _kidneys_in_fat()
    upright = perirenal_fat(tissue_map, (3.0, 2.0, 2.0), (1.0, 0.0, 0.0), margin_mm=4.0, rise_mm=24.0)
    flipped = perirenal_fat(tissue_map[::-1], (3.0, 2.0, 2.0), (-1.0, 0.0, 0.0), margin_mm=4.0, rise_mm=24.0)
    np.testing.assert_array_equal(flipped[::-1], upright)
    # a head direction along y sweeps the space along y instead
    sideways = perirenal_fat(tissue_map, (3.0, 2.0, 2.0), (0.0, 1.0, 0.0), margin_mm=0.0, rise_mm=10.0)
    z, y, _ = np.nonzero(sideways != tissue_map)
    assert z.min() >= 10 and z.max() <= 19 and y.min() >= 20 and y.max() <= 24


def test_perirenal_space_of_no_size_or_without_kidneys_changes_nothing():
    tissue_map = _kidneys_in_fat()
    np.testing.assert_array_equal(perirenal_fat(tissue_map, (3.0, 2.0, 2.0), (1.0, 0.0, 0.0), margin_mm=0.0,
                                                rise_mm=0.0), tissue_map)
    no_kidneys = without_classes(tissue_map, ["left_kidney", "right_kidney"])
    np.testing.assert_array_equal(perirenal_fat(no_kidneys, (3.0, 2.0, 2.0), (1.0, 0.0, 0.0), margin_mm=5.0,
                                                rise_mm=20.0), no_kidneys)


@pytest.mark.parametrize(("options", "message"), [
    ({"margin_mm": -1.0, "rise_mm": 10.0}, "margin_mm and rise_mm are sizes in mm and must be >= 0"),
    ({"margin_mm": 2.0, "rise_mm": float("nan")}, "margin_mm and rise_mm are sizes in mm and must be >= 0"),
    ({"margin_mm": 2.0, "rise_mm": 10.0, "superior_zyx": (1.0, 1.0, 0.0)}, "superior_zyx must be a unit vector"),
])
def test_perirenal_options_are_checked(options, message):
    options = {"superior_zyx": (1.0, 0.0, 0.0), **options}
    with pytest.raises(InputError, match=message):
        perirenal_fat(_kidneys_in_fat(), (3.0, 2.0, 2.0), **options)


def _aorta_beside_spine_and_lung() -> np.ndarray:
    """A 2 mm aorta of radius 5 voxels (lumen, thrombus on its right half) running along z, with
    lung on its left, the spine behind it and fat elsewhere."""
    t = np.full((12, 40, 40), TISSUE_INDEX["visceral_fat"], dtype=np.uint8)
    t[:, :, 26:] = TISSUE_INDEX["left_lung"]
    t[:, 27:, :] = TISSUE_INDEX["spine_cortex"]
    _, y, x = np.ogrid[:12, :40, :40]
    inside = np.broadcast_to((y - 20) ** 2 + (x - 20) ** 2 <= 25, t.shape)
    t[inside] = TISSUE_INDEX["aorta"]
    t[inside & np.broadcast_to(x < 18, t.shape)] = TISSUE_INDEX["aortic_thrombus"]
    return t


def test_ectasia_widens_the_aorta_into_fat_and_lung_only_and_keeps_its_thrombus_at_the_wall():
    tissue_map = _aorta_beside_spine_and_lung()
    wide = aortic_ectasia(tissue_map, (2.0, 2.0, 2.0), widen_mm=6.0)
    aorta = BASE.index_of("aorta")
    before, after = to_classes(tissue_map) == aorta, to_classes(wide) == aorta
    assert (after >= before).all() and (wide[before] == tissue_map[before]).all()  # the old aorta stays as it was
    changed = wide != tissue_map
    claimed = set(np.unique(tissue_map[changed]).tolist())
    assert claimed == {TISSUE_INDEX["visceral_fat"], TISSUE_INDEX["left_lung"]}  # never the spine
    # 6 mm is 3 voxels: the radius goes from 5 to 8 voxels in front, not into the spine behind (y >= 27)
    row = after[6, :, 20]
    assert np.nonzero(row)[0].min() == 12 and np.nonzero(row)[0].max() == 26
    column = after[6, 20, :]
    assert np.nonzero(column)[0].min() == 12 and np.nonzero(column)[0].max() == 28
    # the widened wall takes the tissue nearest to it: thrombus on the right, lumen on the left
    assert wide[6, 20, 12] == TISSUE_INDEX["aortic_thrombus"] and wide[6, 20, 28] == TISSUE_INDEX["aorta"]


def test_ectasia_of_no_width_or_without_an_aorta_changes_nothing_and_a_negative_one_is_refused():
    tissue_map = _aorta_beside_spine_and_lung()
    np.testing.assert_array_equal(aortic_ectasia(tissue_map, (2.0, 2.0, 2.0), widen_mm=0.0), tissue_map)
    no_aorta = without_classes(tissue_map, ["aorta"])
    np.testing.assert_array_equal(aortic_ectasia(no_aorta, (2.0, 2.0, 2.0), widen_mm=5.0), no_aorta)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError, match="widen_mm is a size in mm and must be >= 0"):
            aortic_ectasia(tissue_map, (2.0, 2.0, 2.0), widen_mm=bad)


def _liver_and_bowel_against_the_wall() -> np.ndarray:
    """A slab (4 slices, 2 mm voxels): the wall's muscle in columns 0-3, then liver in columns
    4-19 with a bubble of bowel gas at column 5 in a stomach at rows 0-3, small bowel with its own
    gas at rows 16-19, and a kidney at rows 12-15."""
    t = np.full((4, 20, 20), TISSUE_INDEX["visceral_fat"], np.uint8)
    t[:, :, :4] = TISSUE_INDEX["muscle"]
    t[:, 4:12, 4:] = TISSUE_INDEX["liver"]
    t[:, :4, 4:] = TISSUE_INDEX["stomach_wall"]
    t[:, 1:3, 5] = TISSUE_INDEX["bowel_gas"]
    t[:, 12:16, 4:] = TISSUE_INDEX["left_kidney_cortex"]
    t[:, 16:, 4:] = TISSUE_INDEX["small_bowel_wall"]
    t[:, 17:19, 5] = TISSUE_INDEX["bowel_gas"]
    return t


def test_extraperitoneal_fat_keeps_the_peritoneal_organs_off_the_wall_and_nothing_else():
    tissue_map = _liver_and_bowel_against_the_wall()
    kept_off = extraperitoneal_fat(tissue_map, (2.0, 2.0, 2.0), margin_mm=4.0)
    assert kept_off.dtype == tissue_map.dtype and kept_off is not tissue_map
    fat = TISSUE_INDEX["visceral_fat"]
    # 4 mm is two 2-mm columns: the liver and the stomach (its gas too) start at column 6
    assert (kept_off[:, 4:12, 4:6] == fat).all() and (kept_off[:, 4:12, 6:] == TISSUE_INDEX["liver"]).all()
    assert (kept_off[:, :4, 4:6] == fat).all() and (kept_off[:, :4, 6:] == TISSUE_INDEX["stomach_wall"]).all()
    # the kidney (retroperitoneal), the small bowel and its gas, and the wall itself stay
    for rows in (slice(12, 16), slice(16, 20)):
        np.testing.assert_array_equal(kept_off[:, rows], tissue_map[:, rows])
    assert (kept_off[:, :, :4] == TISSUE_INDEX["muscle"]).all()
    assert (to_classes(kept_off) == BASE.index_of("liver")).sum() == 4 * 8 * 14


def test_extraperitoneal_fat_keeps_the_organs_off_the_ribs_as_off_the_muscle():
    """In the chest wall the liver and spleen lie against the ribs and costal cartilages: those are
    the wall too."""
    tissue_map = _liver_and_bowel_against_the_wall()
    tissue_map[:, 4:8, :4] = TISSUE_INDEX["rib_cortex"]
    tissue_map[:, 8:12, :4] = TISSUE_INDEX["costal_cartilage"]
    kept_off = extraperitoneal_fat(tissue_map, (2.0, 2.0, 2.0), margin_mm=4.0)
    assert (kept_off[:, 4:12, 4:6] == TISSUE_INDEX["visceral_fat"]).all()
    assert (kept_off[:, 4:12, 6:] == TISSUE_INDEX["liver"]).all()


def test_extraperitoneal_fat_of_no_thickness_or_without_a_wall_changes_nothing_and_a_negative_one_is_refused():
    tissue_map = _liver_and_bowel_against_the_wall()
    np.testing.assert_array_equal(extraperitoneal_fat(tissue_map, (2.0, 2.0, 2.0), margin_mm=0.0), tissue_map)
    no_wall = np.where(tissue_map == TISSUE_INDEX["muscle"], TISSUE_INDEX["visceral_fat"], tissue_map).astype(np.uint8)
    np.testing.assert_array_equal(extraperitoneal_fat(no_wall, (2.0, 2.0, 2.0), margin_mm=6.0), no_wall)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError, match="margin_mm is a thickness in mm and must be >= 0"):
            extraperitoneal_fat(tissue_map, (2.0, 2.0, 2.0), margin_mm=bad)


def test_a_smooth_deformation_moves_the_organs_against_each_other_and_keeps_them_whole():
    """SynthSeg-style: each organ moves by up to a few SDs of the displacement, neighbours by
    different amounts (the places vary relative to each other), every tissue stays one tissue,
    an organ stays one piece of about its volume; the same seed gives the same field."""
    from scipy import ndimage

    from mrseg.phantom.anatomy import generate_anatomy

    tissues = generate_anatomy(seed=3, fov="abdomen", spacing=(3.0, 3.0, 3.0)).tissues.array
    spacing = (3.0, 3.0, 3.0)
    deformed = smoothly_deformed(tissues, spacing, displacement_mm=8.0, seed=1)
    assert deformed.dtype == tissues.dtype and deformed.shape == tissues.shape
    assert np.array_equal(deformed, smoothly_deformed(tissues, spacing, displacement_mm=8.0, seed=1))
    assert not np.array_equal(deformed, smoothly_deformed(tissues, spacing, displacement_mm=8.0, seed=2))
    assert set(np.unique(deformed)) <= set(np.unique(tissues))
    moves = {}
    for name in ("liver", "spleen", "left_kidney_cortex", "right_kidney_cortex", "aorta"):
        before, after = tissues == TISSUE_INDEX[name], deformed == TISSUE_INDEX[name]
        assert 0.6 < after.sum() / before.sum() < 1.6, name
        pieces, count = ndimage.label(after)
        assert np.bincount(pieces.ravel())[1:].max() > 0.9 * after.sum(), name  # one piece
        moves[name] = (np.argwhere(after).mean(0) - np.argwhere(before).mean(0)) * 3.0
        assert np.linalg.norm(moves[name]) < 4 * 8.0 * np.sqrt(3), name
    # the kidneys, 150 mm apart, do not move as one
    assert np.linalg.norm(moves["left_kidney_cortex"] - moves["right_kidney_cortex"]) > 2.0
    assert max(np.linalg.norm(m) for m in moves.values()) > 4.0


def test_no_deformation_changes_nothing_and_a_folding_one_is_refused():
    tissue_map = np.full((4, 5, 6), TISSUE_INDEX["liver"], dtype=np.uint8)
    assert np.array_equal(smoothly_deformed(tissue_map, (2.0, 2.0, 2.0), displacement_mm=0.0, seed=0), tissue_map)
    for bad in (-1.0, 25.0):
        with pytest.raises(InputError, match="displacement_mm is an SD in mm"):
            smoothly_deformed(tissue_map, (2.0, 2.0, 2.0), displacement_mm=bad, seed=0)
