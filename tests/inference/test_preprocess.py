"""Preprocessing (:mod:`mrseg.inference.preprocess`): cropping, resampling and normalisation
against nnU-Net v2's ``DefaultPreprocessor``."""

from __future__ import annotations

import numpy as np
import pytest

import model_factory
from mrseg.inference.preprocess import Preprocessed, bounding_box, preprocess
from mrseg.model.plans import parse_plans
from parity import nnunet_plans_manager


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

    manager = nnunet_plans_manager(plans_dict)
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
    manager = nnunet_plans_manager(plans_dict)
    data, _, properties = DefaultPreprocessor(verbose=False).run_case_npy(
        image[None], None, {"spacing": [3.0, 1.5, 1.5]}, manager, manager.get_configuration("3d_fullres"),
        model_factory.make_dataset())
    assert [list(b) for b in ours.bbox] == [list(b) for b in properties["bbox_used_for_cropping"]]
    assert ours.bbox == ((0, 6), (0, 10), (0, 12))
    assert np.array_equal(ours.data, data)
