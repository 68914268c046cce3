"""Images synthesised from tissue and label maps: contrasts, physics, acquisition effects."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.errors import InputError
from mrseg.io import Image, resample_labels
from mrseg.io.orientation import direction_from_code
from mrseg.phantom.anatomy import generate_anatomy
from mrseg.phantom.cases import grid_covering
from mrseg.phantom.synthesis import (
    SEQUENCES,
    SynthesisOptions,
    bias_field,
    synthesize,
    tissues_from_labels,
)
from mrseg.phantom.tissues import TISSUE_INDEX, to_classes

QUIET = {"noise": 0.0, "bias_field": 0.0}


@pytest.fixture(scope="module")
def anatomy():
    return generate_anatomy(seed=4, fov="abdomen", spacing=(3.0, 3.0, 3.0))


def mean_of(image: Image, tissues: Image, *names: str) -> float:
    mask = np.isin(tissues.array, [TISSUE_INDEX[n] for n in names])
    return float(image.array[mask].mean())


@pytest.mark.parametrize("modality, sequence", [(m, s) for m, seqs in SEQUENCES.items() for s in seqs])
def test_every_contrast_gives_a_finite_float_image_on_the_same_grid(anatomy, modality, sequence):
    image = synthesize(anatomy.tissues, SynthesisOptions(modality=modality, sequence=sequence), seed=1)
    assert image.geometry == anatomy.tissues.geometry
    assert image.array.dtype == np.float32 and np.isfinite(image.array).all()


def test_opposed_phase_is_darker_at_fat_water_interfaces(anatomy):
    tissues = anatomy.tissues
    fat = np.isin(tissues.array, [TISSUE_INDEX["subcutaneous_fat"], TISSUE_INDEX["visceral_fat"]])
    water = tissues.array == TISSUE_INDEX["liver"]
    from scipy import ndimage

    boundary = water & ndimage.binary_dilation(fat)  # liver voxels touching fat
    deep = water & ~ndimage.binary_dilation(fat, iterations=3)
    in_phase = synthesize(tissues, SynthesisOptions(sequence="t1_in", **QUIET), seed=0).array
    opposed = synthesize(tissues, SynthesisOptions(sequence="t1_opp", **QUIET), seed=0).array
    ratio_boundary = opposed[boundary].mean() / in_phase[boundary].mean()
    ratio_deep = opposed[deep].mean() / in_phase[deep].mean()
    assert boundary.sum() > 50 and deep.sum() > 50
    assert ratio_boundary < 0.85 * ratio_deep  # cancellation where fat and water share voxels
    assert 0.85 < ratio_deep < 1.15


def test_dixon_water_and_fat_add_up_to_in_phase_without_blur(anatomy):
    options = {**QUIET, "resolution": (0.0, 0.0, 0.0)}
    in_phase = synthesize(anatomy.tissues, SynthesisOptions(sequence="t1_in", **options), seed=0).array
    water = synthesize(anatomy.tissues, SynthesisOptions(sequence="dixon_water", **options), seed=0).array
    fat = synthesize(anatomy.tissues, SynthesisOptions(sequence="dixon_fat", **options), seed=0).array
    np.testing.assert_allclose(water + fat, in_phase, rtol=1e-4, atol=1e-3)


def test_ct_hounsfield_units(anatomy):
    tissues = anatomy.tissues
    native = synthesize(tissues, SynthesisOptions(modality="ct", sequence="native", ct_noise_hu=10.0), seed=0)
    contrast = synthesize(tissues, SynthesisOptions(modality="ct", sequence="contrast", ct_noise_hu=10.0), seed=0)
    assert mean_of(native, tissues, "left_lung", "right_lung") < -500
    assert mean_of(native, tissues, "spine_cortex") > 200
    assert mean_of(native, tissues, "subcutaneous_fat") < -50
    assert 40 < mean_of(native, tissues, "liver") < 80 < mean_of(contrast, tissues, "liver")
    assert mean_of(contrast, tissues, "aorta") > mean_of(native, tissues, "aorta") + 100
    from scipy import ndimage

    air = ndimage.binary_erosion(tissues.array == TISSUE_INDEX["air"], iterations=3)  # away from the skin blur
    assert native.array[air].mean() == pytest.approx(-1000, abs=15)
    assert 9 < native.array[air].std() < 11  # the noise setting


def test_mr_contrast_orderings(anatomy):
    tissues = anatomy.tissues
    t1 = synthesize(tissues, SynthesisOptions(sequence="t1_in", **QUIET), seed=0)
    t2 = synthesize(tissues, SynthesisOptions(sequence="t2_haste", **QUIET), seed=0)
    assert mean_of(t1, tissues, "subcutaneous_fat") > mean_of(t1, tissues, "muscle")
    assert mean_of(t1, tissues, "liver") > mean_of(t1, tissues, "spleen")
    assert mean_of(t2, tissues, "spinal_canal") > mean_of(t2, tissues, "liver")
    assert mean_of(t2, tissues, "gallbladder") > mean_of(t2, tissues, "spleen") > mean_of(t2, tissues, "liver")


def test_random_contrast_changes_with_the_seed(anatomy):
    tissues = anatomy.tissues
    options = SynthesisOptions(random_contrast=True, **QUIET)
    a, b = synthesize(tissues, options, seed=1), synthesize(tissues, options, seed=2)
    np.testing.assert_array_equal(a.array, synthesize(tissues, options, seed=1).array)
    names = ["liver", "spleen", "muscle", "subcutaneous_fat", "left_lung", "urinary_bladder"]
    names = [n for n in names if (tissues.array == TISSUE_INDEX[n]).any()]
    order_a = np.argsort([mean_of(a, tissues, n) for n in names])
    order_b = np.argsort([mean_of(b, tissues, n) for n in names])
    assert not np.array_equal(order_a, order_b)


def test_same_seed_same_image_other_seed_other_noise(anatomy):
    options = SynthesisOptions(sequence="t2_tse")
    a = synthesize(anatomy.tissues, options, seed=5).array
    np.testing.assert_array_equal(a, synthesize(anatomy.tissues, options, seed=5).array)
    assert not np.array_equal(a, synthesize(anatomy.tissues, options, seed=6).array)


def test_bias_field_is_smooth_with_mean_near_one(anatomy):
    field = bias_field(anatomy.tissues.geometry, 0.3, np.random.default_rng(0))
    assert field.shape == anatomy.tissues.geometry.shape
    assert 0.8 < field.mean() < 1.25
    assert field.min() >= np.exp(-0.3) - 1e-6 and field.max() <= np.exp(0.3) + 1e-6
    assert max(np.abs(np.diff(field, axis=a)).max() for a in range(3)) < 0.05


def test_slice_thickness_blurs_through_plane_only(anatomy):
    sharp = synthesize(anatomy.tissues, SynthesisOptions(**QUIET), seed=0).array
    thick = synthesize(anatomy.tissues, SynthesisOptions(slice_thickness=12.0, **QUIET), seed=0).array
    through = np.abs(np.diff(thick, axis=0)).mean() / np.abs(np.diff(sharp, axis=0)).mean()
    in_plane = np.abs(np.diff(thick, axis=2)).mean() / np.abs(np.diff(sharp, axis=2)).mean()
    assert through < 0.7 and in_plane > 0.8


def test_bad_options_are_refused(anatomy):
    with pytest.raises(InputError, match="sequence must be one of"):
        SynthesisOptions(modality="ct", sequence="t1_in")
    with pytest.raises(InputError, match="modality must be one of"):
        SynthesisOptions(modality="us")
    with pytest.raises(InputError, match="tissue map holds label"):
        synthesize(anatomy.tissues.with_array(np.full(anatomy.tissues.geometry.shape, 250, np.uint8)),
                   SynthesisOptions(), seed=0)


def test_tissues_from_labels_keeps_every_class(anatomy):
    labels = anatomy.labels
    tissues = tissues_from_labels(labels)
    inside = labels.array > 0
    np.testing.assert_array_equal(to_classes(tissues.array)[inside], labels.array[inside])
    assert (tissues.array == TISSUE_INDEX["right_kidney_medulla"]).any()
    assert (tissues.array == TISSUE_INDEX["subcutaneous_fat"]).any()
    assert to_classes(tissues.array)[~inside].max() == 0


def test_resampled_labels_keep_their_volumes(anatomy):
    labels = anatomy.labels
    grid = grid_covering(labels.geometry, spacing=(2.5, 3.5, 4.0), orientation="oblique",
                         rng=np.random.default_rng(3))
    moved = resample_labels(labels, grid)
    assert moved.geometry == grid
    for label in (1, 5, 6):
        before = (labels.array == label).sum() * np.prod(labels.geometry.spacing)
        after = (moved.array == label).sum() * np.prod(grid.spacing)
        assert after == pytest.approx(before, rel=0.1)


def test_synthesis_works_on_any_orientation():
    grid_lps = generate_anatomy(seed=2, fov="pelvis", spacing=(4.0, 4.0, 4.0)).tissues
    direction = direction_from_code("PIL")
    assert synthesize(grid_lps.with_geometry(direction=direction), SynthesisOptions(), seed=0).array.shape == \
        grid_lps.array.shape
