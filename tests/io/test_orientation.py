"""Reorientation: world positions kept, undo exact, and the same result as SimpleITK's DICOMOrient."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.errors import InputError
from mrseg.io import Image, orientation_code, reorient
from mrseg.io.files import to_itk

ORIENTATIONS = ["RAS", "LPS", "LAS", "PIL", "ASL", "oblique"]
ALL_CODES = [
    "".join(pair[flip] for pair, flip in zip(axes, flips))
    for axes in itertools.permutations(["LR", "PA", "SI"])
    for flips in itertools.product([0, 1], repeat=3)
]
SHAPE = (5, 6, 7)


@pytest.fixture
def labelled(direction_of):
    """Factory: an image whose voxel values are unique (so each voxel can be found again)."""

    def make(name: str) -> Image:
        array = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE)
        return Image.from_array(array, spacing=(0.7, 1.1, 3.3), origin=(12.5, -31.25, 47.0),
                                direction=direction_of(name))

    return make


def _world(image: Image, value: int) -> np.ndarray:
    """World (LPS) position of the voxel holding ``value``."""
    k, j, i = np.argwhere(image.array == value)[0]
    return (image.geometry.affine_lps @ np.array([i, j, k, 1.0]))[:3]


def test_all_codes_are_48_distinct() -> None:
    assert len(set(ALL_CODES)) == 48


@pytest.mark.parametrize("code", ALL_CODES)
def test_orientation_code_of_axis_aligned_grids(labelled, code: str) -> None:
    assert orientation_code(labelled(code).geometry) == code


def test_orientation_code_of_oblique_grid(labelled) -> None:
    # 20 and 10 degree tilts of an LAS grid stay closest to LAS
    assert orientation_code(labelled("oblique").geometry) == "LAS"


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_reorient_to_lps_keeps_world_positions(labelled, name: str) -> None:
    image = labelled(name)
    out, step = reorient(image, "LPS")
    assert orientation_code(out.geometry) == "LPS"
    assert out.array.dtype == image.array.dtype
    assert sorted(out.geometry.spacing) == sorted(image.geometry.spacing)
    assert out.geometry.shape == out.array.shape
    assert step.source is image.geometry and step.target == out.geometry
    assert step.is_identity == (name == "LPS")

    rng = np.random.default_rng(7)
    for value in rng.choice(image.array.size, size=8, replace=False):
        np.testing.assert_allclose(_world(out, int(value)), _world(image, int(value)), atol=1e-6, rtol=0)
    # the corners of the grid too, where a wrong flip would show most
    for value in (0, image.array.size - 1):
        np.testing.assert_allclose(_world(out, value), _world(image, value), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_undo_restores_exactly(labelled, name: str) -> None:
    image = labelled(name)
    before = image.array.copy()
    out, step = reorient(image, "LPS")
    back = step.undo_image(out)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.geometry == image.geometry
    np.testing.assert_array_equal(image.array, before)  # input not mutated
    # undo of a label map computed on the reoriented grid, as inference would produce it
    labels = out.with_array((out.array % 5).astype(np.uint8))
    np.testing.assert_array_equal(step.undo_image(labels).array, (image.array % 5).astype(np.uint8))


@pytest.mark.parametrize("target", ["LPS", "RAS", "PIL", "ASL"])
@pytest.mark.parametrize("name", ORIENTATIONS)
def test_matches_simpleitk_dicomorient(labelled, name: str, target: str) -> None:
    image = labelled(name)
    out, _ = reorient(image, target)
    reference = sitk.DICOMOrient(to_itk(image), target)
    np.testing.assert_array_equal(out.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(out.geometry.origin, reference.GetOrigin(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.geometry.direction, reference.GetDirection(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.geometry.spacing, reference.GetSpacing(), atol=1e-12, rtol=0)
    assert orientation_code(out.geometry) == target


@pytest.mark.parametrize("code", ALL_CODES)
def test_every_code_to_lps_matches_simpleitk(labelled, code: str) -> None:
    image = labelled(code)
    out, step = reorient(image, "LPS")
    reference = sitk.DICOMOrient(to_itk(image), "LPS")
    np.testing.assert_array_equal(out.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(out.geometry.origin, reference.GetOrigin(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(out.geometry.direction, np.eye(3).ravel(), atol=1e-12, rtol=0)
    np.testing.assert_array_equal(step.undo(out.array), image.array)


def test_oblique_stays_oblique(labelled) -> None:
    image = labelled("oblique")
    out, _ = reorient(image, "LPS")
    # only axes are permuted and flipped: the direction is still the tilted one, not identity
    assert not np.allclose(out.geometry.direction, np.eye(3).ravel(), atol=0.1)
    np.testing.assert_allclose(out.geometry.direction_matrix.T @ out.geometry.direction_matrix,
                               np.eye(3), atol=1e-12)
    assert np.linalg.det(out.geometry.direction_matrix) == pytest.approx(1.0)


def test_lowercase_code_accepted(labelled) -> None:
    out, _ = reorient(labelled("RAS"), "lps")
    assert orientation_code(out.geometry) == "LPS"


def test_reorient_returns_view_of_input(labelled) -> None:
    image = labelled("PIL")
    out, _ = reorient(image, "LPS")
    assert np.shares_memory(out.array, image.array)


@pytest.mark.parametrize("code", ["XYZ", "LLS", "LP", "LPSR", "", "LRS", "PPS", "L P"])
def test_invalid_codes(labelled, code: str) -> None:
    with pytest.raises(InputError, match=rf"orientation code must name three different axes .*got {code.upper()!r}"):
        reorient(labelled("RAS"), code)
