"""Units of the inference engine, each against an independent reference: scikit-image's resize and
nnU-Net v2's own resampling, sliding-window, normalisation, preprocessing and export functions."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import model_factory
from mrseg.classes import BASE, BODY_COMP, CATALOGUES, catalogue
from mrseg.errors import InputError, ModelError
from mrseg.inference import Segmentation, Segmenter
from mrseg.inference.export import _linear_source_rows, _resample_rows, logits_to_labels
from mrseg.inference.normalization import NORMALIZATIONS, ct, none, normalizer, rescale_to_01, rgb_to_01, zscore
from mrseg.inference.preprocess import Preprocessed, bounding_box, preprocess
from mrseg.inference.resample import (
    new_shape_for_spacing,
    resample_to_shape,
    resampling_function,
    resize,
    separate_z_axis,
)
from mrseg.inference.segmenter import repair_nonfinite, resolve_device
from mrseg.inference.sliding_window import count_tiles, gaussian_importance, tile_starts
from mrseg.io.image import Image
from mrseg.model.plans import IntensityProperties, Resampling, parse_dataset, parse_plans
from parity import phantom_image


def _plans_manager(plans: dict):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(plans)


# --------------------------------------------------------------------------- resize / resampling


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("source, target", [
    ((7, 9, 11), (13, 5, 16)),   # mixed up/down
    ((10, 12, 8), (5, 6, 4)),    # down
    ((5, 6, 7), (11, 13, 9)),    # up, odd
    ((1, 6, 7), (3, 6, 5)),      # a singleton axis
    ((9, 11), (17, 4)),          # 2-D, as the separate-z path calls it
])
def test_resize_equals_skimage(order, source, target):
    from skimage.transform import resize as sk_resize

    image = np.random.default_rng(order).standard_normal(source)
    ours = resize(image, target, order)
    theirs = sk_resize(image, target, order=order, mode="edge", anti_aliasing=False)
    assert ours.shape == theirs.shape == target
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, atol=1e-10, rtol=0)


@pytest.mark.parametrize("source, target", [
    ((7, 9, 11), (13, 5, 16)), ((10, 12, 8), (5, 6, 4)), ((5, 6, 7), (11, 13, 9)), ((1, 6, 7), (3, 6, 5)),
    ((24, 40, 40), (45, 77, 77)),
])
def test_torch_trilinear_resize_equals_the_float64_path(source, target):
    """The export's resampling (linear rows, then bilinear planes) against nnU-Net's float64 resize."""
    image = np.random.default_rng(3).standard_normal(source).astype(np.float32)
    rows = [torch.from_numpy(a) for a in _linear_source_rows(source[0], target[0])]
    with torch.inference_mode():
        ours = _resample_rows(torch.from_numpy(image), *rows, target[1:]).numpy()
    assert ours.dtype == np.float32 and ours.shape == target
    np.testing.assert_allclose(ours, resize(image, target, 1), atol=5e-5, rtol=0)  # float32 coordinates


def test_resize_does_not_modify_its_input(rng):
    image = rng.standard_normal((6, 7, 8))
    before = image.copy()
    resize(image, (9, 5, 8), 3)
    assert np.array_equal(image, before)


RESAMPLING_CASES = {
    # name: (current spacing, new spacing, force_separate_z, expected separate axis)
    "separate-z axis 0": ((5.0, 1.0, 1.0), (2.0, 1.0, 1.0), None, 0),
    "separate-z axis 2": ((1.0, 1.0, 5.0), (1.0, 1.0, 2.0), None, 2),
    "separate-z axis 1": ((1.0, 4.5, 1.2), (1.5, 3.0, 1.5), None, 1),
    "anisotropic target": ((1.0, 1.0, 1.0), (1.0, 1.0, 4.0), None, 2),
    "isotropic": ((1.0, 1.0, 1.0), (1.5, 1.5, 1.5), None, None),
    "mild anisotropy": ((2.5, 1.0, 1.0), (1.5, 1.5, 1.5), None, None),
    "forced separate": ((3.0, 1.0, 1.0), (2.0, 1.0, 1.0), True, 0),
    "forced joint": ((5.0, 1.0, 1.0), (2.0, 1.0, 1.0), False, None),
    "two low-res axes": ((4.0, 4.0, 1.0), (2.0, 2.0, 1.0), None, None),
}


@pytest.mark.parametrize("order, order_z", [(3, 0), (1, 0), (3, 1)])
@pytest.mark.parametrize("case", list(RESAMPLING_CASES))
def test_resample_to_shape_equals_nnunet(case, order, order_z):
    from nnunetv2.preprocessing.resampling.default_resampling import (
        compute_new_shape,
        resample_data_or_seg_to_shape,
    )

    current, new, force, axis = RESAMPLING_CASES[case]
    data = np.random.default_rng(7).standard_normal((2, 9, 10, 11)).astype(np.float32)
    shape = [int(s) for s in compute_new_shape(data.shape[1:], current, new)]
    assert tuple(shape) == new_shape_for_spacing(data.shape[1:], current, new)
    assert separate_z_axis(current, new, force) == axis

    before = data.copy()
    ours = resample_to_shape(data, shape, current_spacing=current, new_spacing=new,
                             spec=Resampling("resample_data_or_seg_to_shape", order, order_z, force))
    theirs = resample_data_or_seg_to_shape(data, shape, current, new, is_seg=False, order=order,
                                           order_z=order_z, force_separate_z=force)
    assert np.array_equal(data, before)
    assert ours.shape == theirs.shape == (2, *shape)
    assert ours.dtype == theirs.dtype == np.float32
    assert np.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_resample_keeps_float64():
    data = np.random.default_rng(0).standard_normal((1, 6, 7, 8))
    out = resample_to_shape(data, (3, 7, 9), current_spacing=(2.0, 1.0, 1.0), new_spacing=(4.0, 1.0, 0.9),
                            spec=Resampling("resample_data_or_seg_to_shape", 1, 0, None))
    assert out.dtype == np.float64


def test_resample_to_the_same_shape_returns_the_input():
    data = np.zeros((1, 4, 5, 6), np.float32)
    spec = Resampling("resample_data_or_seg_to_shape", 3, 0, None)
    assert resample_to_shape(data, (4, 5, 6), current_spacing=(1, 1, 1), new_spacing=(1, 1, 1), spec=spec) is data


def test_label_resampling_through_the_data_path_is_refused():
    spec = Resampling("resample_data_or_seg_to_shape", 1, 0, None, is_seg=True)
    with pytest.raises(ModelError, match="label maps"):
        resample_to_shape(np.zeros((1, 4, 4, 4)), (2, 2, 2), current_spacing=(1, 1, 1), new_spacing=(2, 2, 2),
                          spec=spec)


def test_unknown_resampling_function_lists_the_known_ones():
    with pytest.raises(ModelError, match="'resample_torch_fornnunet'; supported: resample_data_or_seg_to_shape"):
        resampling_function(Resampling("resample_torch_fornnunet", 3, 0, None))


@pytest.mark.parametrize("current, new, force", [
    ((4.0, 4.0, 1.0), (1.0, 1.0, 1.0), None),   # two axes tie for the lowest resolution
    ((1.0, 1.0, 1.0), (3.5, 3.5, 1.0), None),   # the same in the target spacing
    ((4.0, 4.0, 1.0), (1.0, 1.0, 1.0), True),   # forced, but no single axis to pick
    ((2.0, 2.0, 2.0), (1.0, 1.0, 1.0), True),   # all three tie
])
def test_separate_z_axis_none_when_axes_tie(current, new, force):
    assert separate_z_axis(current, new, force) is None


def test_separate_z_axis_agrees_with_nnunet():
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    rng = np.random.default_rng(11)
    choices = [0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 3.2, 5.0]
    for _ in range(300):
        current, new = tuple(rng.choice(choices, 3)), tuple(rng.choice(choices, 3))
        force = [None, True, False][int(rng.integers(3))]
        do_separate, axis = determine_do_sep_z_and_axis(force, current, new)
        expected = int(axis) if do_separate else None
        assert separate_z_axis(current, new, force) == expected, (current, new, force)


# --------------------------------------------------------------------------- sliding window


@pytest.mark.parametrize("step", [0.5, 0.8, 1.0, 0.3, 0.25])
def test_tile_starts_equal_nnunet(step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    tile = (16, 32, 24)
    rng = np.random.default_rng(int(step * 100))
    sizes = [tile, (17, 33, 25), (32, 64, 48), (40, 70, 33), (100, 97, 24)]
    sizes += [tuple(int(t + rng.integers(0, 90)) for t in tile) for _ in range(20)]
    for size in sizes:
        assert tile_starts(size, tile, step) == compute_steps_for_sliding_window(size, tile, step), size


def test_tile_starts_cover_the_image():
    for size in range(32, 200, 7):
        (starts,) = tile_starts((size,), (32,), 0.5)
        assert starts[0] == 0 and starts[-1] == size - 32
        assert all(b - a <= 16 for a, b in zip(starts, starts[1:]))


def test_image_equal_to_the_tile_is_one_tile():
    assert tile_starts((16, 32, 32), (16, 32, 32), 0.5) == [[0], [0], [0]]
    assert count_tiles((16, 32, 32), (16, 32, 32), 0.5) == 1


def test_count_tiles_pads_small_images():
    assert count_tiles((8, 20, 40), (16, 32, 32), 0.5) == 1 * 1 * 2
    assert count_tiles((33, 64, 32), (16, 32, 32), 0.5) == 4 * 3 * 1


@pytest.mark.parametrize("step", [0, 1.5, -0.5])
def test_bad_step_raises(step):
    with pytest.raises(ValueError, match=r"step must be in \(0, 1\]"):
        tile_starts((32, 32, 32), (16, 16, 16), step)


def test_image_smaller_than_the_tile_raises():
    with pytest.raises(ValueError, match="smaller than the tile size"):
        tile_starts((10, 32, 32), (16, 16, 16), 0.5)


@pytest.mark.parametrize("tile", [(16, 32, 32), (5, 7, 9), (20, 20, 20), (128, 128, 128)])
def test_gaussian_importance_equals_nnunet(tile):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    theirs = compute_gaussian(tuple(tile), 1.0 / 8, 10, dtype=torch.float32, device=torch.device("cpu")).numpy()
    ours = gaussian_importance(tile)
    assert ours.dtype == np.float32
    assert ours.shape == tuple(tile)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    assert ours.min() > 0
    assert np.unravel_index(ours.argmax(), tile) == tuple(t // 2 for t in tile)
    assert math.isclose(float(ours.max()), 10.0, rel_tol=1e-6)


# --------------------------------------------------------------------------- normalisation


def _volume(rng, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Random intensities inside a box, zeros around it, and the non-zero mask."""
    image = np.zeros((10, 12, 14), dtype)
    image[2:8, 3:10, 1:12] = (rng.standard_normal((6, 7, 11)) * 120 + 300).astype(dtype)
    return image, image != 0


