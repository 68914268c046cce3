"""Axis reorientation: permute and flip voxel axes so they point along a named orientation.

Orientation codes use the DICOM/ITK convention: each letter names where that voxel axis
*points to*; ``"LPS"`` means i → patient left, j → posterior, k → superior (the identity
direction in the ITK world). nibabel's ``"RAS"`` is the same file as ITK's ``"RAS"`` here.

Only axes are permuted and flipped, so an oblique direction stays oblique (as SimpleITK's
``DICOMOrient`` does) and voxel values are never interpolated. Undoing a reorientation
restores the original geometry object itself, so the round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image

_PAIRS = {"L": "LR", "R": "LR", "P": "PA", "A": "PA", "S": "SI", "I": "SI"}


def orientation_code(geometry: Geometry) -> str:
    """The closest axis-aligned orientation code of a grid, e.g. ``"RAS"`` or ``"LPS"``.

    Uses SimpleITK's own rule, so an oblique grid gets the same code that
    ``SimpleITK.DICOMOrient`` (and so the published MRSegmentator) would give it.
    """
    import SimpleITK as sitk

    return str(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(list(geometry.direction)))


def _check_code(code: str) -> str:
    code = code.upper()
    if len(code) != 3 or any(c not in _PAIRS for c in code) or len({_PAIRS[c] for c in code}) != 3:
        raise InputError(f"orientation code must name three different axes like 'LPS' or 'RAS', got {code!r}")
    return code


@dataclass(frozen=True)
class Reorientation:
    """A permutation and flips of numpy axes that take ``source`` to ``target``.

    Attributes:
        source: geometry before reorientation (restored exactly by :meth:`undo_image`).
        target: geometry after reorientation.
        transpose: numpy axis order applied first.
        flip_axes: numpy axes (after transposing) that are reversed.
    """

    source: Geometry
    target: Geometry
    transpose: tuple[int, int, int]
    flip_axes: tuple[int, ...]

    @property
    def is_identity(self) -> bool:
        return self.transpose == (0, 1, 2) and not self.flip_axes

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Reorient a source-grid array (a view where possible)."""
        out = np.transpose(array, self.transpose)
        return np.flip(out, self.flip_axes) if self.flip_axes else out

    def undo(self, array: np.ndarray) -> np.ndarray:
        """Bring a target-grid array back onto the source grid."""
        out = np.flip(array, self.flip_axes) if self.flip_axes else array
        return np.transpose(out, np.argsort(self.transpose))

    def apply_image(self, image: Image) -> Image:
        return Image(self.apply(image.array), self.target)

    def undo_image(self, image: Image) -> Image:
        return Image(self.undo(image.array), self.source)


def plan_reorientation(geometry: Geometry, code: str) -> Reorientation:
    """Work out how to reorient ``geometry`` so its axes point along ``code``."""
    code = _check_code(code)
    current = orientation_code(geometry)
    directions = geometry.direction_matrix
    spacing = np.asarray(geometry.spacing)
    origin = np.asarray(geometry.origin, dtype=np.float64)
    size_itk = geometry.shape[::-1]

    new_columns, new_spacing, new_size = [], [], []
    transpose_np = [0, 0, 0]
    flips_np = []
    for b, letter in enumerate(code):  # b: target ITK axis
        a = next(a for a in range(3) if _PAIRS[current[a]] == _PAIRS[letter])
        flip = current[a] != letter
        column = directions[:, a]
        if flip:
            origin = origin + (size_itk[a] - 1) * spacing[a] * column
            column = -column
            flips_np.append(2 - b)
        new_columns.append(column)
        new_spacing.append(spacing[a])
        new_size.append(size_itk[a])
        transpose_np[2 - b] = 2 - a

    target = Geometry(
        shape=tuple(int(s) for s in new_size[::-1]),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in new_spacing),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in np.stack(new_columns, axis=1).ravel()),  # type: ignore[arg-type]
    )
    return Reorientation(geometry, target, tuple(transpose_np), tuple(sorted(flips_np)))  # type: ignore[arg-type]


def reorient(image: Image, code: str) -> tuple[Image, Reorientation]:
    """Reorient an image to ``code``; returns the new image and the step to undo it.

    Example:
        >>> import numpy as np
        >>> ras = Image.from_array(np.zeros((2, 3, 4)), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
        >>> lps, step = reorient(ras, "LPS")
        >>> orientation_code(lps.geometry)
        'LPS'
    """
    step = plan_reorientation(image.geometry, code)
    return step.apply_image(image), step


_AXIS_OF = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def direction_from_code(code: str) -> tuple[float, ...]:
    """The axis-aligned direction (row-major 3x3, ITK convention) of an orientation code.

    Example:
        >>> direction_from_code("RAS")
        (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    """
    code = _check_code(code)
    matrix = np.zeros((3, 3))
    for column, letter in enumerate(code):
        row, sign = _AXIS_OF[letter]
        matrix[row, column] = sign
    return tuple(float(v) for v in matrix.ravel())


def rotation_matrix(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """3x3 rotation about the world x, then y, then z axis (degrees); for oblique grids."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
