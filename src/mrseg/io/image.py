"""The image value object: a voxel array that always carries its physical geometry.

Conventions (the only place they are defined):

* ``array`` is in numpy order ``(z, y, x)``: ``array[k, j, i]`` is voxel ``(i, j, k)``, exactly
  what ``SimpleITK.GetArrayFromImage`` returns.
* ``spacing``, ``origin`` and ``direction`` are in ITK order ``(x, y, z)`` and in the ITK/DICOM
  world (LPS: +x towards the patient's left, +y posterior, +z superior).
* ``direction`` is the row-major 3x3 matrix whose *columns* are the world directions of the
  i, j and k voxel axes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mrseg.errors import InputError


@dataclass(frozen=True)
class Geometry:
    """Shape and physical placement of a 3-D voxel grid.

    Attributes:
        shape: numpy shape ``(z, y, x)``.
        spacing: voxel size in mm, ITK order ``(x, y, z)``.
        origin: world position (LPS, mm) of voxel ``(0, 0, 0)``.
        direction: row-major 3x3 direction cosines; column ``a`` is voxel axis ``a``'s direction.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, float, float, float, float, float, float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or len(self.spacing) != 3 or len(self.origin) != 3:
            raise InputError(f"geometry must be 3-D, got shape {self.shape}, spacing {self.spacing}")
        if len(self.direction) != 9:
            raise InputError(f"direction must have 9 entries, got {len(self.direction)}")
        if min(self.spacing) <= 0:
            raise InputError(f"spacing must be positive, got {self.spacing}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in numpy axis order, as nnU-Net uses it."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel ``(i, j, k, 1)`` to LPS world ``(x, y, z, 1)``."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 voxel-to-RAS matrix, as nibabel reports it for the same file."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    def same_grid(self, other: Geometry, *, atol: float = 1e-5) -> bool:
        """Whether two grids coincide (same shape; spacing, origin, direction within ``atol``)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol, rtol=0)
            and np.allclose(self.origin, other.origin, atol=atol, rtol=0)
            and np.allclose(self.direction, other.direction, atol=atol, rtol=0)
        )

    def differences(self, other: Geometry, *, tolerance: float = 1e-4) -> list[str]:
        """How ``other`` differs from this grid beyond ``tolerance`` (relative to the spacing for
        spacing and origin, absolute for the direction cosines), as short phrases; empty when
        the grids match (a label map saved by another tool rounds the header a little)."""
        if self.shape != other.shape:
            return [f"shape {other.shape} vs {self.shape} (z, y, x)"]
        problems = []
        spacing = np.asarray(self.spacing)
        if np.any(np.abs(spacing - other.spacing) > tolerance * spacing):
            problems.append(f"spacing {other.spacing} vs {self.spacing} mm")
        if np.any(np.abs(np.subtract(self.origin, other.origin)) > tolerance * spacing.max() + 1e-6):
            problems.append(f"origin {other.origin} vs {self.origin} mm")
        if np.any(np.abs(np.subtract(self.direction, other.direction)) > tolerance):
            problems.append("direction cosines differ")
        return problems

    @classmethod
    def from_affine_lps(cls, affine: np.ndarray, shape: tuple[int, int, int]) -> Geometry:
        """Build a geometry from a voxel-to-LPS affine (columns scaled by spacing)."""
        affine = np.asarray(affine, dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        direction = affine[:3, :3] / spacing[None, :]
        return cls(
            shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            origin=tuple(float(o) for o in affine[:3, 3]),  # type: ignore[arg-type]
            direction=tuple(float(d) for d in direction.ravel()),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, eq=False)
class Image:
    """A 3-D volume and its geometry; ``array.shape`` always equals ``geometry.shape``.

    Example:
        >>> import numpy as np
        >>> img = Image.from_array(np.zeros((4, 5, 6)), spacing=(1.0, 1.0, 3.0))
        >>> img.geometry.spacing_zyx
        (3.0, 1.0, 1.0)
    """

    array: np.ndarray
    geometry: Geometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"image must be 3-D, got a {self.array.ndim}-D array of shape {self.array.shape}")
        if tuple(self.array.shape) != tuple(self.geometry.shape):
            raise InputError(f"array shape {self.array.shape} does not match geometry shape {self.geometry.shape}")

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        *,
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    ) -> Image:
        """Wrap a numpy ``(z, y, x)`` array; spacing/origin/direction in ITK ``(x, y, z)`` order."""
        array = np.asarray(array)
        if array.ndim != 3:
            raise InputError(f"image must be 3-D, got a {array.ndim}-D array of shape {array.shape}")
        geometry = Geometry(
            shape=tuple(int(s) for s in array.shape),  # type: ignore[arg-type]
            spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
            origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
            direction=tuple(float(d) for d in direction),  # type: ignore[arg-type]
        )
        return cls(array, geometry)

    def with_array(self, array: np.ndarray) -> Image:
        """A new image on the same grid with other voxel values (labels, say)."""
        return Image(array, self.geometry)

    def with_geometry(self, **changes: object) -> Image:
        return Image(self.array, replace(self.geometry, **changes))  # type: ignore[arg-type]