def _nnunet_normalization(name: str, use_mask: bool, props: dict):
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    return getattr(schemes, name)(use_mask_for_norm=use_mask, intensityproperties=props)


@pytest.mark.parametrize("name, use_mask", [
    ("ZScoreNormalization", False), ("ZScoreNormalization", True), ("CTNormalization", False),
    ("CTNormalization", True), ("NoNormalization", False), ("RescaleTo01Normalization", False),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_normalization_equals_nnunet(rng, name, use_mask, dtype):
    image, inside = _volume(rng, dtype)
    props = {k: model_factory.CT_INTENSITY[k] for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
    ours = normalizer(name)(image.copy(), inside, use_mask, IntensityProperties(**props))
    seg = np.where(inside, 0, -1).astype(np.int8)  # nnU-Net's encoding of the non-zero mask
    theirs = _nnunet_normalization(name, use_mask, props).run(image.copy(), seg)
    assert ours.dtype == theirs.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_rgb_normalization_equals_nnunet(rng):
    image = rng.integers(0, 256, (4, 5, 6)).astype(np.float32)
    ours = rgb_to_01(image.copy(), image != 0, False, None)
    assert np.array_equal(ours, _nnunet_normalization("RGBTo01Normalization", False, {}).run(image.copy()))


def test_masked_zscore_leaves_the_outside_untouched(rng):
    image, inside = _volume(rng)
    out = zscore(image.copy(), inside, True, None)
    assert np.all(out[~inside] == 0)
    assert abs(out[inside].mean()) < 1e-5 and abs(out[inside].std() - 1) < 1e-5


def test_constant_image_does_not_divide_by_zero():
    image = np.full((3, 4, 5), 7.0, np.float32)
    assert np.all(np.isfinite(zscore(image.copy(), image != 0, False, None)))
    assert np.all(np.isfinite(rescale_to_01(image.copy(), image != 0, False, None)))


def test_ct_normalization_needs_intensity_properties():
    with pytest.raises(ModelError, match="CTNormalization needs foreground_intensity_properties_per_channel"):
        ct(np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), bool), False, None)


def test_rgb_normalization_range_check():
    with pytest.raises(InputError, match="0..255"):
        rgb_to_01(np.full((2, 2, 2), 300.0, np.float32), np.ones((2, 2, 2), bool), False, None)


def test_unknown_normalization_lists_the_supported_ones():
    with pytest.raises(ModelError, match=r"'Foo'; supported: ZScoreNormalization, CTNormalization, NoNormalization, "
                                         r"RescaleTo01Normalization, RGBTo01Normalization"):
        normalizer("Foo")


def test_registry_names_are_nnunets():
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    assert all(hasattr(schemes, name) for name in NORMALIZATIONS)
    assert normalizer("NoNormalization") is none


# --------------------------------------------------------------------------- preprocessing


def _two_channel_plans(**options) -> tuple[dict, dict]:
    plans = model_factory.make_plans(**options)
    config = plans["configurations"]["3d_fullres"]
    config["normalization_schemes"] = ["ZScoreNormalization", "CTNormalization"]
    config["use_mask_for_norm"] = [True, False]
    plans["foreground_intensity_properties_per_channel"]["1"] = dict(model_factory.CT_INTENSITY)
    dataset = model_factory.make_dataset()
    dataset["channel_names"] = {"0": "T1", "1": "CT"}
    return plans, dataset


PREPROCESS_CASES = {
    # name: (make_plans options, numpy spacing (z, y, x), channels)
    "transpose 2,0,1, separate z": (dict(transpose=(2, 0, 1)), (4.0, 1.1, 0.9), 1),
    "masked z-score, separate z axis 0": (dict(use_mask_for_norm=True), (4.8, 0.8, 0.8), 1),
    "CT, transpose 1,2,0": (dict(normalization="CTNormalization", transpose=(1, 2, 0)), (1.2, 1.4, 1.0), 1),
    "two channels, anisotropic": (dict(transpose=(2, 0, 1)), (3.0, 1.3, 0.7), 2),
}


def _case_channels(rng, channels: int, spacing) -> list[np.ndarray]:
    image, _ = model_factory.blob_phantom((14, 30, 26), spacing, rng)
    image = image * 150.0
    image[7, 15, 13] = 0.0  # a hole inside the body: the cropping mask fills it
    out = [image]
    if channels == 2:
        second = np.zeros_like(image)
        second[2:12, 4:22, 1:20] = rng.normal(40.0, 200.0, (10, 18, 19)).astype(np.float32)
        out.append(second)
    return out


@pytest.mark.parametrize("case", list(PREPROCESS_CASES))
def test_preprocess_equals_nnunet(rng, case):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    options, spacing, channels = PREPROCESS_CASES[case]
    if channels == 2:
        plans_dict, dataset = _two_channel_plans(**options)
    else:
        plans_dict, dataset = model_factory.make_plans(**options), model_factory.make_dataset()
    arrays = _case_channels(rng, channels, spacing)
    copies = [a.copy() for a in arrays]
    plans = parse_plans(plans_dict)

    ours = preprocess(arrays, spacing, plans=plans, configuration=plans.configuration("3d_fullres"))

    manager = _plans_manager(plans_dict)
    properties = {"spacing": list(spacing)}
    data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        np.stack(arrays), None, properties, manager, manager.get_configuration("3d_fullres"), dataset)

    assert all(np.array_equal(a, c) for a, c in zip(arrays, copies))  # inputs untouched
    assert isinstance(ours, Preprocessed)
    assert [list(b) for b in ours.bbox] == [list(b) for b in properties["bbox_used_for_cropping"]]
    assert ours.shape_before_cropping == tuple(properties["shape_before_cropping"])
    assert ours.shape_after_cropping == tuple(properties["shape_after_cropping_and_before_resampling"])
    assert ours.shape_after_cropping != ours.shape_before_cropping  # the zero border was cropped
    assert ours.spacing == tuple(spacing[a] for a in plans.transpose_forward)
    assert ours.data.dtype == np.float32 and ours.data.flags.c_contiguous
    assert ours.data.shape == data.shape
    np.testing.assert_allclose(ours.data, data, atol=1e-5, rtol=0)


