"""Geometry and Image: validation, affines checked against nibabel and SimpleITK, round trips."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.errors import InputError
from mrseg.io import Geometry, Image, read_image, write_image
from mrseg.io.files import to_itk

ORIENTATIONS = ["RAS", "LPS", "LAS", "PIL", "ASL", "oblique"]
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _geometry(**changes: object) -> Geometry:
    values: dict[str, object] = dict(
        shape=(3, 4, 5), spacing=(0.7, 1.1, 3.3), origin=(1.0, 2.0, 3.0), direction=IDENTITY,
    )
    values.update(changes)
    return Geometry(**values)  # type: ignore[arg-type]


# --- validation ---------------------------------------------------------------------------------


def test_image_shape_must_match_geometry() -> None:
    with pytest.raises(InputError, match=r"array shape \(3, 4, 6\) does not match geometry shape \(3, 4, 5\)"):
        Image(np.zeros((3, 4, 6)), _geometry())


@pytest.mark.parametrize(("shape", "shown"), [((4, 5), r"\(4, 5\)"), ((2, 3, 4, 5), r"\(2, 3, 4, 5\)"),
                                              ((7,), r"\(7,\)")])
def test_from_array_must_be_3d(shape: tuple[int, ...], shown: str) -> None:
    # from_array builds the Geometry first, so the geometry check is the one that fires
    with pytest.raises(InputError, match=rf"must be 3-D, got .*shape {shown}"):
        Image.from_array(np.zeros(shape))


@pytest.mark.parametrize("shape", [(3, 4, 5, 1), (3, 20)])
def test_image_rejects_non_3d_array_with_3d_geometry(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=rf"image must be 3-D, got a {len(shape)}-D array"):
        Image(np.zeros(shape), _geometry())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"shape": (3, 4)}, "geometry must be 3-D"),
        ({"spacing": (1.0, 1.0)}, "geometry must be 3-D"),
        ({"origin": (0.0, 0.0, 0.0, 0.0)}, "geometry must be 3-D"),
        ({"direction": IDENTITY[:8]}, "direction must have 9 entries, got 8"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be positive"),
        ({"spacing": (1.0, 1.0, -2.0)}, "spacing must be positive"),
    ],
)
def test_geometry_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        _geometry(**changes)


def test_input_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Image.from_array(np.zeros((2, 2)))


# --- value semantics ----------------------------------------------------------------------------


def test_from_array_keeps_itk_order_and_spacing_zyx() -> None:
    img = Image.from_array(np.zeros((4, 5, 6), np.int16), spacing=(0.7, 1.1, 3.3), origin=(1, 2, 3))
    assert img.geometry.shape == (4, 5, 6)
    assert img.geometry.spacing == (0.7, 1.1, 3.3)
    assert img.geometry.spacing_zyx == (3.3, 1.1, 0.7)
    assert img.geometry.origin == (1.0, 2.0, 3.0)
    assert all(isinstance(v, float) for v in img.geometry.spacing + img.geometry.origin)


def test_with_array_and_with_geometry_do_not_mutate(make_image) -> None:
    img = make_image("PIL")
    before = img.array.copy()
    labels = img.with_array(np.ones(img.array.shape, np.uint8))
    assert labels.geometry is img.geometry
    moved = img.with_geometry(origin=(0.0, 0.0, 0.0))
    assert moved.geometry.origin == (0.0, 0.0, 0.0)
    assert img.geometry.origin != (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(img.array, before)
    with pytest.raises(InputError, match="does not match geometry shape"):
        img.with_array(np.zeros((1, 2, 3)))


def test_same_grid_tolerance() -> None:
    g = _geometry()
    assert g.same_grid(_geometry(origin=(1.0, 2.0, 3.0 + 1e-7)))
    assert not g.same_grid(_geometry(origin=(1.0, 2.0, 3.01)))
    assert not g.same_grid(_geometry(shape=(3, 4, 6)))
    assert not g.same_grid(_geometry(spacing=(0.7, 1.1, 3.4)))
    assert g.same_grid(_geometry(origin=(1.0, 2.0, 3.01)), atol=0.1)


# --- affines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_affine_ras_matches_nibabel(tmp_path, make_image, name: str) -> None:
    img = make_image(name)
    path = write_image(img, tmp_path / "scan.nii.gz")
    nib_img = nib.load(path)
    np.testing.assert_allclose(nib_img.affine, img.geometry.affine_ras, atol=1e-4, rtol=0)
    # the geometry read back from the file describes the same file as nibabel does
    back = read_image(path).geometry
    np.testing.assert_allclose(nib_img.affine, back.affine_ras, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib_img.affine, back.affine_lps,
                               atol=1e-4, rtol=0)
    assert nib_img.shape == img.array.shape[::-1]


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_affine_lps_matches_simpleitk_index_to_point(make_image, name: str) -> None:
    img = make_image(name)
    itk_image = to_itk(img)
    rng = np.random.default_rng(1)
    for ijk in rng.integers(0, np.array(img.array.shape[::-1]), size=(5, 3)):
        ours = img.geometry.affine_lps @ np.append(ijk, 1.0)
        reference = itk_image.TransformIndexToPhysicalPoint([int(v) for v in ijk])
        np.testing.assert_allclose(ours[:3], reference, atol=1e-9, rtol=0)
        assert ours[3] == 1.0


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_from_affine_lps_round_trip(make_image, name: str) -> None:
    geometry = make_image(name).geometry
    again = Geometry.from_affine_lps(geometry.affine_lps, geometry.shape)
    assert again.shape == geometry.shape
    np.testing.assert_allclose(again.spacing, geometry.spacing, atol=1e-12, rtol=0)
    np.testing.assert_allclose(again.origin, geometry.origin, atol=1e-12, rtol=0)
    np.testing.assert_allclose(again.direction, geometry.direction, atol=1e-12, rtol=0)
    assert again.same_grid(geometry, atol=1e-12)
    np.testing.assert_allclose(again.affine_lps, geometry.affine_lps, atol=1e-12, rtol=0)


def test_from_affine_lps_of_nibabel_affine(tmp_path, make_image) -> None:
    img = make_image("oblique")
    path = write_image(img, tmp_path / "scan.nii")
    nib_img = nib.load(path)
    geometry = Geometry.from_affine_lps(np.diag([-1.0, -1.0, 1.0, 1.0]) @ nib_img.affine,
                                        nib_img.shape[::-1])
    assert geometry.same_grid(img.geometry, atol=1e-4)


def test_from_affine_lps_types() -> None:
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (-1, -2, -3)
    geometry = Geometry.from_affine_lps(affine, np.array([5, 6, 7]))
    assert geometry == Geometry((5, 6, 7), (2.0, 3.0, 4.0), (-1.0, -2.0, -3.0), IDENTITY)
    assert all(type(s) is int for s in geometry.shape)


def test_direction_matrix_columns_are_voxel_axes() -> None:
    # i -> anterior (-y), j -> left (+x), k -> inferior (-z): "ALI"
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    geometry = _geometry(direction=direction)
    np.testing.assert_array_equal(geometry.direction_matrix[:, 0], [0.0, -1.0, 0.0])
    itk_image = sitk.Image(5, 4, 3, sitk.sitkUInt8)
    itk_image.SetDirection(direction)
    itk_image.SetSpacing(geometry.spacing)
    itk_image.SetOrigin(geometry.origin)
    np.testing.assert_allclose(geometry.affine_lps[:3, 3] + geometry.affine_lps[:3, 0],
                               itk_image.TransformIndexToPhysicalPoint((1, 0, 0)), atol=1e-12)
