"""Label maps onto another grid: round trips, the world positions kept, against array-only references."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.errors import InputError
from mrseg.io import Geometry, Image, reorient, resample_labels

ORIENTATIONS = ["RAS", "LPS", "LAS", "PIL", "ASL", "oblique"]
INTEGER_TYPES = ["uint8", "int8", "uint16", "int16", "int32", "int64"]


def finer_grid(geometry: Geometry, factors: tuple[int, int, int]) -> Geometry:
    """The grid that splits every voxel into ``factors`` (ITK x, y, z order) sub-voxels, same extent."""
    f = np.asarray(factors, dtype=float)
    spacing = np.asarray(geometry.spacing)
    shift = geometry.direction_matrix @ (-(f - 1) / (2 * f) * spacing)  # first sub-voxel centre
    return Geometry(
        shape=tuple(int(n * k) for n, k in zip(geometry.shape, factors[::-1])),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in spacing / f),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in np.asarray(geometry.origin) + shift),  # type: ignore[arg-type]
        direction=geometry.direction,
    )


@pytest.mark.parametrize("factors", [(3, 1, 3), (2, 2, 1)])
@pytest.mark.parametrize("name", ORIENTATIONS)
def test_finer_grid_and_back_round_trip(make_image, name, factors):
    labels = make_image(name, "int16", seed=len(name))
    before = labels.array.copy()
    grid = finer_grid(labels.geometry, factors)

    fine = resample_labels(labels, grid)

    expected = labels.array
    for axis, k in enumerate(factors[::-1]):  # numpy (z, y, x) axes
        expected = np.repeat(expected, k, axis=axis)
    assert fine.geometry == grid
    assert fine.array.dtype == np.int16
    assert np.array_equal(fine.array, expected)
    back = resample_labels(fine, labels.geometry)
    assert back.geometry == labels.geometry
    assert np.array_equal(back.array, labels.array)
    assert np.array_equal(labels.array, before)  # the input is not modified


@pytest.mark.parametrize("code", ["RAS", "PIL", "SAR"])
@pytest.mark.parametrize("name", ORIENTATIONS)
def test_reoriented_grid_equals_reorient_and_back(make_image, name, code):
    """Onto the same voxels in another axis order: the array-only reorientation is the reference."""
    labels = make_image(name, "uint16", seed=7)
    reoriented, _ = reorient(labels, code)
    moved = resample_labels(labels, reoriented.geometry)
    assert moved.geometry == reoriented.geometry
    assert np.array_equal(moved.array, reoriented.array)
    back = resample_labels(moved, labels)  # an image as the reference: its grid
    assert back.geometry == labels.geometry
    assert np.array_equal(back.array, labels.array)


@pytest.mark.parametrize("dtype", INTEGER_TYPES)
def test_dtype_is_kept_and_outside_is_background(make_image, dtype):
    labels = make_image("oblique", dtype, seed=3)
    if dtype == "int64":  # SimpleITK interpolates in double: exact up to 2**53, like any real label value
        labels = labels.with_array(labels.array // 2**11)
    g = labels.geometry
    shift = 3 * g.spacing[0] * g.direction_matrix[:, 0]  # three voxels along the first (x) axis
    moved = resample_labels(labels, Geometry(g.shape, g.spacing, tuple(np.add(g.origin, shift)), g.direction))
    assert moved.array.dtype == np.dtype(dtype)
    assert np.array_equal(moved.array[..., :-3], labels.array[..., 3:])
    assert np.all(moved.array[..., -3:] == 0)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bool"])
def test_non_integer_labels_are_refused(make_image, dtype):
    labels = make_image("LPS", "float32")
    array = labels.array > 0 if dtype == "bool" else labels.array.astype(dtype)
    with pytest.raises(InputError, match=rf"resample_labels needs an integer label map, got dtype {dtype}; round"):
        resample_labels(Image(array, labels.geometry), labels.geometry)
