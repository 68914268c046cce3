"""nnU-Net's resampling (:mod:`mrseg.inference.resample`) against scikit-image's resize and
nnU-Net v2's own resampling functions."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.errors import ModelError
from mrseg.inference.resample import (
    new_shape_for_spacing,
    resample_to_shape,
    resampling_function,
    resize,
    separate_z_axis,
)
from mrseg.model.plans import Resampling


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
