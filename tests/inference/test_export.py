"""The export (:mod:`mrseg.inference.export`): logits back to labels on the input's grid, against
nnU-Net v2's own export and its float64 resize; slab by slab against the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import model_factory
from mrseg.inference.export import (
    SlabExport,
    _linear_source_rows,
    _resample_rows,
    exports_in_slabs,
    logits_to_labels,
)
from mrseg.inference.preprocess import Preprocessed
from mrseg.inference.resample import new_shape_for_spacing, resize
from mrseg.model.plans import parse_plans
from parity import nnunet_plans_manager


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


EXPORT_CASES = {
    # transpose, numpy spacing of the input, transposed shape before cropping, bbox
    "transpose, separate z": ((2, 0, 1), (4.0, 1.1, 0.9), (30, 20, 36), ((2, 27), (1, 19), (3, 33))),
    "identity, near isotropic": ((0, 1, 2), (2.0, 1.2, 1.7), (18, 40, 30), ((0, 18), (5, 36), (2, 30))),
    "transpose, no crop": ((1, 2, 0), (1.0, 1.0, 3.5), (25, 22, 9), ((0, 25), (0, 22), (0, 9))),
}


def export_case(transpose, spacing, shape_before, bbox):
    plans = parse_plans(model_factory.make_plans(transpose=transpose))
    config = plans.configuration("3d_fullres")
    spacing_t = tuple(spacing[a] for a in transpose)
    shape_after = tuple(hi - lo for lo, hi in bbox)
    net_shape = new_shape_for_spacing(shape_after, spacing_t, config.spacing)
    case = Preprocessed(data=np.zeros((1, *net_shape), np.float32), spacing=spacing_t,
                        shape_before_cropping=shape_before, bbox=bbox)
    return plans, config, case


def nnunet_export(logits, transpose, spacing, shape_before, bbox):
    """nnU-Net's own export of ``logits`` (its label map, as a numpy array)."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    plans_dict = model_factory.make_plans(transpose=transpose)
    manager = nnunet_plans_manager(plans_dict)
    properties = {
        "spacing": list(spacing),
        "shape_before_cropping": shape_before,
        "bbox_used_for_cropping": [list(b) for b in bbox],
        "shape_after_cropping_and_before_resampling": tuple(hi - lo for lo, hi in bbox),
    }
    return np.asarray(convert_predicted_logits_to_segmentation_with_correct_shape(
        torch.from_numpy(logits.copy()), manager, manager.get_configuration("3d_fullres"),
        manager.get_label_manager(model_factory.make_dataset()), properties, num_threads_torch=torch.get_num_threads()))


@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_logits_to_labels_equals_nnunet(case, as_numpy):
    transpose, spacing, shape_before, bbox = EXPORT_CASES[case]
    plans, config, case_record = export_case(transpose, spacing, shape_before, bbox)
    net_shape = case_record.data.shape[1:]
    logits = np.random.default_rng(2).standard_normal((model_factory.NUM_LABELS, *net_shape)).astype(np.float32)

    ours = logits_to_labels(logits if as_numpy else torch.from_numpy(logits), case_record, plans=plans,
                            configuration=config)
    theirs = nnunet_export(logits, transpose, spacing, shape_before, bbox)

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
    plans, config, record = export_case(*EXPORT_CASES[case])
    shape = (model_factory.NUM_LABELS, *record.data.shape[1:])
    logits = np.random.default_rng(4).standard_normal(shape).astype(np.float16)
    half = logits_to_labels(torch.from_numpy(logits), record, plans=plans, configuration=config)
    single = logits_to_labels(logits.astype(np.float32), record, plans=plans, configuration=config)
    assert np.array_equal(half, single)


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_float16_logits_as_nnunet_holds_them_give_its_labels(case):
    """nnU-Net sums its logits in float16 and resamples them into float16 arrays, so its argmax
    compares float16 values; ours compares the same roundings."""
    transpose, spacing, shape_before, bbox = EXPORT_CASES[case]
    plans, config, record = export_case(transpose, spacing, shape_before, bbox)
    shape = (model_factory.NUM_LABELS, *record.data.shape[1:])
    logits = np.round(np.random.default_rng(7).standard_normal(shape), 1).astype(np.float16)  # many ties
    ours = logits_to_labels(torch.from_numpy(logits), record, plans=plans, configuration=config)
    theirs = nnunet_export(logits, transpose, spacing, shape_before, bbox)
    assert (ours == theirs).mean() >= 0.9995, (ours != theirs).sum()


def test_float32_logits_tie_where_their_float16_roundings_do():
    """Two classes within one float16 step of each other: the lower wins, as in nnU-Net's float16 argmax."""
    plans = parse_plans(model_factory.make_plans())
    config = plans.configuration("3d_fullres")
    logits = np.zeros((3, 4, 4, 4), np.float32)
    logits[1] = 1.0
    logits[2, :2] = 1.0 + 1e-4  # float16 has steps of 1/1024 near 1: rounds to 1.0, a tie
    logits[2, 2:] = 1.0 + 4e-3  # a clear step above
    case = Preprocessed(np.zeros((1, 4, 4, 4), np.float32), (3.0, 1.5, 1.5), (4, 4, 4), ((0, 4), (0, 4), (0, 4)))
    labels = logits_to_labels(torch.from_numpy(logits), case, plans=plans, configuration=config)
    assert np.all(labels[:2] == 1) and np.all(labels[2:] == 2)


def test_many_classes_give_uint16():
    plans = parse_plans(model_factory.make_plans())
    config = plans.configuration("3d_fullres")
    logits = np.zeros((300, 4, 4, 4), np.float32)
    logits[299] = 1.0
    case = Preprocessed(np.zeros((1, 4, 4, 4), np.float32), (3.0, 1.5, 1.5), (4, 4, 4), ((0, 4), (0, 4), (0, 4)))
    labels = logits_to_labels(logits, case, plans=plans, configuration=config)
    assert labels.dtype == np.uint16
    assert np.all(labels == 299)


EXPORTS = {
    "trilinear": ((0, 1, 2), (2.0, 1.2, 1.7), (18, 40, 30), ((0, 18), (5, 36), (2, 30))),
    "trilinear, transposed": ((1, 2, 0), (1.0, 1.0, 2.5), (25, 22, 9), ((0, 25), (0, 22), (0, 9))),
    "same grid": ((0, 1, 2), (3.0, 1.5, 1.5), (12, 20, 16), ((1, 12), (0, 20), (3, 15))),
    "separate z (gathered)": ((2, 0, 1), (4.0, 1.1, 0.9), (30, 20, 36), ((2, 27), (1, 19), (3, 33))),
}


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("name", list(EXPORTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_slab_export_equals_the_whole_volume_export(name, axis, dtype):
    plans, config, case = export_case(*EXPORTS[name])
    assert exports_in_slabs(case, config) == (name != "separate z (gathered)")
    net_shape = case.data.shape[1:]
    logits = torch.from_numpy(np.random.default_rng(3).standard_normal((6, *net_shape)).astype(dtype))
    whole = logits_to_labels(logits, case, plans=plans, configuration=config)
    export = SlabExport(case, plans=plans, configuration=config, num_heads=6, axis=axis)
    cuts = sorted({0, 1, net_shape[axis] // 3, net_shape[axis] // 3 + 1, net_shape[axis]})  # one-row slabs too
    for lo, hi in zip(cuts, cuts[1:]):
        export.add(lo, hi, logits.narrow(axis + 1, lo, hi - lo))
    assert np.array_equal(export.finish(), whole)