def test_bounding_box_of_an_empty_mask_is_the_whole_array():
    assert bounding_box(np.zeros((3, 4, 5), bool)) == ((0, 3), (0, 4), (0, 5))
    mask = np.zeros((6, 7, 8), bool)
    mask[1, 2:4, 7] = True
    assert bounding_box(mask) == ((1, 2), (2, 4), (7, 8))


def test_all_zero_image_is_not_cropped_as_in_nnunet():
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    plans_dict = model_factory.make_plans()
    plans = parse_plans(plans_dict)
    image = np.zeros((6, 10, 12), np.float32)
    ours = preprocess([image], (3.0, 1.5, 1.5), plans=plans, configuration=plans.configuration("3d_fullres"))
    manager = _plans_manager(plans_dict)
    data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        image[None], None, {"spacing": [3.0, 1.5, 1.5]}, manager, manager.get_configuration("3d_fullres"),
        model_factory.make_dataset())
    assert [list(b) for b in ours.bbox] == [list(b) for b in properties["bbox_used_for_cropping"]]
    assert ours.bbox == ((0, 6), (0, 10), (0, 12))
    assert np.array_equal(ours.data, data)


# --------------------------------------------------------------------------- export


EXPORT_CASES = {
    # transpose, numpy spacing of the input, transposed shape before cropping, bbox
    "transpose, separate z": ((2, 0, 1), (4.0, 1.1, 0.9), (30, 20, 36), ((2, 27), (1, 19), (3, 33))),
    "identity, near isotropic": ((0, 1, 2), (2.0, 1.2, 1.7), (18, 40, 30), ((0, 18), (5, 36), (2, 30))),
    "transpose, no crop": ((1, 2, 0), (1.0, 1.0, 3.5), (25, 22, 9), ((0, 25), (0, 22), (0, 9))),
}


