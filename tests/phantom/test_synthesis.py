"""Image synthesis from tissue maps, tissue maps from 40-class labels, label resampling.

The phantoms here are built by hand (blocks of tissue inside a box of fat, ellipsoids of
classes) on anisotropic, rotated or permuted grids, so these tests do not depend on the
anatomy generator. The last tests compare with the real sample scan when ../shared/data exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io.files import read_image
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import direction_from_code, reorient, rotation_matrix
from mrseg.io.resample import resample_labels
from mrseg.phantom.synthesis import (
    FAT_SUPPRESSIBLE,
    FLUID_CONCENTRATIONS,
    MR_SCALE,
    SEQUENCES,
    SynthesisOptions,
    bias_field,
    synthesize,
    tissue_signals,
    tissues_from_labels,
)
from mrseg.phantom.tissues import TISSUE_INDEX, TISSUES, to_classes

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
QUIET = {"noise": 0.0, "bias_field": 0.0}
ALL_CONTRASTS = [(m, s) for m, seqs in SEQUENCES.items() for s in seqs]


def oblique_direction(code: str = "RAS", angles: tuple[float, float, float] = (8.0, -12.0, 20.0)) -> tuple:
    matrix = rotation_matrix(angles) @ np.asarray(direction_from_code(code)).reshape(3, 3)
    return tuple(float(v) for v in matrix.ravel())


# --- a hand-made tissue phantom ----------------------------------------------------------------

BLOCKS: dict[str, tuple[slice, slice]] = {  # (y, x) extents inside z 5..19
    "liver": (slice(10, 32), slice(10, 32)),
    "muscle": (slice(10, 32), slice(36, 52)),
    "spleen": (slice(10, 32), slice(56, 74)),
    "right_kidney_cortex": (slice(36, 58), slice(10, 28)),
    "left_lung": (slice(36, 58), slice(32, 44)),
    "spine_cortex": (slice(36, 58), slice(48, 60)),
    "urinary_bladder": (slice(36, 46), slice(64, 74)),
    "gallbladder": (slice(48, 58), slice(64, 74)),
    "spinal_canal": (slice(62, 70), slice(20, 32)),
    "aorta": (slice(62, 70), slice(40, 50)),
}
CORES: dict[str, tuple[str, tuple[slice, slice]]] = {
    "right_kidney_medulla": ("right_kidney_cortex", (slice(41, 53), slice(15, 23))),
    "spine_marrow": ("spine_cortex", (slice(38, 56), slice(50, 58))),
}
Z = slice(5, 20)


@pytest.fixture(scope="module")
def phantom() -> Image:
    """Blocks of tissue in a box of subcutaneous fat, air outside; anisotropic, oblique grid."""
    array = np.zeros((25, 84, 90), dtype=np.uint8)
    array[2:23, 6:76, 6:82] = TISSUE_INDEX["subcutaneous_fat"]
    for name, (y, x) in BLOCKS.items():
        array[Z, y, x] = TISSUE_INDEX[name]
    for name, (_, (y, x)) in CORES.items():
        array[Z, y, x] = TISSUE_INDEX[name]
    return Image.from_array(array, spacing=(1.6, 1.2, 3.0), origin=(-40.0, 20.0, 100.0),
                            direction=oblique_direction())


def deep(phantom: Image, name: str, margin: int = 2) -> np.ndarray:
    """Voxels of a tissue at least ``margin`` voxels from any other tissue."""
    return ndimage.binary_erosion(phantom.array == TISSUE_INDEX[name], iterations=margin)


def mean_deep(image: Image | np.ndarray, phantom: Image, name: str, margin: int = 2) -> float:
    values = image.array if isinstance(image, Image) else image
    return float(values[deep(phantom, name, margin)].mean())


# --- every contrast -----------------------------------------------------------------------------

@pytest.mark.parametrize("modality, sequence", ALL_CONTRASTS)
def test_every_contrast_is_float32_on_the_input_grid(phantom, modality, sequence):
    image = synthesize(phantom, SynthesisOptions(modality=modality, sequence=sequence), seed=3, oversample=2)
    assert image.geometry == phantom.geometry
    assert image.array.dtype == np.float32 and np.isfinite(image.array).all()
    assert image.array.std() > 1.0  # not blank


def test_random_contrast_is_float32_on_the_input_grid(phantom):
    image = synthesize(phantom, SynthesisOptions(random_contrast=True), seed=3)
    assert image.geometry == phantom.geometry and image.array.dtype == np.float32
    assert np.isfinite(image.array).all()


def test_sequence_defaults_to_the_modalitys_first():
    assert SynthesisOptions(modality="ct").sequence == "native"
    assert SynthesisOptions().sequence == "t1_in"


# --- MR gradient echo ---------------------------------------------------------------------------

def test_opposed_phase_cancels_at_fat_water_interfaces_only(phantom):
    fat = phantom.array == TISSUE_INDEX["subcutaneous_fat"]
    water = np.isin(phantom.array, [TISSUE_INDEX["liver"], TISSUE_INDEX["muscle"]])
    band = (water & ndimage.binary_dilation(fat)) | (fat & ndimage.binary_dilation(water))  # 2 voxels wide
    inside = water & ~ndimage.binary_dilation(fat, iterations=3)
    options = {**QUIET, "resolution": (2.0, 2.0, 4.0)}
    in_phase = synthesize(phantom, SynthesisOptions(sequence="t1_in", **options), seed=0, oversample=2).array
    opposed = synthesize(phantom, SynthesisOptions(sequence="t1_opp", **options), seed=0, oversample=2).array
    ratio_band = opposed[band].mean() / in_phase[band].mean()
    ratio_inside = opposed[inside].mean() / in_phase[inside].mean()
    assert band.sum() > 500 and inside.sum() > 500
    assert 0.8 < ratio_inside < 1.2  # pure water tissue: similar in both
    assert ratio_band < 0.75 * ratio_inside  # India ink: fat and water cancel where they share voxels


def test_oversampling_alone_darkens_opposed_phase_boundaries(phantom):
    options = {**QUIET, "resolution": (0.0, 0.0, 0.0)}
    fat = phantom.array == TISSUE_INDEX["subcutaneous_fat"]
    edge = (phantom.array == TISSUE_INDEX["liver"]) & ndimage.binary_dilation(fat)
    sharp = synthesize(phantom, SynthesisOptions(sequence="t1_opp", **options), seed=0).array
    mixed = synthesize(phantom, SynthesisOptions(sequence="t1_opp", **options), seed=0, oversample=2).array
    np.testing.assert_array_equal(sharp, np.abs(tissue_signals(SynthesisOptions(sequence="t1_opp"))[phantom.array]))
    assert mixed[edge].mean() < 0.8 * sharp[edge].mean()


def test_dixon_water_plus_fat_is_the_in_phase_magnitude(phantom):
    options = SynthesisOptions(sequence="t1_in", **QUIET, resolution=(2.5, 2.5, 5.0))
    in_phase = synthesize(phantom, options, seed=0, oversample=2).array
    water = synthesize(phantom, SynthesisOptions(sequence="dixon_water", **QUIET, resolution=(2.5, 2.5, 5.0)),
                       seed=0, oversample=2).array
    fat = synthesize(phantom, SynthesisOptions(sequence="dixon_fat", **QUIET, resolution=(2.5, 2.5, 5.0)),
                     seed=0, oversample=2).array
    np.testing.assert_allclose(water + fat, in_phase, rtol=1e-4, atol=1e-2)
    assert mean_deep(fat, phantom, "subcutaneous_fat") > 5 * mean_deep(water, phantom, "subcutaneous_fat")
    assert mean_deep(water, phantom, "liver") > 5 * mean_deep(fat, phantom, "liver")


def test_t1_in_phase_orders_fat_liver_spleen_kidney_muscle(phantom):
    image = synthesize(phantom, SynthesisOptions(sequence="t1_in", **QUIET), seed=0)
    fat, liver, spleen, kidney, muscle = (
        mean_deep(image, phantom, n)
        for n in ("subcutaneous_fat", "liver", "spleen", "right_kidney_cortex", "muscle")
    )
    assert fat > liver > max(spleen, kidney) and min(spleen, kidney) > muscle
    assert fat == pytest.approx(MR_SCALE, rel=0.05)  # fat is the brightest catalogue tissue


def test_higher_field_keeps_fat_and_water_in_phase(phantom):
    at_3t = synthesize(phantom, SynthesisOptions(sequence="t1_in", field_strength=3.0, **QUIET), seed=0)
    at_15 = synthesize(phantom, SynthesisOptions(sequence="t1_in", **QUIET), seed=0)
    # echo times halve with the field: the in-phase image stays an in-phase image
    assert mean_deep(at_3t, phantom, "liver") == pytest.approx(mean_deep(at_15, phantom, "liver"), rel=0.1)


# --- MR spin echo -------------------------------------------------------------------------------

@pytest.mark.parametrize("sequence", ["t2_haste", "t2_tse"])
def test_t2_fluids_are_brightest(phantom, sequence):
    image = synthesize(phantom, SynthesisOptions(sequence=sequence, **QUIET), seed=0)
    fluids = ("urinary_bladder", "gallbladder", "spinal_canal")
    others = ("subcutaneous_fat", "liver", "muscle", "spleen", "right_kidney_cortex", "right_kidney_medulla",
              "spine_marrow", "aorta", "left_lung")
    darkest_fluid = min(mean_deep(image, phantom, n, margin=1) for n in fluids)
    brightest_other = max(mean_deep(image, phantom, n, margin=1) for n in others)
    assert darkest_fluid > brightest_other
    assert mean_deep(image, phantom, "subcutaneous_fat") > mean_deep(image, phantom, "muscle")  # fat bright
    assert mean_deep(image, phantom, "spleen") > mean_deep(image, phantom, "liver")


# --- fluids whose make-up varies -----------------------------------------------------------------

@pytest.mark.parametrize(("modality", "sequence"), [(m, q) for m, seqs in SEQUENCES.items() for q in seqs])
def test_a_fluids_make_up_changes_that_fluid_alone(modality, sequence):
    catalogue = tissue_signals(SynthesisOptions(modality=modality, sequence=sequence))
    fluids = [TISSUE_INDEX[name] for name in FLUID_CONCENTRATIONS]
    others = np.setdiff1d(np.arange(len(TISSUES)), fluids)
    for bile, content in ((0.0, 1.0), (1.0, 0.0), (0.4, 0.7)):
        signals = tissue_signals(SynthesisOptions(modality=modality, sequence=sequence, bile=bile,
                                                  gastric_content=content))
        np.testing.assert_array_equal(signals[others], catalogue[others])
        if sequence != "dixon_fat":  # the fluids hold no fat
            assert signals[TISSUE_INDEX["gallbladder"]] != signals[TISSUE_INDEX["stomach_content"]]


def test_concentrated_bile_is_bright_on_t1_and_dense_on_ct_dilute_bile_is_dark_on_t1():
    def signal(sequence: str, tissue: str, modality: str = "mr", **fluids: float) -> float:
        options = SynthesisOptions(modality=modality, sequence=sequence, **fluids)
        return float(tissue_signals(options)[TISSUE_INDEX[tissue]])

    # T1 gradient echo: concentrated bile (short T1) brighter than the liver, dilute bile below the spleen
    assert signal("t1_in", "gallbladder", bile=1.0) > signal("t1_in", "liver")
    assert signal("t1_in", "gallbladder", bile=0.0) < signal("t1_in", "spleen")
    # a meal shortens T1 and T2: brighter on T1, darker on T2, than water
    assert signal("t1_in", "stomach_content", gastric_content=1.0) > 2 * signal("t1_in", "stomach_content")
    assert signal("t2_haste", "stomach_content", gastric_content=1.0) < 0.6 * signal("t2_haste", "stomach_content")
    # the catalogue's water is concentration 0
    assert signal("t2_haste", "stomach_content", gastric_content=0.0) == pytest.approx(
        signal("t2_haste", "stomach_content"))
    for phase in SEQUENCES["ct"]:  # no fluid enhances
        assert signal(phase, "gallbladder", "ct", bile=1.0) == pytest.approx(30.0)
        assert signal(phase, "stomach_content", "ct", gastric_content=0.5) == pytest.approx(27.5)


# --- fatty liver and pancreas -------------------------------------------------------------------

def test_a_fatty_liver_shows_on_the_fat_image_darkens_on_opposed_phase_and_loses_hu():
    def signal(sequence: str, tissue: str = "liver", modality: str = "mr", **fat: float) -> float:
        options = SynthesisOptions(modality=modality, sequence=sequence, **fat)
        return float(tissue_signals(options)[TISSUE_INDEX[tissue]])

    assert signal("dixon_fat", liver_fat_fraction=0.2) > 4 * signal("dixon_fat")
    assert abs(signal("t1_opp", liver_fat_fraction=0.2)) < 0.5 * abs(signal("t1_opp"))
    assert signal("native", modality="ct", liver_fat_fraction=0.3) == pytest.approx(60.0 - 165.0 * 0.26)
    assert signal("contrast", modality="ct", liver_fat_fraction=0.3) == pytest.approx(110.0 - 165.0 * 0.26)
    assert signal("dixon_fat", "pancreas", pancreas_fat_fraction=0.25) > 3 * signal("dixon_fat", "pancreas")
    # the catalogue's own fraction changes nothing, and no other tissue moves
    np.testing.assert_allclose(tissue_signals(SynthesisOptions(sequence="t1_opp", liver_fat_fraction=0.04)),
                               tissue_signals(SynthesisOptions(sequence="t1_opp")), rtol=1e-6)
    fatty = tissue_signals(SynthesisOptions(sequence="t1_in", liver_fat_fraction=0.3, pancreas_fat_fraction=0.3))
    plain = tissue_signals(SynthesisOptions(sequence="t1_in"))
    changed = np.flatnonzero(fatty != plain)
    assert set(changed) == {TISSUE_INDEX["liver"], TISSUE_INDEX["pancreas"]}


@pytest.mark.parametrize("fat", [{"liver_fat_fraction": 1.5}, {"pancreas_fat_fraction": -0.2}])
def test_organ_fat_fractions_outside_zero_to_one_are_refused(fat):
    with pytest.raises(InputError, match="is a fraction in"):
        SynthesisOptions(**fat)


# --- spectral fat suppression -------------------------------------------------------------------

@pytest.mark.parametrize("sequence", FAT_SUPPRESSIBLE)
def test_fat_suppression_darkens_fat_and_keeps_pure_water_tissues(sequence):
    plain = tissue_signals(SynthesisOptions(sequence=sequence))
    np.testing.assert_array_equal(tissue_signals(SynthesisOptions(sequence=sequence, fat_suppression=0.0)), plain)
    suppressed = tissue_signals(SynthesisOptions(sequence=sequence, fat_suppression=0.95))
    for name in ("subcutaneous_fat", "visceral_fat"):
        assert suppressed[TISSUE_INDEX[name]] < 0.2 * plain[TISSUE_INDEX[name]]
    for name in ("spleen", "gallbladder", "right_kidney_cortex", "urinary_bladder"):  # no fat in them
        assert suppressed[TISSUE_INDEX[name]] == pytest.approx(plain[TISSUE_INDEX[name]])
    assert suppressed[TISSUE_INDEX["liver"]] < plain[TISSUE_INDEX["liver"]]  # its 4 % fat goes


def test_a_t2_spir_look_has_fat_darker_than_liver_and_liver_darker_than_spleen_and_kidney():
    signal = tissue_signals(SynthesisOptions(sequence="t2_tse", fat_suppression=0.95))
    order = ["subcutaneous_fat", "liver", "spleen", "right_kidney_cortex", "gallbladder"]
    assert [signal[TISSUE_INDEX[n]] for n in order] == sorted(signal[TISSUE_INDEX[n]] for n in order)


@pytest.mark.parametrize(("options", "message"), [
    ({"sequence": "t2_tse", "fat_suppression": 1.2}, "fat_suppression is the share"),
    ({"sequence": "dixon_water", "fat_suppression": 0.9}, "applies to the MR physics sequences t1_in"),
    ({"modality": "ct", "sequence": "native", "fat_suppression": 0.9}, "not to ct native"),
    ({"sequence": "t2_tse", "random_contrast": True, "fat_suppression": 0.9}, "not to random contrast"),
])
def test_fat_suppression_is_refused_out_of_range_or_where_it_means_nothing(options, message):
    with pytest.raises(InputError, match=message):
        SynthesisOptions(**options)


# --- CT -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("phase", ["native", "contrast", "arterial"])
def test_the_thrombus_takes_the_ct_number_it_is_given_in_every_phase(phase):
    given = tissue_signals(SynthesisOptions(modality="ct", sequence=phase, thrombus_hu=110.0))
    catalogue = tissue_signals(SynthesisOptions(modality="ct", sequence=phase))
    thrombus = TISSUE_INDEX["aortic_thrombus"]
    assert given[thrombus] == pytest.approx(110.0)
    assert catalogue[thrombus] in (pytest.approx(50.0), pytest.approx(55.0))
    others = np.arange(len(given)) != thrombus
    assert np.array_equal(given[others], catalogue[others])


@pytest.mark.parametrize("value", [float("nan"), 400.0, -150.0])
def test_a_thrombus_ct_number_out_of_range_is_refused(value):
    with pytest.raises(InputError, match="thrombus_hu is a thrombus's CT number"):
        SynthesisOptions(modality="ct", thrombus_hu=value)


def test_ct_hounsfield_units_and_noise(phantom):
    native = synthesize(phantom, SynthesisOptions(modality="ct", sequence="native", ct_noise_hu=15.0), seed=1)
    contrast = synthesize(phantom, SynthesisOptions(modality="ct", sequence="contrast", ct_noise_hu=15.0), seed=1)
    assert mean_deep(native, phantom, "left_lung") < -500
    assert native.array[phantom.array == TISSUE_INDEX["spine_cortex"]].mean() > 200
    assert mean_deep(native, phantom, "subcutaneous_fat") < -50
    assert 40 < mean_deep(native, phantom, "liver") < 80
    assert mean_deep(contrast, phantom, "liver") > mean_deep(native, phantom, "liver") + 20
    assert mean_deep(contrast, phantom, "aorta") > mean_deep(native, phantom, "aorta") + 100
    air = deep(phantom, "air")
    assert native.array[air].mean() == pytest.approx(-1000, abs=2)
    assert native.array[air].std() == pytest.approx(15.0, rel=0.05)
    assert native.array[deep(phantom, "liver")].std() == pytest.approx(15.0, rel=0.1)


def test_arterial_phase_brightens_arteries_and_heart_not_veins(phantom):
    def phase(sequence: str, enhancement: float = 1.0) -> Image:
        return synthesize(phantom, SynthesisOptions(modality="ct", sequence=sequence, ct_noise_hu=0.0,
                                                    enhancement=enhancement), seed=1)

    native, venous, arterial = phase("native"), phase("contrast"), phase("arterial")
    assert mean_deep(arterial, phantom, "aorta") > mean_deep(venous, phantom, "aorta") + 100
    assert mean_deep(arterial, phantom, "aorta") > 300
    catalogue = tissue_signals(SynthesisOptions(modality="ct", sequence="arterial"))
    unenhanced = tissue_signals(SynthesisOptions(modality="ct", sequence="native"))
    assert catalogue[TISSUE_INDEX["heart"]] == catalogue[TISSUE_INDEX["aorta"]]  # the blood pool is the aorta's blood
    assert catalogue[TISSUE_INDEX["heart_myocardium"]] < catalogue[TISSUE_INDEX["heart"]] - 200  # the wall: less
    # thrombus in a diseased aorta does not enhance: a grey crescent round the bright lumen
    assert catalogue[TISSUE_INDEX["aortic_thrombus"]] == unenhanced[TISSUE_INDEX["aortic_thrombus"]]
    assert catalogue[TISSUE_INDEX["aortic_thrombus"]] < catalogue[TISSUE_INDEX["aorta"]] - 250
    assert catalogue[TISSUE_INDEX["inferior_vena_cava"]] == unenhanced[TISSUE_INDEX["inferior_vena_cava"]]
    for vessel in ("pulmonary_artery", "superior_vena_cava", "supra_aortic_artery", "left_lung_vessels"):
        assert catalogue[TISSUE_INDEX[vessel]] > 250, vessel  # the mediastinum is as bright as the aorta
    assert catalogue[TISSUE_INDEX["airway"]] < -900
    cortex = mean_deep(arterial, phantom, "right_kidney_cortex", margin=1)  # a thin shell
    medulla = mean_deep(arterial, phantom, "right_kidney_medulla", margin=1)
    assert cortex > medulla + 60  # the corticomedullary phase
    # the enhancement multiplies what the contrast agent adds; native CT has none to scale
    stronger = phase("arterial", 1.5)
    added = mean_deep(arterial, phantom, "aorta") - mean_deep(native, phantom, "aorta")
    assert mean_deep(stronger, phantom, "aorta") - mean_deep(native, phantom, "aorta") == pytest.approx(1.5 * added,
                                                                                                        rel=0.02)
    np.testing.assert_array_equal(phase("native", 1.5).array, native.array)
    no_agent = phase("contrast", 0.0)
    np.testing.assert_allclose(no_agent.array, native.array, atol=1e-3)


def test_mr_noise_is_rician_with_the_set_sigma(phantom):
    image = synthesize(phantom, SynthesisOptions(noise=0.03, bias_field=0.0), seed=2)
    air = image.array[deep(phantom, "air")]
    sigma = 0.03 * MR_SCALE
    assert air.min() >= 0
    assert air.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh in air
    liver = image.array[deep(phantom, "liver")]
    assert liver.std() == pytest.approx(sigma, rel=0.1)  # high SNR: Gaussian


# --- randomness ---------------------------------------------------------------------------------

def test_same_seed_same_image_other_seed_other_noise(phantom):
    options = SynthesisOptions(sequence="t2_tse")
    a = synthesize(phantom, options, seed=5).array
    np.testing.assert_array_equal(a, synthesize(phantom, options, seed=5).array)
    assert not np.array_equal(a, synthesize(phantom, options, seed=6).array)
    ct = SynthesisOptions(modality="ct")
    np.testing.assert_array_equal(synthesize(phantom, ct, seed=5).array, synthesize(phantom, ct, seed=5).array)
    assert not np.array_equal(synthesize(phantom, ct, seed=5).array, synthesize(phantom, ct, seed=6).array)


def test_random_contrast_orders_tissues_by_seed(phantom):
    options = SynthesisOptions(random_contrast=True, **QUIET)
    names = ["liver", "spleen", "muscle", "subcutaneous_fat", "left_lung", "urinary_bladder", "aorta"]

    def order(seed: int) -> tuple[int, ...]:
        image = synthesize(phantom, options, seed=seed)
        return tuple(np.argsort([mean_deep(image, phantom, n) for n in names]))

    np.testing.assert_array_equal(synthesize(phantom, options, seed=1).array,
                                  synthesize(phantom, options, seed=1).array)
    assert len({order(seed) for seed in range(4)}) >= 3
    image = synthesize(phantom, options, seed=1)
    assert 0 < image.array[deep(phantom, "liver")].std() < 0.1 * MR_SCALE  # small texture within a tissue
    assert image.array[deep(phantom, "air")].max() < 1e-3  # outside the body stays dark


# --- bias field ---------------------------------------------------------------------------------

def test_bias_field_is_smooth_bounded_and_near_one(phantom):
    geometry = phantom.geometry
    field = bias_field(geometry, 0.3, np.random.default_rng(0))
    assert field.shape == geometry.shape and field.dtype == np.float32
    assert field.min() >= np.exp(-0.3) - 1e-5 and field.max() <= np.exp(0.3) + 1e-5
    assert max(field.max(), 1 / field.min()) == pytest.approx(np.exp(0.3), rel=1e-4)  # the peak amplitude
    assert 0.95 < field.mean() < 1.05 and field.std() > 0.02
    for axis in range(3):  # smooth: a few percent per voxel at most, and no kinks
        assert np.abs(np.diff(field, axis=axis)).max() < 0.04
        assert np.abs(np.diff(field, n=2, axis=axis)).max() < 0.005
    np.testing.assert_array_equal(bias_field(geometry, 0.0, np.random.default_rng(0)), 1.0)


def test_bias_field_lives_in_world_coordinates(phantom):
    """The same seed gives the same field at the same world points, whatever the axis order."""
    field = Image(bias_field(phantom.geometry, 0.4, np.random.default_rng(7)), phantom.geometry)
    permuted, step = reorient(field, "PIL")
    again = bias_field(permuted.geometry, 0.4, np.random.default_rng(7))
    np.testing.assert_allclose(step.undo(again), field.array, rtol=1e-4)


def test_bias_field_multiplies_mr_images(phantom):
    flat = synthesize(phantom, SynthesisOptions(**QUIET), seed=4).array
    biased = synthesize(phantom, SynthesisOptions(noise=0.0, bias_field=0.3), seed=4).array
    ratio = biased[flat > 100] / flat[flat > 100]
    assert ratio.min() >= np.exp(-0.3) - 1e-4 and ratio.max() <= np.exp(0.3) + 1e-4 and ratio.std() > 0.02


# --- partial volume -------------------------------------------------------------------------------

def test_resolution_and_slice_thickness_blur_along_their_axes(phantom):
    def edges(options: SynthesisOptions, axis: int) -> float:  # gradient energy: blur lowers it
        return float((np.diff(synthesize(phantom, options, seed=0).array, axis=axis) ** 2).mean())

    sharp = SynthesisOptions(**QUIET, resolution=(0.0, 0.0, 0.0))
    thick = SynthesisOptions(**QUIET, resolution=(0.0, 0.0, 0.0), slice_thickness=9.0)
    coarse_x = SynthesisOptions(**QUIET, resolution=(6.0, 0.0, 0.0))
    # in-plane edges change a little only where blocks end through plane
    assert edges(thick, 0) < 0.5 * edges(sharp, 0) and edges(thick, 2) > 0.85 * edges(sharp, 2)
    assert edges(coarse_x, 2) < 0.5 * edges(sharp, 2) and edges(coarse_x, 0) > 0.85 * edges(sharp, 0)


def test_without_blur_or_noise_each_voxel_is_its_tissues_signal(phantom):
    options = SynthesisOptions(modality="ct", sequence="contrast", ct_noise_hu=0.0, resolution=(0.0, 0.0, 0.0))
    image = synthesize(phantom, options, seed=0)
    expected = np.array([t.hu_contrast for t in TISSUES], dtype=np.float32)[phantom.array]
    np.testing.assert_array_equal(image.array, expected)


# --- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fluids", [{"bile": 1.2}, {"gastric_content": -0.1}, {"bile": float("nan")}])
def test_fluid_concentrations_outside_zero_to_one_are_refused(fluids):
    with pytest.raises(InputError, match="is a concentration in"):
        SynthesisOptions(**fluids)


def test_bad_options_are_refused(phantom):
    with pytest.raises(InputError, match="modality must be one of ct, mr"):
        SynthesisOptions(modality="us")
    with pytest.raises(InputError, match="ct sequence must be one of native, contrast, arterial, got 't1_in'"):
        SynthesisOptions(modality="ct", sequence="t1_in")
    with pytest.raises(InputError, match="random_contrast is an MR option"):
        SynthesisOptions(modality="ct", random_contrast=True)
    with pytest.raises(InputError, match="noise must be a finite number >= 0"):
        SynthesisOptions(noise=-0.1)
    with pytest.raises(InputError, match="field_strength must be a positive"):
        SynthesisOptions(field_strength=0.0)
    with pytest.raises(InputError, match="enhancement must be a finite number >= 0"):
        SynthesisOptions(modality="ct", sequence="arterial", enhancement=-1.0)
    with pytest.raises(InputError, match="resolution must be three FWHM values"):
        SynthesisOptions(resolution=(1.0, -1.0, 2.0))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="slice_thickness must be a FWHM"):
        SynthesisOptions(slice_thickness=float("nan"))
    with pytest.raises(InputError, match="oversample must be an integer >= 1"):
        synthesize(phantom, SynthesisOptions(), seed=0, oversample=0)


def test_bad_maps_are_refused(phantom):
    with pytest.raises(InputError, match="tissue map holds label 250"):
        synthesize(phantom.with_array(np.full(phantom.geometry.shape, 250, np.uint8)), SynthesisOptions(), seed=0)
    with pytest.raises(InputError, match="tissue map must hold integer tissue labels, got dtype float32"):
        synthesize(phantom.with_array(phantom.array.astype(np.float32)), SynthesisOptions(), seed=0)
    with pytest.raises(InputError, match=r"a 40-class map \(0..40\) is expected"):
        tissues_from_labels(phantom.with_array(np.full(phantom.geometry.shape, 41, np.uint8)))
    with pytest.raises(InputError, match="label map must hold integer 40-class labels"):
        tissues_from_labels(phantom.with_array(phantom.array.astype(float)))
    with pytest.raises(InputError, match="resample_labels needs an integer label map"):
        resample_labels(phantom.with_array(phantom.array.astype(np.float32)), phantom.geometry)


# --- tissue maps from 40-class labels -------------------------------------------------------------

def ellipsoid_labels(direction: tuple = oblique_direction("LPS", (5.0, 10.0, -8.0))) -> Image:
    """A 40-class map of ellipsoids (mm, in the voxel frame) on an anisotropic grid."""
    spacing = (1.5, 1.8, 4.0)
    shape = (30, 100, 130)
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing[::-1])), indexing="ij")
    labels = np.zeros(shape, dtype=np.uint8)

    def put(name: str, centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
        inside = sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii)) <= 1
        labels[inside] = BASE.index_of(name)
        return inside

    put("liver", (60, 70, 60), (40, 45, 45))
    put("spleen", (150, 95, 60), (20, 30, 35))
    put("stomach", (135, 50, 70), (25, 18, 25))
    put("right_kidney", (65, 130, 50), (18, 22, 40))
    put("left_kidney", (135, 130, 50), (18, 22, 40))
    put("aorta", (100, 105, 60), (8, 8, 80))
    spine = put("spine", (100, 140, 60), (18, 18, 80))
    canal = sum(((c - m) / r) ** 2 for c, m, r in zip((x, y), (100, 140), (7, 7))) <= 1
    labels[spine & canal] = 0  # the spinal canal: enclosed by bone in every slice
    put("right_autochthonous_muscle", (80, 160, 60), (14, 9, 80))
    put("left_autochthonous_muscle", (120, 160, 60), (14, 9, 80))
    return Image.from_array(labels, spacing=spacing, origin=(-90.0, -120.0, 40.0), direction=direction)


def check_tissue_map(labels: Image, tissues: Image, *, fat_mm: float) -> None:
    assert tissues.geometry == labels.geometry and tissues.array.dtype == np.uint8
    inside = labels.array > 0
    classes = to_classes(tissues.array)
    np.testing.assert_array_equal(classes[inside], labels.array[inside])  # every class kept
    assert classes[~inside].max() == 0  # nothing else becomes a class
    body = tissues.array != TISSUE_INDEX["air"]
    # the body's surface (voxels with an air neighbour in their plane) is fat (or skin)
    axial = 2 - int(np.argmax(np.abs(labels.geometry.direction_matrix[2, :])))
    in_plane = ndimage.generate_binary_structure(3, 1)
    in_plane[tuple(slice(None, None, 2) if a == axial else slice(1, 2) for a in range(3))] = False
    surface = body & ~ndimage.binary_erosion(body, in_plane, border_value=1)
    fatty = np.isin(tissues.array, [TISSUE_INDEX["subcutaneous_fat"], TISSUE_INDEX["skin"]])
    assert surface.sum() > 100 and fatty[surface].mean() > 0.99
    # and every organ lies deeper than the fat
    sampling = tuple(1e6 if a == axial else s for a, s in enumerate(labels.geometry.spacing_zyx))
    depth = ndimage.distance_transform_edt(body, sampling=sampling)
    assert depth[inside].min() >= fat_mm


def test_tissues_from_ellipsoid_labels():
    labels = ellipsoid_labels()
    tissues = tissues_from_labels(labels, seed=1, fat_mm=12.0, wall_mm=6.0)
    check_tissue_map(labels, tissues, fat_mm=12.0)
    present = set(np.unique(tissues.array).tolist())
    for name in ("right_kidney_cortex", "right_kidney_medulla", "spine_cortex", "spine_marrow", "stomach_wall",
                 "stomach_content", "spinal_canal", "visceral_fat", "muscle", "subcutaneous_fat", "air"):
        assert TISSUE_INDEX[name] in present, name
    # the kidney cortex is a shell of about 6 mm around the medulla
    kidney = labels.array == BASE.index_of("right_kidney")
    medulla = tissues.array == TISSUE_INDEX["right_kidney_medulla"]
    depth = ndimage.distance_transform_edt(kidney, sampling=labels.geometry.spacing_zyx)
    assert depth[medulla].min() > 6.0 and 0.2 < medulla.sum() / kidney.sum() < 0.8


def test_tissues_from_labels_follow_the_anatomy_not_the_axis_order():
    """A permuted, flipped copy of the labels gives the permuted tissue map (fat/muscle mix aside)."""
    labels = ellipsoid_labels(direction=direction_from_code("LPS"))
    moved, step = reorient(labels, "ASL")  # k points left now: the axial planes are another axis
    group = np.arange(len(TISSUES))
    group[TISSUE_INDEX["visceral_fat"]] = TISSUE_INDEX["muscle"]  # the random mix is drawn per array
    a = group[tissues_from_labels(labels, fat_mm=10.0, wall_mm=8.0).array]
    b = group[step.undo(tissues_from_labels(moved, fat_mm=10.0, wall_mm=8.0).array)]
    assert (a == b).mean() > 0.999


def test_tissues_from_labels_draws_the_habitus_from_the_seed():
    labels = ellipsoid_labels()
    a, b = (tissues_from_labels(labels, seed=s).array for s in (0, 1))
    np.testing.assert_array_equal(a, tissues_from_labels(labels, seed=0).array)
    assert not np.array_equal(a, b)


def test_empty_label_map_gives_air():
    labels = Image.from_array(np.zeros((4, 5, 6), dtype=np.uint8))
    assert tissues_from_labels(labels).array.max() == 0


# --- resampling labels ----------------------------------------------------------------------------

def test_resampled_labels_keep_volumes_on_an_oblique_anisotropic_grid():
    labels = ellipsoid_labels(direction=direction_from_code("LPS"))
    g = labels.geometry
    direction = np.asarray(oblique_direction("RAS", (12.0, -9.0, 25.0))).reshape(3, 3)
    spacing = np.array([1.3, 2.2, 3.3])
    centre = g.affine_lps @ np.append((np.array(g.shape[::-1]) - 1) / 2, 1.0)
    size = np.ceil(np.array(g.shape[::-1]) * np.array(g.spacing) * 1.4 / spacing).astype(int)
    origin = centre[:3] - direction @ ((size - 1) / 2 * spacing)
    grid = Geometry(shape=tuple(int(s) for s in size[::-1]), spacing=tuple(spacing.tolist()),
                    origin=tuple(origin.tolist()), direction=tuple(direction.ravel().tolist()))
    moved = resample_labels(labels, grid)
    assert moved.geometry == grid and moved.array.dtype == labels.array.dtype
    for name in ("liver", "spleen", "right_kidney", "stomach", "spine"):
        label = BASE.index_of(name)
        before = (labels.array == label).sum() * np.prod(g.spacing)
        after = (moved.array == label).sum() * np.prod(grid.spacing)
        assert after == pytest.approx(before, rel=0.1), name
    back = resample_labels(moved, g)  # and back: the same organs in the same places
    liver = BASE.index_of("liver")
    a, b = labels.array == liver, back.array == liver
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.9


# --- the real sample scan -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_mr() -> tuple[Image, Image]:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return (read_image(SHARED_DATA / "mr" / "example_mr_sm.nii.gz"),
            read_image(SHARED_DATA / "labels" / "example_mr_sm__ref40.nii.gz"))


def test_tissues_from_real_labels(real_mr):
    _, labels = real_mr
    tissues = tissues_from_labels(labels, seed=0, fat_mm=10.0)
    check_tissue_map(labels, tissues, fat_mm=10.0)


def organ_medians(image: np.ndarray, labels: np.ndarray, fat: np.ndarray) -> dict[str, float]:
    """Median intensity of each structure, one voxel in from its edge (label edges are uncertain)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    regions = {
        "fat": fat,
        "liver": labels == BASE.index_of("liver"),
        "spleen": labels == BASE.index_of("spleen"),
        "kidneys": np.isin(labels, [BASE.index_of("right_kidney"), BASE.index_of("left_kidney")]),
        "muscle": np.isin(labels, [BASE.index_of("left_autochthonous_muscle"),
                                   BASE.index_of("right_autochthonous_muscle")]),
    }
    return {k: float(np.median(image[ndimage.binary_erosion(m, in_plane)])) for k, m in regions.items()}


