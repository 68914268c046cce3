"""Domain-randomised training cases: draws recorded, reproducible, crops in place, gamma."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io.image import Image
from mrseg.io.resample import resample_labels
from mrseg.phantom.anatomy import AORTIC_DISEASE_SHARE
from mrseg.phantom.cases import make_case, write_case
from mrseg.phantom.randomization import (
    RandomizationRanges,
    apply_gamma,
    case_recipe,
    crop,
    crop_box,
    draw_recipe,
    random_case,
)
from mrseg.phantom.synthesis import FAT_SUPPRESSIBLE, MR_SCALE

COARSE_FIELDS = {"in_plane_spacing": (5.0, 6.0), "slice_spacing": (6.0, 8.0)}
COARSE = RandomizationRanges(**COARSE_FIELDS)


def test_a_seed_makes_the_same_case_and_records_its_draws():
    a, b = random_case(7, ranges=COARSE), random_case(7, ranges=COARSE)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.image.geometry == a.labels.geometry
    recipe = a.metadata["randomization"]
    assert {"modality", "sequence", "spacing", "orientation", "crop", "gamma", "bias_field"} <= set(recipe)
    assert a.image.geometry.spacing == pytest.approx(recipe["spacing"])
    other = random_case(8, ranges=COARSE)
    assert other.metadata["randomization"] != recipe
    assert other.image.array.shape != a.image.array.shape or not np.array_equal(other.image.array, a.image.array)


def test_a_sidecars_seed_and_ranges_draw_the_case_again(tmp_path):
    """What ``scripts/train_demo_model.py --redraw-generated`` relies on to redraw a work folder."""
    ranges = RandomizationRanges(**COARSE_FIELDS, crop_share=1.0, fields_of_view=("abdomen", "thorax"))
    case = random_case(9, ranges=ranges)
    write_case(case, tmp_path, "case")
    sidecar = json.loads((tmp_path / "case.json").read_text())
    recorded = RandomizationRanges.from_record(sidecar["ranges"])
    assert recorded == ranges
    again = random_case(sidecar["seed"], ranges=recorded)
    assert json.loads(json.dumps(again.metadata["randomization"], default=float)) == sidecar["randomization"]
    np.testing.assert_array_equal(again.image.array, case.image.array)


def test_draws_cover_the_ranges():
    rng = np.random.default_rng(0)
    recipes = [draw_recipe(rng, RandomizationRanges(), templates=2) for _ in range(400)]
    modalities = [r["modality"] for r in recipes]
    assert 0.12 < modalities.count("ct") / 400 < 0.28
    assert 0.35 < sum(r["random_contrast"] for r in recipes) / 400 < 0.55
    assert {r["orientation"] for r in recipes} >= {"LPS", "RAS", "PIL", "ASL", "oblique"}
    assert all(1.5 <= r["spacing"][0] == r["spacing"][1] <= 4.0 for r in recipes)
    assert all(r["spacing"][2] <= r["slice_thickness"] <= 1.5 * r["spacing"][2] for r in recipes)
    assert {r["template"] for r in recipes} == {None, 0, 1}
    slabs = [r["crop"]["slab_mm"] for r in recipes if r["crop"] and r["crop"]["slab_mm"]]
    assert slabs and all(40 <= s <= 120 for s in slabs)
    assert all(r["gamma"] == 1.0 for r in recipes if r["modality"] == "ct")


def test_template_cases_keep_the_template_anatomy():
    ranges = RandomizationRanges(template_share=1.0, crop_share=0.0, removal_share=0.0, in_plane_spacing=(4.0, 4.0),
                                 slice_spacing=(4.0, 4.0))
    labels = make_case(seed=2, fov="abdomen", spacing=(4.0, 4.0, 4.0)).labels
    case = random_case(3, ranges=ranges, templates=[labels], template_names=["abdomen phantom"])
    assert case.metadata["source"] == "abdomen phantom"
    for label in (1, 2, 3, 5):  # spleen, both kidneys, liver: same volume within 15 %
        before = (labels.array == label).sum() * np.prod(labels.geometry.spacing)
        after = (case.labels.array == label).sum() * np.prod(case.labels.geometry.spacing)
        assert after == pytest.approx(before, rel=0.15)


def test_crop_keeps_every_voxel_at_its_world_position():
    full = make_case(seed=4, fov="abdomen", spacing=(3.0, 4.0, 5.0), orientation="oblique").labels
    box = (slice(3, 9), slice(5, 30), slice(2, 20))
    part = crop(full, box)
    np.testing.assert_array_equal(part.array, full.array[box])
    np.testing.assert_array_equal(resample_labels(full, part.geometry).array, part.array)


def test_crop_box_holds_anatomy_and_a_slab_has_its_thickness():
    labels = make_case(seed=5, fov="trunk", spacing=(4.0, 4.0, 5.0)).labels
    rng = np.random.default_rng(1)
    for _ in range(20):
        box = crop_box(labels, rng, fraction=(0.4, 0.5, 1.0), slab_mm=50.0)
        assert box[0].stop - box[0].start == 10  # 50 mm of 5 mm slices
        assert box[1].stop - box[1].start == int(np.ceil(labels.array.shape[1] * 0.5))
        assert all(0 <= s.start < s.stop <= n for s, n in zip(box, labels.array.shape))
        assert labels.array[box].any()


def test_a_crop_box_around_an_organ_holds_it_and_falls_back_to_any_anatomy_without_it():
    labels = make_case(seed=5, fov="trunk", spacing=(4.0, 4.0, 5.0)).labels
    spleen = BASE.index_of("spleen")
    rng = np.random.default_rng(2)
    for _ in range(20):
        box = crop_box(labels, rng, fraction=(0.3, 0.3, 0.3), around=spleen)
        assert (labels.array[box] == spleen).any()
    without = labels.with_array(np.where(labels.array == spleen, 0, labels.array).astype(labels.array.dtype))
    assert without.array[crop_box(without, rng, fraction=(0.3, 0.3, 0.3), around=spleen)].any()


def test_centred_crops_show_their_organ_and_leave_the_other_draws_as_they_were():
    fields = {**COARSE_FIELDS, "crop_share": 1.0, "crop_fraction": (0.35, 0.5), "removal_share": 0.0}
    centred = RandomizationRanges(centred_crop_share=1.0, crop_centres=("spleen", "left_kidney"), **fields)
    for seed in (21, 22, 23):
        anywhere = random_case(seed, ranges=RandomizationRanges(**fields)).metadata["randomization"]
        case = random_case(seed, ranges=centred)
        recipe = case.metadata["randomization"]
        assert anywhere["crop"]["centre"] is None and recipe["crop"]["centre"] in ("spleen", "left_kidney")
        assert (case.labels.array == BASE.index_of(recipe["crop"]["centre"])).any()
        ignored = {"crop", "removed"}
        assert {k: v for k, v in recipe.items() if k not in ignored} == \
            {k: v for k, v in anywhere.items() if k not in ignored}
        assert recipe["crop"]["fraction"] == anywhere["crop"]["fraction"]


def test_gamma_bends_contrast_and_keeps_the_range():
    image = Image.from_array(np.linspace(0, 100, 1000, dtype=np.float32).reshape(10, 10, 10))
    bent = apply_gamma(image, 2.0).array
    peak = np.percentile(image.array, 99.9)
    assert bent.max() == pytest.approx(image.array.max() ** 2 / peak, rel=1e-4)
    assert bent[5, 0, 0] < image.array[5, 0, 0] and np.all(np.diff(bent.ravel()) >= 0)
    np.testing.assert_array_equal(apply_gamma(Image.from_array(np.zeros((2, 2, 2), np.float32)), 2.0).array, 0)
    with pytest.raises(InputError, match="gamma must be a positive number"):
        apply_gamma(image, 0.0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ct_share": 1.5}, "ct_share is a share"),
    ({"random_contrast_share": 0.7, "ct_share": 0.5}, "at most 1"),
    ({"noise": (0.1, 0.01)}, "noise must be a range"),
    ({"slab_mm": (0.0, 10.0)}, "slab_mm must be positive"),
    ({"crop_fraction": (0.5, 1.2)}, "crop_fraction is a fraction"),
    ({"gamma_log_sd": -1.0}, "gamma_log_sd must be"),
    ({"removable": ("livr",)}, "unknown class 'livr'"),
    ({"removal_share": 0.2, "removable": ()}, "needs at least one removable class"),
    ({"crop_centres": ("splen",)}, "unknown class 'splen'"),
    ({"centred_crop_share": 0.5, "crop_centres": ()}, "needs at least one class in crop_centres"),
    ({"arterial_share": -0.1}, "arterial_share is a share"),
    ({"fluid_share": 1.5}, "fluid_share is a share"),
    ({"fat_suppression_share": -0.5}, "fat_suppression_share is a share"),
    ({"fat_suppression": (0.9, 1.2)}, "fat_suppression is a fraction, at most 1"),
    ({"fat_suppressed_sequences": ("t2_tse", "dixon_fat")}, "fat_suppressed_sequences may only hold"),
    ({"fatty_organ_share": 2.0}, "fatty_organ_share is a share"),
    ({"liver_fat_fraction": (0.1, 1.1)}, "liver_fat_fraction is a fraction, at most 1"),
    ({"clutter_share": 1.5}, "clutter_share is a share"),
    ({"clutter_fraction": (0.2, 1.5)}, "clutter_fraction is a fraction, at most 1"),
    ({"perirenal_share": -0.1}, "perirenal_share is a share"),
    ({"perirenal_rise_mm": (30.0, 10.0)}, "perirenal_rise_mm must be a range"),
    ({"ectasia_share": 1.5}, "ectasia_share is a share"),
    ({"extraperitoneal_share": -0.1}, "extraperitoneal_share is a share"),
    ({"extraperitoneal_mm": (9.0, 2.0)}, "extraperitoneal_mm must be a range"),
    ({"subject_scale_share": 1.1}, "subject_scale_share is a share"),
    ({"subject_scale": (1.05, 0.85)}, "subject_scale must be a range"),
    ({"subject_scale": (0.3, 1.0)}, "subject_scale is a size factor within"),
    ({"ectasia_mm": (8.0, 2.0)}, "ectasia_mm must be a range"),
    ({"ectasia_modalities": ("pet",)}, "ectasia_modalities must name"),
    ({"thrombus_share": -0.1}, "thrombus_share is a share"),
    ({"thrombus_hu": (140.0, 40.0)}, "thrombus_hu must be a range"),
    ({"ectasia_modalities": ()}, "ectasia_modalities must name"),
    ({"layered_aorta_modalities": ("pet",)}, "layered_aorta_modalities must name"),
    ({"deformation_mm": (5.0, 25.0)}, "deformation_mm is the displacement's SD, at most 20 mm"),
    ({"deformation_share": 2.0}, "deformation_share is a share"),
    ({"organ_scale_share": -0.5}, "organ_scale_share is a share"),
    ({"perirenal_room_share": 1.5}, "perirenal_room_share is a share"),
    ({"perirenal_room_mm": (50.0, 20.0)}, "perirenal_room_mm must be a range"),
    ({"air_margin_share": 1.5}, "air_margin_share is a share"),
    ({"air_margin_mm": (100.0, 50.0)}, "air_margin_mm must be a range"),
    ({"air_margin_mm": (0.0, 400.0)}, "air_margin_mm reaches at most 300 mm a side"),
    ({"organ_scale": (1.0, 0.9)}, "organ_scale must be a range"),
    ({"organ_scale": (0.4, 1.0)}, "organ_scale is a size factor within"),
    ({"scaled_organs": ("pancreas",)}, "scaled_organs: pancreas; choose one or more of liver, spleen"),
    ({"scaled_organs": ()}, "scaled_organs: none given"),
    ({"ct_enhancement": (1.5, 0.5)}, "ct_enhancement must be a range"),
    ({"fields_of_view": ("neck",)}, "fields_of_view must name at least one of thorax"),
    ({"fields_of_view": ()}, "fields_of_view must name at least one of thorax"),
])
def test_ranges_are_checked(changes, message):
    with pytest.raises(InputError, match=message):
        RandomizationRanges(**changes)


def test_a_removed_organ_leaves_fat_in_its_place_and_no_label():
    ranges = RandomizationRanges(removal_share=1.0, removable=("spleen",), crop_share=0.0, random_contrast_share=0.0,
                                 ct_share=1.0, in_plane_spacing=(4.0, 4.0), slice_spacing=(4.0, 4.0), axial_share=1.0)
    with_organ = random_case(5, ranges=RandomizationRanges(**{**ranges.__dict__, "removal_share": 0.0}))
    without = random_case(5, ranges=ranges)
    assert without.metadata["randomization"]["removed"] == ["spleen"] and without.metadata["removed"] == ["spleen"]
    assert with_organ.metadata["randomization"]["removed"] == []
    spleen = with_organ.labels.array == BASE.index_of("spleen")
    assert spleen.sum() > 100 and not (without.labels.array == BASE.index_of("spleen")).any()
    np.testing.assert_array_equal(without.labels.array[~spleen], with_organ.labels.array[~spleen])
    core = ndimage.binary_erosion(spleen, iterations=2)
    assert np.median(with_organ.image.array[core]) > 20  # spleen, native CT about 50 HU
    assert np.median(without.image.array[core]) < -50  # fat, about -95 HU


def test_organ_removal_draws_leave_the_other_draws_as_they_were():
    share = [random_case(seed, ranges=RandomizationRanges(removal_share=s, **COARSE_FIELDS)).metadata["randomization"]
             for seed in (11, 12) for s in (0.0, 1.0)]
    for kept, removed in (share[:2], share[2:]):
        assert kept["removed"] == [] and len(removed["removed"]) == 1
        assert {k: v for k, v in kept.items() if k != "removed"} == {k: v for k, v in removed.items() if k != "removed"}


def test_arterial_phase_and_enhancement_draws_leave_the_other_draws_as_they_were():
    fields = {**COARSE_FIELDS, "ct_share": 1.0, "random_contrast_share": 0.0, "crop_share": 0.0}
    plain = RandomizationRanges(**fields)
    angio = RandomizationRanges(arterial_share=1.0, ct_enhancement=(0.6, 1.6), **fields)
    phases = set()
    for seed in range(8):
        before = random_case(seed, ranges=plain).metadata["randomization"]
        recipe = random_case(seed, ranges=angio).metadata["randomization"]
        assert before["enhancement"] == 1.0 and 0.6 <= recipe["enhancement"] <= 1.6
        # every enhanced CT becomes arterial; native CT stays native
        expected = "arterial" if before["sequence"] == "contrast" else "native"
        assert recipe["sequence"] == expected
        phases.add(recipe["sequence"])
        ignored = {"sequence", "enhancement"}
        assert {k: v for k, v in recipe.items() if k not in ignored} == \
            {k: v for k, v in before.items() if k not in ignored}
    assert phases == {"arterial", "native"}


def test_fields_of_view_are_drawn_from_the_ranges():
    ranges = RandomizationRanges(fields_of_view=("thorax",), template_share=0.0, **COARSE_FIELDS)
    rng = np.random.default_rng(0)
    assert {draw_recipe(rng, ranges)["fov"] for _ in range(20)} == {"thorax"}
    case = random_case(4, ranges=RandomizationRanges(fields_of_view=("thorax",), crop_share=0.0, **COARSE_FIELDS))
    assert case.metadata["fov"] == "thorax" and (case.labels.array == BASE.index_of("heart")).any()


def test_fluid_draws_change_the_fluids_and_leave_every_other_draw_and_voxel_as_it_was():
    fields = {**COARSE_FIELDS, "ct_share": 0.0, "random_contrast_share": 0.0, "crop_share": 0.0,
              "fields_of_view": ("abdomen",), "template_share": 0.0,
              "gamma_log_sd": 0.0}  # the gamma's peak is the image's 99.9th percentile, which a fluid may move
    plain, varied = RandomizationRanges(**fields), RandomizationRanges(fluid_share=1.0, **fields)
    for seed in (3, 4):
        before, after = random_case(seed, ranges=plain), random_case(seed, ranges=varied)
        recipe = after.metadata["randomization"]
        assert "bile" not in before.metadata["randomization"]
        assert 0 <= recipe["bile"] <= 1 and 0 <= recipe["gastric_content"] <= 1
        assert {k: v for k, v in recipe.items() if k not in ("bile", "gastric_content")} == \
            before.metadata["randomization"]
        np.testing.assert_array_equal(after.labels.array, before.labels.array)
        # only the voxels at the gallbladder and the stomach change (beyond the point-spread
        # function's far tail, a few thousandths on an image whose brightest tissue is 1000)
        fluid = np.isin(before.labels.array, [BASE.index_of("gallbladder"), BASE.index_of("stomach")])
        changed = ~np.isclose(after.image.array, before.image.array, rtol=0.0, atol=0.05)
        assert changed[fluid].mean() > 0.3
        assert not changed[~ndimage.binary_dilation(fluid, iterations=3)].any()


@pytest.mark.parametrize("sequences", [FAT_SUPPRESSIBLE, ("t2_haste", "t2_tse")])
def test_fat_suppression_draws_touch_only_the_chosen_mr_physics_cases_and_leave_the_other_draws(sequences):
    plain = RandomizationRanges()
    suppressed = RandomizationRanges(fat_suppression_share=1.0, fat_suppression=(0.9, 0.95),
                                     fat_suppressed_sequences=sequences)
    seen = set()
    for seed in range(200):
        before, recipe = case_recipe(seed, plain), case_recipe(seed, suppressed)
        eligible = before["modality"] == "mr" and not before["random_contrast"] and \
            before["sequence"] in sequences
        assert ("fat_suppression" in recipe) == eligible
        if eligible:
            seen.add(before["sequence"])
            assert 0.9 <= recipe["fat_suppression"] <= 0.95
        assert {k: v for k, v in recipe.items() if k != "fat_suppression"} == before
    assert seen == set(sequences)


def test_case_recipe_is_what_random_case_draws():
    ranges = RandomizationRanges(**COARSE_FIELDS, fat_suppression_share=1.0, fatty_organ_share=0.5, fluid_share=0.5,
                                 clutter_share=0.5, random_contrast_share=0.0, ct_share=0.0)
    seed = next(s for s in range(50) if "fat_suppression" in case_recipe(s, ranges))
    drawn = random_case(seed, ranges=ranges).metadata["randomization"]
    if drawn["crop"] is not None:
        del drawn["crop"]["box_zyx"]  # the one draw that needs the anatomy
    assert drawn == case_recipe(seed, ranges)


def test_a_fat_suppressed_case_has_dark_fat():
    fields = {**COARSE_FIELDS, "crop_share": 0.0, "ct_share": 0.0, "random_contrast_share": 0.0,
              "template_share": 0.0, "gamma_log_sd": 0.0, "fields_of_view": ("abdomen",)}
    seed = next(s for s in range(50) if random_case(s, ranges=RandomizationRanges(**fields)).metadata[
        "randomization"]["sequence"] == "t2_tse")
    plain = random_case(seed, ranges=RandomizationRanges(**fields))
    suppressed = random_case(seed, ranges=RandomizationRanges(fat_suppression_share=1.0, **fields))
    body = plain.image.array > 0.1 * MR_SCALE
    liver = ndimage.binary_erosion(plain.labels.array == BASE.index_of("liver"), iterations=1)
    fat = body & (plain.labels.array == 0) & (plain.image.array > 3 * np.median(plain.image.array[liver]))
    assert fat.sum() > 100  # bright fat in the plain T2 TSE
    assert np.median(suppressed.image.array[fat]) < np.median(suppressed.image.array[liver])


def test_fatty_organ_draws_change_the_liver_and_pancreas_and_leave_every_other_draw():
    fields = {**COARSE_FIELDS, "crop_share": 0.0, "gamma_log_sd": 0.0, "template_share": 0.0,
              "fields_of_view": ("abdomen",), "random_contrast_share": 0.0}
    plain = RandomizationRanges(**fields)
    fatty = RandomizationRanges(fatty_organ_share=1.0, liver_fat_fraction=(0.2, 0.3), **fields)
    for seed in (3, 4):  # opposed-phase MR, native CT
        before, after = random_case(seed, ranges=plain), random_case(seed, ranges=fatty)
        recipe = after.metadata["randomization"]
        assert 0.2 <= recipe["liver_fat_fraction"] <= 0.3 and 0 <= recipe["pancreas_fat_fraction"] <= 0.3
        ignored = ("liver_fat_fraction", "pancreas_fat_fraction")
        assert {k: v for k, v in recipe.items() if k not in ignored} == before.metadata["randomization"]
        np.testing.assert_array_equal(after.labels.array, before.labels.array)
        liver = ndimage.binary_erosion(before.labels.array == BASE.index_of("liver"), iterations=1)
        assert liver.sum() > 50
        # opposed phase: the fat cancels water, the liver darkens; CT: fat lowers the liver's HU
        assert np.median(after.image.array[liver]) < np.median(before.image.array[liver]) - 10


def _dixon_fat_case_with(key: str, varied: dict, **fields_extra):
    """One generated abdomen on a Dixon fat image, drawn plainly and with the ``varied`` ranges.

    Checks what every such lever must keep: its draw ``key`` is the only new one in the recipe,
    the labels are the same, and the organs away from their edges look the same. Returns both
    cases and the draw.
    """
    fields = {**COARSE_FIELDS, "crop_share": 0.0, "gamma_log_sd": 0.0, "template_share": 0.0,
              "fields_of_view": ("abdomen",), "random_contrast_share": 0.0, "ct_share": 0.0, **fields_extra}
    plain = RandomizationRanges(**fields)
    seed = next(s for s in range(50) if case_recipe(s, plain)["sequence"] == "dixon_fat")
    before, after = random_case(seed, ranges=plain), random_case(seed, ranges=RandomizationRanges(**varied, **fields))
    recipe = after.metadata["randomization"]
    assert {k: v for k, v in recipe.items() if k != key} == before.metadata["randomization"]
    np.testing.assert_array_equal(after.labels.array, before.labels.array)
    organs = ndimage.binary_erosion(before.labels.array > 0, iterations=2)
    assert not (np.abs(after.image.array - before.image.array) > 0.05 * MR_SCALE)[organs].any()
    return before, after, recipe[key]


def _drawn_share(key: str, **ranges) -> float:
    """The share of 200 seeds whose recipe holds the draw ``key``."""
    return float(np.mean([key in case_recipe(s, RandomizationRanges(**ranges)) for s in range(200)]))


def test_clutter_draws_fill_the_visceral_fat_and_leave_every_other_draw_and_label():
    before, after, clutter = _dixon_fat_case_with("clutter", {"clutter_share": 1.0, "clutter_fraction": (0.3, 0.4)})
    assert 0.3 <= clutter <= 0.4 and after.metadata["clutter"] == clutter
    # on a Dixon fat image the bright fat gets darker blobs (the same noise: only the tissue changed)
    bright_fat = (before.labels.array == 0) & (before.image.array > 0.5 * MR_SCALE)
    darker = after.image.array < 0.8 * before.image.array
    assert (darker & bright_fat).sum() > 300
    assert 0.35 < _drawn_share("clutter", clutter_share=0.5) < 0.65


def test_clutter_leaves_a_removed_organs_bed_even_fat():
    common = {"seed": 3, "sequence": "dixon_fat", "spacing": (5.0, 5.0, 6.0), "remove": ["liver"]}
    intact = make_case(seed=3, sequence="dixon_fat", spacing=(5.0, 5.0, 6.0))
    plain, cluttered = make_case(**common), make_case(**common, clutter=0.5)
    bed = ndimage.binary_erosion(intact.labels.array == BASE.index_of("liver"), iterations=2)
    assert bed.sum() > 100
    np.testing.assert_allclose(cluttered.image.array[bed], plain.image.array[bed], atol=0.05 * MR_SCALE)
    assert (cluttered.image.array != plain.image.array).any()  # the clutter is elsewhere


def test_perirenal_draws_give_the_kidneys_their_space_and_leave_every_other_draw_and_label():
    varied = {"perirenal_share": 1.0, "perirenal_margin_mm": (5.0, 6.0), "perirenal_rise_mm": (30.0, 35.0)}
    before, after, (margin, rise) = _dixon_fat_case_with("perirenal", varied, axial_share=1.0)
    assert 5.0 <= margin <= 6.0 and 30.0 <= rise <= 35.0
    assert after.metadata["perirenal"] == {"margin_mm": margin, "rise_mm": rise}
    # on the Dixon fat image the fat round each kidney darkens, and above the left one's upper pole
    # (the liver caps the right one)
    greyer = (after.image.array < 0.9 * before.image.array) & (before.labels.array == 0)
    for side in ("left_kidney", "right_kidney"):
        kidney = before.labels.array == BASE.index_of(side)
        assert (greyer & ndimage.binary_dilation(kidney, iterations=1)).sum() > 5, side
    kidney = before.labels.array == BASE.index_of("left_kidney")
    top = np.nonzero(kidney.any(axis=(1, 2)))[0].max()  # the grid is LPS: z runs towards the head
    above = np.zeros_like(kidney)
    above[top + 1:top + 5] = ndimage.binary_dilation(kidney.any(axis=0), iterations=1)[None]
    assert (greyer & above).sum() > 5
    assert 0.35 < _drawn_share("perirenal", perirenal_share=0.5) < 0.65


def test_a_removed_kidney_leaves_its_perirenal_space_behind():
    common = {"seed": 3, "sequence": "dixon_fat", "spacing": (4.0, 4.0, 4.0), "remove": ["left_kidney"]}
    intact = make_case(seed=3, sequence="dixon_fat", spacing=(4.0, 4.0, 4.0))
    plain, spaced = make_case(**common), make_case(**common, perirenal=(6.0, 20.0))
    bed = ndimage.binary_dilation(intact.labels.array == BASE.index_of("left_kidney"), iterations=2)
    darker = spaced.image.array < 0.9 * plain.image.array
    assert (darker & bed).sum() > 20  # the empty fossa keeps its greyer fat
    assert spaced.metadata["perirenal"] == {"margin_mm": 6.0, "rise_mm": 20.0}


def _generated_case_with(key: str, fov: str, varied: dict):
    """Case seed 4, a generated subject in ``fov`` without crop, drawn plainly and with the
    ``varied`` ranges; checks that the draw ``key`` is the only new one in the recipe. Returns
    both cases and the draw."""
    fields = {**COARSE_FIELDS, "crop_share": 0.0, "template_share": 0.0, "fields_of_view": (fov,)}
    before = random_case(4, ranges=RandomizationRanges(**fields))
    after = random_case(4, ranges=RandomizationRanges(**fields, **varied))
    recipe = after.metadata["randomization"]
    assert {k: v for k, v in recipe.items() if k != key} == before.metadata["randomization"]
    return before, after, recipe[key]


def _classes_given_to_fat(before, after) -> set[str]:
    """The classes whose voxels ``after`` gives to fat; every voxel that changed must be fat."""
    old, new = before.labels.array, after.labels.array
    changed = new != old
    assert changed.any() and (new[changed] == 0).all()  # organs only give way to fat
    return {BASE.name_of(int(i)) for i in np.unique(old[changed])}


def test_ectasia_draws_widen_the_aorta_and_leave_every_other_draw_and_class_but_the_lungs():
    before, after, widen = _generated_case_with("ectasia", "thorax", {"ectasia_share": 1.0, "ectasia_mm": (5.0, 6.0)})
    assert 5.0 <= widen <= 6.0 and after.metadata["ectasia_mm"] == widen
    aorta = BASE.index_of("aorta")
    old, new = before.labels.array, after.labels.array
    assert (new == aorta).sum() > 1.3 * (old == aorta).sum()
    changed = new != old
    assert (new[changed] == aorta).all()  # only the aorta gains
    lost = {BASE.name_of(int(i)) if i else "background" for i in np.unique(old[changed])}
    assert lost <= {"background", "left_lung", "right_lung"}, lost
    assert 0.35 < _drawn_share("ectasia", ectasia_share=0.5) < 0.65


def test_thrombus_draws_change_only_the_thrombus_ct_number_of_ct_cases():
    fields = {**COARSE_FIELDS, "crop_share": 0.0, "template_share": 0.0, "fields_of_view": ("trunk",),
              "ct_share": 1.0, "random_contrast_share": 0.0}
    for seed in range(40):  # a subject whose aorta has thrombus (30 % of them)
        plain = random_case(seed, ranges=RandomizationRanges(**fields))
        if plain.metadata["anatomy"]["aortic_disease"] < AORTIC_DISEASE_SHARE:
            break
    dense = random_case(seed, ranges=RandomizationRanges(**fields, thrombus_share=1.0, thrombus_hu=(120.0, 130.0)))
    recipe = dense.metadata["randomization"]
    assert {k: v for k, v in recipe.items() if k != "thrombus_hu"} == plain.metadata["randomization"]
    assert 120.0 <= recipe["thrombus_hu"] <= 130.0
    assert np.array_equal(dense.labels.array, plain.labels.array)
    # the same noise: the image only brightens (55 HU -> 120-130 HU, blurred by the slice profile),
    # and most inside the aorta
    rise = dense.image.array.astype(np.float64) - plain.image.array
    assert rise.min() > -1e-3 and rise.max() > 10
    labels = dense.labels.array
    by_class = {int(c): rise[labels == c].mean() for c in np.unique(labels[rise > 1e-3])}
    assert max(by_class, key=by_class.get) == BASE.index_of("aorta"), by_class
    assert _drawn_share("thrombus_hu", thrombus_share=1.0, ct_share=0.5) < 0.7  # CT cases only
    assert _drawn_share("thrombus_hu", thrombus_share=1.0, ct_share=0.5) > 0.3


def test_extraperitoneal_draws_keep_the_organs_off_the_wall_and_leave_every_other_draw():
    before, after, margin = _generated_case_with("extraperitoneal", "abdomen",
                                                 {"extraperitoneal_share": 1.0, "extraperitoneal_mm": (8.0, 9.0)})
    assert 8.0 <= margin <= 9.0 and after.metadata["extraperitoneal_mm"] == margin
    lost = _classes_given_to_fat(before, after)
    assert "liver" in lost and lost <= {"liver", "spleen", "gallbladder", "stomach", "colon"}, lost
    assert 0.35 < _drawn_share("extraperitoneal", extraperitoneal_share=0.5) < 0.65


def test_subject_scale_draws_shrink_the_subject_on_the_same_grid_and_leave_every_other_draw():
    before, after, factor = _generated_case_with("subject_scale", "abdomen",
                                                 {"subject_scale_share": 1.0, "subject_scale": (0.85, 0.86)})
    assert 0.85 <= factor <= 0.86 and after.metadata["scale"] == factor
    assert after.labels.geometry.spacing == before.labels.geometry.spacing
    liver = BASE.index_of("liver")
    ratio = (after.labels.array == liver).sum() / (before.labels.array == liver).sum()
    assert ratio == pytest.approx(factor ** 3, rel=0.08)
    assert 0.35 < _drawn_share("subject_scale", subject_scale_share=0.5) < 0.65


def test_layered_aorta_draws_give_a_generated_subject_the_layered_lumen_and_leave_every_other_draw():
    before, after, layered = _generated_case_with("layered_aorta", "abdomen", {"layered_aorta_share": 1.0})
    assert layered is True and after.metadata["layered_aorta"] is True
    assert after.metadata["anatomy"] == before.metadata["anatomy"]  # the subject's own draws, every one
    old, new = before.labels.array, after.labels.array
    changed = new != old
    aorta = BASE.index_of("aorta")
    if before.metadata["anatomy"]["aortic_disease"] >= AORTIC_DISEASE_SHARE:  # seed 4: a healthy subject
        assert (new == aorta).sum() > (old == aorta).sum()  # the diseased stretch is dilated
    # the aorta gains; the oesophagus beside it moves aside
    assert changed.any() and (new[changed] == aorta).mean() > 0.9
    assert set(np.unique(new[changed])) <= {0, aorta, BASE.index_of("esophagus")}
    # drawn at about the share, for generated subjects only (a template's aorta is given)
    assert 0.35 < _drawn_share("layered_aorta", layered_aorta_share=0.5) < 0.65
    with_templates = [case_recipe(s, RandomizationRanges(layered_aorta_share=1.0, template_share=0.5), templates=1)
                      for s in range(100)]
    assert all(("layered_aorta" in r) == (r["template"] is None) for r in with_templates)
    assert 20 < sum(r["template"] is None for r in with_templates) < 80
    only_ct = _drawn_share("layered_aorta", layered_aorta_share=1.0, template_share=0.0, ct_share=0.5,
                           layered_aorta_modalities=("ct",))
    assert 0.3 < only_ct < 0.7


def test_deformation_draws_move_the_organs_and_leave_every_other_draw():
    before, after, sd = _generated_case_with("deformation_mm", "abdomen",
                                             {"deformation_share": 1.0, "deformation_mm": (8.0, 9.0)})
    assert 8.0 <= sd <= 9.0 and after.metadata["deformation_mm"] == sd
    assert after.metadata["anatomy"] == before.metadata["anatomy"]
    liver = BASE.index_of("liver")
    old, new = before.labels.array == liver, after.labels.array == liver
    assert 0.6 < new.sum() / old.sum() < 1.6 and (old != new).mean() > 0.005
    assert 0.35 < _drawn_share("deformation_mm", deformation_share=0.5) < 0.65
    # templates are deformed too
    with_templates = [case_recipe(s, RandomizationRanges(deformation_share=1.0, template_share=1.0), templates=1)
                      for s in range(20)]
    assert all("deformation_mm" in r and r["template"] is not None for r in with_templates)


def test_organ_scale_draws_resize_a_generated_subjects_organs_and_leave_every_other_draw():
    before, after, factors = _generated_case_with("organ_scales", "abdomen",
                                                  {"organ_scale_share": 1.0, "organ_scale": (0.8, 0.85)})
    assert set(factors) == {"liver", "spleen", "right_kidney", "left_kidney"}
    assert all(0.8 <= f <= 0.85 for f in factors.values()) and len(set(factors.values())) == 4  # each its own
    assert after.metadata["organ_scales"] == factors
    assert after.labels.geometry == before.labels.geometry
    for name in factors:
        ratio = (after.labels.array == BASE.index_of(name)).sum() / (before.labels.array == BASE.index_of(name)).sum()
        assert ratio < 0.8, (name, ratio)
    assert 0.35 < _drawn_share("organ_scales", organ_scale_share=0.5, template_share=0.0) < 0.65
    # for generated subjects only: a template's organs are given
    with_templates = [case_recipe(s, RandomizationRanges(organ_scale_share=1.0, template_share=0.5), templates=1)
                      for s in range(60)]
    assert all(("organ_scales" in r) == (r["template"] is None) for r in with_templates)


def test_scaled_organs_choose_which_organs_take_their_factor_and_keep_the_others_draws():
    everything = RandomizationRanges(organ_scale_share=1.0, template_share=0.0)
    kidneys = RandomizationRanges(organ_scale_share=1.0, template_share=0.0,
                                  scaled_organs=("right_kidney", "left_kidney"))
    for seed in range(5):
        full, only = case_recipe(seed, everything), case_recipe(seed, kidneys)
        assert only["organ_scales"] == {k: full["organ_scales"][k] for k in ("right_kidney", "left_kidney")}
        assert {k: v for k, v in only.items() if k != "organ_scales"} == \
            {k: v for k, v in full.items() if k != "organ_scales"}


def test_arms_draws_give_generated_subjects_arms_and_leave_every_other_draw_and_class():
    before, after, arms = _generated_case_with("arms", "abdomen", {"arms_share": 1.0})
    assert arms is True and after.metadata["arms"] is True
    # the field of view widens to hold the arms; every class voxel is where it was
    assert after.image.array.shape[2] > before.image.array.shape[2]
    assert sorted(np.unique(after.labels.array)) == sorted(np.unique(before.labels.array))
    assert 0.35 < _drawn_share("arms", arms_share=0.5, template_share=0.0) < 0.65
    recipes = [case_recipe(s, RandomizationRanges(arms_share=1.0, template_share=0.5), templates=1) for s in range(40)]
    assert all(("arms" in r) == (r["template"] is None) for r in recipes)  # a template's anatomy is given


def test_table_draws_lay_generated_subjects_on_a_table_and_leave_every_other_draw_and_class():
    before, after, table = _generated_case_with("table", "abdomen", {"table_share": 1.0})
    assert table is True and after.metadata["table"] is True
    assert after.image.array.shape[1] > before.image.array.shape[1]  # deeper, to hold the table
    assert sorted(np.unique(after.labels.array)) == sorted(np.unique(before.labels.array))
    assert 0.35 < _drawn_share("table", table_share=0.5, template_share=0.0) < 0.65


def test_perirenal_room_draws_clear_the_fat_above_the_left_kidney_and_leave_every_other_draw():
    before, after, room = _generated_case_with("perirenal_room", "abdomen",
                                               {"perirenal_room_share": 1.0, "perirenal_room_mm": (40.0, 45.0)})
    assert 40.0 <= room <= 45.0 and after.metadata["perirenal_room_mm"] == room
    lost = _classes_given_to_fat(before, after)
    assert lost <= {"stomach", "pancreas", "colon", "small_bowel", "duodenum", "liver", "gallbladder"}, lost
    assert 0.35 < _drawn_share("perirenal_room", perirenal_room_share=0.5, template_share=0.0) < 0.65
    # for generated subjects only, and a perirenal space then rises at least as far
    both = RandomizationRanges(perirenal_room_share=1.0, perirenal_share=1.0, perirenal_rise_mm=(10.0, 12.0),
                               perirenal_room_mm=(30.0, 31.0), template_share=0.5)
    recipes = [case_recipe(s, both, templates=1) for s in range(40)]
    assert all(("perirenal_room" in r) == (r["template"] is None) for r in recipes)
    assert all(r["perirenal"][1] == (r["perirenal_room"] if r["template"] is None else r["perirenal"][1])
               for r in recipes)
    assert any(r["perirenal"][1] < 12.0 for r in recipes) and any(r["perirenal"][1] >= 30.0 for r in recipes)


def test_ectasia_for_ct_only_keeps_every_mr_recipe_and_draws_each_ct_one_as_with_both():
    both = RandomizationRanges(ct_share=0.5, ectasia_share=0.5)
    ct_only = RandomizationRanges(ct_share=0.5, ectasia_share=0.5, ectasia_modalities=("ct",))
    plain = RandomizationRanges(ct_share=0.5)
    drawn = {"mr": 0, "ct": 0}
    for seed in range(120):
        recipe = case_recipe(seed, ct_only)
        expected = case_recipe(seed, both if recipe["modality"] == "ct" else plain)
        assert recipe == expected, seed
        drawn[recipe["modality"]] += "ectasia" in recipe
    assert drawn["mr"] == 0 and drawn["ct"] > 10


def test_air_margin_draws_widen_a_generated_subjects_field_of_view_into_air_and_leave_every_other_draw():
    before, after, margins = _generated_case_with("air_margin", "abdomen",
                                                  {"air_margin_share": 1.0, "air_margin_mm": (40.0, 120.0)})
    assert len(margins) == 4 and all(40.0 <= m <= 120.0 for m in margins) and len(set(margins)) == 4  # each side
    assert after.metadata["air_margin_mm"] == margins
    # wider and deeper by the drawn margins (z as it was); the same classes, the new voxels background
    spacing_x, spacing_y = after.image.geometry.spacing[:2]
    grown = np.subtract(after.image.array.shape, before.image.array.shape)
    assert grown[0] == 0
    assert abs(grown[2] * spacing_x - (margins[0] + margins[1])) <= 2 * spacing_x
    assert abs(grown[1] * spacing_y - (margins[2] + margins[3])) <= 2 * spacing_y
    assert sorted(np.unique(after.labels.array)) == sorted(np.unique(before.labels.array))
    # the grid moved by a fraction of a voxel: each class of 200 voxels or more keeps its size
    counts = [(np.count_nonzero(before.labels.array == c), np.count_nonzero(after.labels.array == c))
              for c in np.unique(before.labels.array) if c]
    assert all(new == pytest.approx(old, rel=0.05) for old, new in counts if old >= 200)
    assert 0.35 < _drawn_share("air_margin", air_margin_share=0.5, template_share=0.0) < 0.65
    recipes = [case_recipe(s, RandomizationRanges(air_margin_share=1.0, template_share=0.5), templates=1)
               for s in range(40)]
    assert all(("air_margin" in r) == (r["template"] is None) for r in recipes)  # a template's grid is given