@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_logits_to_labels_equals_nnunet(case, as_numpy):
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    transpose, spacing, shape_before, bbox = EXPORT_CASES[case]
    plans_dict, dataset = model_factory.make_plans(transpose=transpose), model_factory.make_dataset()
    plans = parse_plans(plans_dict)
    config = plans.configuration("3d_fullres")
    spacing_t = tuple(spacing[a] for a in transpose)
    shape_after = tuple(hi - lo for lo, hi in bbox)
    net_shape = new_shape_for_spacing(shape_after, spacing_t, config.spacing)
    logits = np.random.default_rng(2).standard_normal((model_factory.NUM_LABELS, *net_shape)).astype(np.float32)
    case_record = Preprocessed(data=np.zeros((1, *net_shape), np.float32), spacing=spacing_t,
                               shape_before_cropping=shape_before, bbox=bbox)

    ours = logits_to_labels(logits if as_numpy else torch.from_numpy(logits), case_record, plans=plans,
                            configuration=config)

    manager = _plans_manager(plans_dict)
    properties = {
        "spacing": list(spacing),
        "shape_before_cropping": shape_before,
        "bbox_used_for_cropping": [list(b) for b in bbox],
        "shape_after_cropping_and_before_resampling": shape_after,
    }
    theirs = convert_predicted_logits_to_segmentation_with_correct_shape(
        torch.from_numpy(logits.copy()), manager, manager.get_configuration("3d_fullres"),
        manager.get_label_manager(dataset), properties, num_threads_torch=torch.get_num_threads())
    theirs = np.asarray(theirs)

    assert ours.shape == theirs.shape == tuple(shape_before[a] for a in plans.transpose_backward)
    assert ours.dtype == theirs.dtype == np.uint8
    assert ours.flags.c_contiguous
    assert (ours == theirs).mean() >= 0.999
    assert set(np.unique(ours)) == set(range(model_factory.NUM_LABELS))
    uncropped = np.zeros(shape_before, bool)
    uncropped[tuple(slice(lo, hi) for lo, hi in bbox)] = True
    assert np.all(ours[~uncropped.transpose(plans.transpose_backward)] == 0)


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_float16_logits_export_like_their_float32_values(case):
    transpose, spacing, shape_before, bbox = EXPORT_CASES[case]
    plans = parse_plans(model_factory.make_plans(transpose=transpose))
    config = plans.configuration("3d_fullres")
    spacing_t = tuple(spacing[a] for a in transpose)
    net_shape = new_shape_for_spacing(tuple(hi - lo for lo, hi in bbox), spacing_t, config.spacing)
    logits = np.random.default_rng(4).standard_normal((model_factory.NUM_LABELS, *net_shape)).astype(np.float16)
    record = Preprocessed(data=np.zeros((1, *net_shape), np.float32), spacing=spacing_t,
                          shape_before_cropping=shape_before, bbox=bbox)
    half = logits_to_labels(torch.from_numpy(logits), record, plans=plans, configuration=config)
    single = logits_to_labels(logits.astype(np.float32), record, plans=plans, configuration=config)
    assert np.array_equal(half, single)


