"""Resampling between the image grid and the network grid, following nnU-Net v2's rules.

nnU-Net resamples with scikit-image's ``resize`` (spline order 3 for images, 1 for class
logits) and, for strongly anisotropic data (largest/smallest spacing > 3), resamples each
slice in-plane and then the out-of-plane axis separately with nearest neighbour
(the "separate z" rule). The same arithmetic is done here with scipy directly
(``ndimage.zoom`` with ``grid_mode=True`` is exactly what ``skimage.transform.resize`` calls).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from mrseg.errors import ModelError
from mrseg.model.plans import Resampling

ANISOTROPY_THRESHOLD = 3.0
"""Spacing ratio above which nnU-Net resamples the out-of-plane axis separately."""


def new_shape_for_spacing(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Grid size after resampling, rounded as nnU-Net rounds it."""
    return tuple(int(round(s / n * k)) for s, n, k in zip(spacing, new_spacing, shape))


def _lowres_axis(spacing: Sequence[float]) -> list[int]:
    values = np.asarray(spacing, dtype=float)
    return [int(a) for a in np.where(values.max() / values == 1)[0]]


def separate_z_axis(
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    force_separate_z: bool | None,
) -> int | None:
    """The axis to resample separately (nearest neighbour), or None for plain 3-D resampling."""

    def anisotropic(spacing: Sequence[float]) -> bool:
        return max(spacing) / min(spacing) > ANISOTROPY_THRESHOLD

    if force_separate_z is not None:
        axes = _lowres_axis(current_spacing) if force_separate_z else []
    elif anisotropic(current_spacing):
        axes = _lowres_axis(current_spacing)
    elif anisotropic(new_spacing):
        axes = _lowres_axis(new_spacing)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)`` in float64.

    A float32 image is not converted first: scipy's spline filter reads it into float64 line
    by line, which gives the same numbers without a float64 copy of the whole image.
    """
    image = np.asarray(image)
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float64)
    zoom = [n / o for n, o in zip(shape, image.shape)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True, output=np.float64)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _resample_channel(
    channel: np.ndarray, shape: tuple[int, ...], order: int, axis: int | None, order_z: int
) -> np.ndarray:
    if axis is None:
        return resize(channel, shape, order)
    in_plane = tuple(s for a, s in enumerate(shape) if a != axis)
    stacked = np.stack(
        [resize(np.take(channel, i, axis=axis), in_plane, order) for i in range(channel.shape[axis])],
        axis=axis,
    )
    if stacked.shape[axis] == shape[axis]:
        return stacked
    # Out-of-plane axis: pixel-centre mapping (align_corners=False), as nnU-Net does.
    scales = [o / n for o, n in zip(stacked.shape, shape)]
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=False)
    coords = np.array([sc * (g + 0.5) - 0.5 for sc, g in zip(scales, grid)])
    return ndimage.map_coordinates(stacked, coords, order=order_z, mode="nearest")


def resample_to_shape(
    data: np.ndarray,
    shape: Sequence[int],
    *,
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    spec: Resampling,
) -> np.ndarray:
    """Resample every channel of ``data`` (``(C, z, y, x)``) to ``shape``; output keeps ``data.dtype``.

    Data that already has the target shape is returned unchanged (not copied), as in nnU-Net.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(data.shape[1:]) == shape:
        return data
    if spec.is_seg:
        raise ModelError("resampling of label maps through the plans' data path is not supported")
    axis = separate_z_axis(current_spacing, new_spacing, spec.force_separate_z)
    out = np.empty((data.shape[0], *shape), dtype=data.dtype)
    for c in range(data.shape[0]):
        out[c] = _resample_channel(data[c], shape, spec.order, axis, spec.order_z)
    return out


ResampleFn = Callable[..., np.ndarray]

RESAMPLING_FUNCTIONS: dict[str, ResampleFn] = {
    "resample_data_or_seg_to_shape": resample_to_shape,
}
"""Resampling functions named in plans.json that this package implements."""


def resampling_function(spec: Resampling) -> ResampleFn:
    try:
        return RESAMPLING_FUNCTIONS[spec.function]
    except KeyError:
        raise ModelError(
            f"plans.json asks for resampling function {spec.function!r}; supported: "
            f"{', '.join(RESAMPLING_FUNCTIONS)}"
        ) from None