def real_fat_band(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The outer 12 mm of the real body outline (3 mm voxels), away from labelled organs."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    body = np.stack([ndimage.binary_fill_holes(p) for p in image > 0.1 * np.percentile(image, 99)])
    body = ndimage.binary_opening(body, in_plane, iterations=2)
    parts, n = ndimage.label(body)
    body = parts == 1 + np.argmax(ndimage.sum(body, parts, range(1, n + 1)))
    band = body & ~ndimage.binary_erosion(body, in_plane, iterations=4)
    return band & ~ndimage.binary_dilation(labels > 0, in_plane)


def test_synthetic_t1_orders_organs_like_the_real_scan(real_mr):
    """T1 in-phase from example_mr_sm's labels: same organ ranking as the real T1 scan.

    Real (eroded medians): fat ~510 > liver ~97 > spleen ~22, kidneys ~22 > muscle ~13.
    """
    real, labels = real_mr
    tissues = tissues_from_labels(labels, seed=0)
    synthetic = synthesize(tissues, SynthesisOptions(sequence="t1_in", bias_field=0.0), seed=0)
    real_values = organ_medians(real.array.astype(np.float32), labels.array,
                                real_fat_band(real.array.astype(np.float32), labels.array))
    synthetic_values = organ_medians(synthetic.array, labels.array,
                                     tissues.array == TISSUE_INDEX["subcutaneous_fat"])
    assert real_values["muscle"] == min(real_values.values())  # the measurement the physics must match
    pairs = [("fat", "liver"), ("liver", "spleen"), ("liver", "kidneys"), ("fat", "muscle"), ("liver", "muscle"),
             ("spleen", "muscle"), ("kidneys", "muscle")]
    for a, b in pairs:
        assert (real_values[a] > real_values[b]) == (synthetic_values[a] > synthetic_values[b]), (
            a, b, real_values, synthetic_values)


def test_random_contrast_gives_paired_tissues_one_intensity():
    array = np.zeros((10, 40, 60), dtype=np.uint8)
    array[1:9, 2:38, 2:58] = TISSUE_INDEX["subcutaneous_fat"]
    array[3:7, 10:30, 6:26] = TISSUE_INDEX["right_kidney_cortex"]
    array[3:7, 10:30, 34:54] = TISSUE_INDEX["left_kidney_cortex"]
    tissues = Image.from_array(array, spacing=(2.0, 2.0, 4.0))
    options = SynthesisOptions(random_contrast=True, **QUIET)
    for seed in range(4):
        image = synthesize(tissues, options, seed=seed)
        right = image.array[deep(tissues, "right_kidney_cortex", 1)].mean()
        left = image.array[deep(tissues, "left_kidney_cortex", 1)].mean()
        assert left == pytest.approx(right, rel=0.05, abs=0.01 * MR_SCALE)


def test_mesentery_lies_between_fat_and_soft_tissue_and_cancels_on_opposed_phase():
    def signal(sequence: str, tissue: str) -> float:
        return abs(float(tissue_signals(SynthesisOptions(sequence=sequence))[TISSUE_INDEX[tissue]]))

    for sequence in ("t1_in", "dixon_fat", "t2_haste", "t2_tse"):
        assert signal(sequence, "muscle") < signal(sequence, "mesentery") < signal(sequence, "visceral_fat"), sequence
    # fat and water share its voxels: India ink, darker than either pure tissue
    assert signal("t1_opp", "mesentery") < min(signal("t1_opp", "muscle"), signal("t1_opp", "visceral_fat"))
    ct = tissue_signals(SynthesisOptions(modality="ct", sequence="native"))
    assert ct[TISSUE_INDEX["visceral_fat"]] < ct[TISSUE_INDEX["mesentery"]] < ct[TISSUE_INDEX["muscle"]]


def test_perirenal_fat_is_greyer_than_the_visceral_fat_on_fat_images_and_on_ct_like_fat():
    def signal(sequence: str, tissue: str) -> float:
        return abs(float(tissue_signals(SynthesisOptions(sequence=sequence))[TISSUE_INDEX[tissue]]))

    for sequence in ("t1_in", "dixon_fat"):
        assert signal(sequence, "mesentery") < signal(sequence, "perirenal_fat") < signal(sequence, "visceral_fat")
    assert signal("dixon_water", "perirenal_fat") > signal("dixon_water", "visceral_fat")
    ct = tissue_signals(SynthesisOptions(modality="ct", sequence="native"))
    assert ct[TISSUE_INDEX["visceral_fat"]] < ct[TISSUE_INDEX["perirenal_fat"]] < -50  # still fat