def test_many_classes_give_uint16():
    plans = parse_plans(model_factory.make_plans())
    config = plans.configuration("3d_fullres")
    logits = np.zeros((300, 4, 4, 4), np.float32)
    logits[299] = 1.0
    case = Preprocessed(np.zeros((1, 4, 4, 4), np.float32), (3.0, 1.5, 1.5), (4, 4, 4), ((0, 4), (0, 4), (0, 4)))
    labels = logits_to_labels(logits, case, plans=plans, configuration=config)
    assert labels.dtype == np.uint16
    assert np.all(labels == 299)


# --------------------------------------------------------------------------- non-finite repair


def test_repair_nonfinite():
    array = np.array([[[np.nan, -np.inf, 1.5], [np.inf, -2.0, 7.0]]], np.float32)
    before = array.copy()
    fixed, count = repair_nonfinite(array)
    assert count == 3
    assert fixed.dtype == np.float32
    assert np.array_equal(fixed, np.array([[[-2.0, -2.0, 1.5], [7.0, -2.0, 7.0]]], np.float32))
    assert np.array_equal(array, before, equal_nan=True)  # the input is not modified


def test_repair_leaves_finite_and_integer_arrays_alone():
    finite = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    assert repair_nonfinite(finite) == (finite, 0)
    assert repair_nonfinite(finite)[0] is finite
    integers = np.arange(-4, 4, dtype=np.int16).reshape(2, 2, 2)
    fixed, count = repair_nonfinite(integers)
    assert fixed is integers and count == 0


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_repair_with_no_finite_voxel_raises(fill):
    with pytest.raises(InputError, match=r"scan\.nii\.gz: no finite voxel"):
        repair_nonfinite(np.full((2, 3, 4), fill), source="scan.nii.gz")


