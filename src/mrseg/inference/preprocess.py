"""From image channels to the network's input grid: transpose, crop, normalise, resample.

The order and arithmetic are nnU-Net v2's ``DefaultPreprocessor`` so that the network sees
the same numbers: transpose per plans, crop to the non-zero region (holes filled),
normalise each channel (before resampling, so the mask still fits), resample to the
configuration's spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from mrseg.inference.normalization import normalizer
from mrseg.inference.resample import new_shape_for_spacing, resampling_function
from mrseg.model.plans import Configuration, Plans

BBox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """The network-grid input and what is needed to map predictions back.

    Attributes:
        data: ``(C, z, y, x)`` float32 on the configuration's spacing.
        spacing: spacing of the transposed input before resampling (numpy order).
        shape_before_cropping: transposed input shape.
        bbox: half-open crop box in the transposed input.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    shape_before_cropping: tuple[int, int, int]
    bbox: BBox

    @property
    def shape_after_cropping(self) -> tuple[int, int, int]:
        return tuple(hi - lo for lo, hi in self.bbox)  # type: ignore[return-value]


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels non-zero in any channel, holes filled (nnU-Net's cropping mask)."""
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    return ndimage.binary_fill_holes(mask)


def bounding_box(mask: np.ndarray) -> BBox:
    """Half-open bounding box of a mask; the whole array when the mask is empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, mask.shape[axis]))
    return tuple(box)  # type: ignore[return-value]


def preprocess(
    channels: Sequence[np.ndarray],
    spacing: Sequence[float],
    *,
    plans: Plans,
    configuration: Configuration,
) -> Preprocessed:
    """Prepare one case for the network.

    Args:
        channels: one ``(z, y, x)`` array per input channel, all on the same grid.
        spacing: their spacing in numpy order ``(z, y, x)``.
        plans: the model's plans (transpose, intensity statistics).
        configuration: the configuration being run.

    Returns:
        The preprocessed case; the inputs are not modified.
    """
    data = np.stack([np.asarray(c, dtype=np.float32) for c in channels])
    forward = plans.transpose_forward
    data = data.transpose((0, *[a + 1 for a in forward]))
    spacing_t = tuple(float(spacing[a]) for a in forward)
    shape_before = tuple(int(s) for s in data.shape[1:])

    mask = nonzero_mask(data)
    bbox = bounding_box(mask)
    crop = tuple(slice(lo, hi) for lo, hi in bbox)
    data = np.ascontiguousarray(data[(slice(None),) + crop])
    inside = mask[crop]

    for c in range(data.shape[0]):
        scheme = normalizer(configuration.normalization_schemes[c])
        data[c] = scheme(data[c], inside, configuration.use_mask_for_norm[c], plans.intensity_properties.get(c))

    target = configuration.spacing
    new_shape = new_shape_for_spacing(data.shape[1:], spacing_t, target)
    resample = resampling_function(configuration.resampling_data)
    data = resample(
        data, new_shape, current_spacing=spacing_t, new_spacing=target, spec=configuration.resampling_data
    )
    return Preprocessed(
        data=np.ascontiguousarray(data, dtype=np.float32),
        spacing=spacing_t,  # type: ignore[arg-type]
        shape_before_cropping=shape_before,  # type: ignore[arg-type]
        bbox=bbox,
    )
