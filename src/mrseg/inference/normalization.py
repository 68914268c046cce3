"""Per-channel intensity normalisation schemes named in plans.json, as nnU-Net v2 defines them."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mrseg.errors import InputError, ModelError
from mrseg.model.plans import IntensityProperties

_EPS = 1e-8

Normalizer = Callable[[np.ndarray, np.ndarray, bool, "IntensityProperties | None"], np.ndarray]


def zscore(image: np.ndarray, inside: np.ndarray, use_mask: bool, _: IntensityProperties | None) -> np.ndarray:
    """Zero mean, unit variance; with ``use_mask`` only inside the non-zero region (outside untouched)."""
    image = image.astype(np.float32, copy=False)
    if use_mask:
        mean = image[inside].mean()
        std = image[inside].std()
        image[inside] = (image[inside] - mean) / max(std, _EPS)
    else:
        mean = image.mean()
        std = image.std()
        image -= mean
        image /= max(std, _EPS)
    return image


def ct(image: np.ndarray, inside: np.ndarray, use_mask: bool, props: IntensityProperties | None) -> np.ndarray:
    """Clip to the training set's 0.5–99.5 percentiles of foreground HU, then standardise."""
    if props is None:
        raise ModelError("CTNormalization needs foreground_intensity_properties_per_channel in plans.json")
    image = image.astype(np.float32, copy=False)
    np.clip(image, props.percentile_00_5, props.percentile_99_5, out=image)
    image -= props.mean
    image /= max(props.std, _EPS)
    return image


def none(image: np.ndarray, inside: np.ndarray, use_mask: bool, _: IntensityProperties | None) -> np.ndarray:
    return image.astype(np.float32, copy=False)


def rescale_to_01(image: np.ndarray, inside: np.ndarray, use_mask: bool, _: IntensityProperties | None) -> np.ndarray:
    image = image.astype(np.float32, copy=False)
    image -= image.min()
    image /= np.clip(image.max(), a_min=_EPS, a_max=None)
    return image


def rgb_to_01(image: np.ndarray, inside: np.ndarray, use_mask: bool, _: IntensityProperties | None) -> np.ndarray:
    if image.min() < 0 or image.max() > 255:
        raise InputError("RGBTo01Normalization expects values in 0..255")
    image = image.astype(np.float32, copy=False)
    image /= 255.0
    return image


NORMALIZATIONS: dict[str, Normalizer] = {
    "ZScoreNormalization": zscore,
    "CTNormalization": ct,
    "NoNormalization": none,
    "RescaleTo01Normalization": rescale_to_01,
    "RGBTo01Normalization": rgb_to_01,
}
"""nnU-Net normalisation scheme names → implementations."""


def normalizer(scheme: str) -> Normalizer:
    try:
        return NORMALIZATIONS[scheme]
    except KeyError:
        raise ModelError(
            f"plans.json asks for normalisation {scheme!r}; supported: {', '.join(NORMALIZATIONS)}"
        ) from None