# --------------------------------------------------------------------------- devices


def test_cpu_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_unavailable(device):
    with pytest.raises(InputError, match="not available"):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_unavailable():
    with pytest.raises(InputError, match="MPS is not available"):
        resolve_device("mps")


@pytest.mark.parametrize("device", ["tpu", "nonsense", "meta", "cuda:x"])
def test_unknown_devices(device):
    with pytest.raises(InputError, match=rf"device '{device}' not (understood|supported); use cpu, cuda"):
        resolve_device(device)


# --------------------------------------------------------------------------- Segmenter


@pytest.fixture(scope="module")
def segmenter(model_dir):
    return Segmenter(model_dir(), folds=[0], threads=1)


@pytest.mark.parametrize("step", [0, 1.5, -0.1])
def test_segmenter_bad_step(model_dir, step):
    with pytest.raises(InputError, match=rf"step must be in \(0, 1\], got {step}"):
        Segmenter(model_dir(), step=step)


def test_segmenter_bad_threads(model_dir):
    with pytest.raises(InputError, match="threads must be at least 1, got 0"):
        Segmenter(model_dir(), threads=0)


def test_segmenter_bad_device(model_dir):
    with pytest.raises(InputError, match="not understood"):
        Segmenter(model_dir(), device="nonsense")


