"""Fixtures for the io tests: direction matrices from orientation names, seeded test volumes.

The real sample data comes from ``tests/conftest.py``'s ``shared_data`` (skips when absent).

Orientation names follow the DICOM/ITK convention of :mod:`mrseg.io.orientation`: each letter
says where that voxel axis points to in the LPS world (L = +x, P = +y, S = +z). The extra name
``"oblique"`` is an LAS grid rotated 20 degrees about z and then 10 degrees about x.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mrseg.io import Image

WORLD_AXIS = {
    "L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}
SPACING = (0.7, 1.1, 3.3)
ORIGIN = (12.5, -31.25, 47.0)
SHAPE = (7, 11, 13)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def direction_matrix(name: str) -> np.ndarray:
    """The 3x3 direction (columns = voxel axes in LPS world) for a code or ``"oblique"``."""
    if name == "oblique":
        return _rotation(0, 10.0) @ _rotation(2, 20.0) @ direction_matrix("LAS")
    return np.stack([np.asarray(WORLD_AXIS[letter]) for letter in name], axis=1)


@pytest.fixture
def direction_of() -> Callable[[str], tuple[float, ...]]:
    """Factory: orientation name -> row-major 9-tuple direction."""
    return lambda name: tuple(float(d) for d in direction_matrix(name).ravel())


@pytest.fixture
def make_image(direction_of: Callable[[str], tuple[float, ...]]) -> Callable[..., Image]:
    """Factory: a seeded random volume with anisotropic spacing, non-zero origin, given direction."""

    def make(name: str = "LPS", dtype: str = "int16", *, shape: tuple[int, int, int] = SHAPE,
             seed: int = 0) -> Image:
        rng = np.random.default_rng(seed)
        if np.dtype(dtype).kind == "f":
            array = rng.normal(0.0, 100.0, size=shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
        return Image.from_array(array, spacing=SPACING, origin=ORIGIN, direction=direction_of(name))

    return make