def test_segmenter_accepts_a_loaded_model(segmenter):
    other = Segmenter(segmenter.model, threads=1)
    assert other.model is segmenter.model
    assert len(other.networks) == 1


def test_wrong_number_of_channels(segmenter):
    image = phantom_image("RAS", shape=(8, 16, 16))
    with pytest.raises(InputError, match=r"case7: the model takes 1 input channel\(s\) \(MR\), got 2"):
        segmenter.run([image, image], source="case7")


def test_all_nan_image_is_refused(segmenter):
    image = Image.from_array(np.full((6, 8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="no finite voxel"):
        segmenter.run(image)


def _with_nonfinite(image: Image) -> tuple[Image, Image, int]:
    """The image with NaN/inf voxels, the same image repaired by hand, and how many were set."""
    broken = image.array.copy()
    broken[:, :3, :] = np.nan                     # outside the field of view
    broken[4, 20, 10:14] = np.nan                 # inside the body
    broken[2, 30, 5] = -np.inf
    broken[9, 25, 20] = np.inf
    bad = ~np.isfinite(broken)
    low, high = np.nanmin(broken[np.isfinite(broken)]), np.nanmax(broken[np.isfinite(broken)])
    repaired = np.where(np.isnan(broken) | (broken == -np.inf), low, broken)
    repaired = np.where(repaired == np.inf, high, repaired).astype(np.float32)
    return image.with_array(broken), image.with_array(repaired), int(bad.sum())


def test_segmenter_repairs_nan_and_keeps_inputs_and_geometry(segmenter):
    image = phantom_image("oblique", shape=(16, 40, 36), spacing=(1.3, 1.2, 3.5))
    broken, repaired, count = _with_nonfinite(image)
    before = broken.array.copy()
    geometry = broken.geometry
    ticks: list[tuple[int, int]] = []

    result = segmenter.run(broken, on_tile=lambda done, total: ticks.append((done, total)))

    assert isinstance(result, Segmentation)
    assert np.array_equal(broken.array, before, equal_nan=True)  # the input is not modified
    assert broken.geometry is geometry
    assert result.labels.geometry == image.geometry
    assert result.labels.array.shape == image.array.shape
    assert result.labels.array.dtype == np.uint8
    assert result.repaired_voxels == count
    assert result.num_tiles == len(ticks) >= 1
    assert ticks[-1] == (result.num_tiles, result.num_tiles)
    assert set(result.timings) == {"preprocess", "predict", "export"}
    assert len(np.unique(result.labels.array)) >= 3  # a trained model, not a blank map

    reference = segmenter.run(repaired)
    assert reference.repaired_voxels == 0
    assert np.array_equal(result.labels.array, reference.labels.array)
    assert np.array_equal(segmenter.segment(repaired).array, reference.labels.array)


def test_segmenter_restores_torch_threads(model_dir):
    threads = torch.get_num_threads()
    segmenter = Segmenter(model_dir(), folds=[0], threads=threads + 1)
    assert torch.get_num_threads() == threads
    segmenter.run(phantom_image("RAS", shape=(8, 16, 16)))
    assert torch.get_num_threads() == threads


def test_segmenter_warns_about_repaired_voxels(segmenter, caplog):
    image = phantom_image("RAS", shape=(8, 16, 16))
    broken = image.array.copy()
    broken[0, 0, :5] = np.nan
    with caplog.at_level("WARNING", logger="mrseg.inference.segmenter"):
        result = segmenter.run(image.with_array(broken), source="scan.nii.gz")
    assert result.repaired_voxels == 5
    assert "scan.nii.gz: 5 NaN/infinite voxels replaced" in caplog.text


# --------------------------------------------------------------------------- class catalogue


def test_base_catalogue():
    assert BASE.num_classes == 40
    assert [c.index for c in BASE.classes] == list(range(1, 41))
    spot = {1: "spleen", 2: "right_kidney", 5: "liver", 10: "left_lung", 13: "aorta", 25: "spine",
            26: "sacrum", 39: "left_gluteus_minimus", 40: "right_gluteus_minimus"}
    for index, name in spot.items():
        assert BASE.name_of(index) == name
        assert BASE.index_of(name) == index
    assert catalogue("base") is BASE


def test_body_composition_catalogue():
    assert BODY_COMP.num_classes == 10
    assert [c.index for c in BODY_COMP.classes] == list(range(1, 11))
    assert BODY_COMP.name_of(1) == "subcutaneous_fat"
    assert BODY_COMP.name_of(10) == "gluteofemoral_fat"
    assert catalogue("body_comp") is BODY_COMP


@pytest.mark.parametrize("cat", list(CATALOGUES.values()), ids=list(CATALOGUES))
def test_names_are_unique_snake_case(cat):
    assert len(set(cat.names)) == len(cat.names)
    assert all(name == name.lower() and " " not in name for name in cat.names)


def test_catalogue_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.classes[0].name = "milz"  # type: ignore[misc]


def test_unknown_class_name_suggests_the_closest():
    with pytest.raises(InputError, match=r"unknown class 'livr' for the 'base' model; did you mean liver\?"):
        BASE.index_of("livr")
    with pytest.raises(InputError, match=r"'xyzzy' for the 'base' model$"):
        BASE.index_of("xyzzy")


def test_unknown_index_raises():
    with pytest.raises(KeyError, match=r"label 41 is not in the 'base' catalogue \(1..40\)"):
        BASE.name_of(41)
    with pytest.raises(KeyError):
        BASE.name_of(0)


def test_unknown_catalogue_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown catalogue 'x'; valid: base, body_comp"):
        catalogue("x")


def test_base_names_equal_the_shared_label_map(shared_data):
    label_maps = json.loads((shared_data / "labels" / "label_maps.json").read_text())
    reference = label_maps["mrseg40_index_to_name"]
    assert len(reference) == 40
    assert {int(k): v for k, v in reference.items()} == {c.index: c.name for c in BASE.classes}


def test_dataset_labels_match_the_catalogue_order():
    """A dataset.json written from the catalogue parses back to the same indices."""
    labels = {"background": 0, **{c.name: c.index for c in BASE.classes}}
    info = parse_dataset({"channel_names": {"0": "MR"}, "labels": labels})
    assert info.num_segmentation_heads == 41
    assert tuple(info.foreground) == BASE.names
