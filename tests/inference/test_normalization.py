"""Intensity normalisation (:mod:`mrseg.inference.normalization`) against nnU-Net v2's schemes."""

from __future__ import annotations

import numpy as np
import pytest

import model_factory
from mrseg.errors import InputError, ModelError
from mrseg.inference.normalization import NORMALIZATIONS, ct, none, normalizer, rescale_to_01, rgb_to_01, zscore
from mrseg.model.plans import IntensityProperties


def _volume(rng, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Random intensities inside a box, zeros around it, and the non-zero mask."""
    image = np.zeros((10, 12, 14), dtype)
    image[2:8, 3:10, 1:12] = (rng.standard_normal((6, 7, 11)) * 120 + 300).astype(dtype)
    return image, image != 0


def _nnunet_normalization(name: str, use_mask: bool, props: dict):
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    return getattr(schemes, name)(use_mask_for_norm=use_mask, intensityproperties=props)


@pytest.mark.parametrize("name, use_mask", [
    ("ZScoreNormalization", False), ("ZScoreNormalization", True), ("CTNormalization", False),
    ("CTNormalization", True), ("NoNormalization", False), ("RescaleTo01Normalization", False),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_normalization_equals_nnunet(rng, name, use_mask, dtype):
    image, inside = _volume(rng, dtype)
    props = {k: model_factory.CT_INTENSITY[k] for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
    ours = normalizer(name)(image.copy(), inside, use_mask, IntensityProperties(**props))
    seg = np.where(inside, 0, -1).astype(np.int8)  # nnU-Net's encoding of the non-zero mask
    theirs = _nnunet_normalization(name, use_mask, props).run(image.copy(), seg)
    assert ours.dtype == theirs.dtype == np.float32
    assert np.array_equal(ours, theirs)


def test_rgb_normalization_equals_nnunet(rng):
    image = rng.integers(0, 256, (4, 5, 6)).astype(np.float32)
    ours = rgb_to_01(image.copy(), image != 0, False, None)
    assert np.array_equal(ours, _nnunet_normalization("RGBTo01Normalization", False, {}).run(image.copy()))


def test_masked_zscore_leaves_the_outside_untouched(rng):
    image, inside = _volume(rng)
    out = zscore(image.copy(), inside, True, None)
    assert np.all(out[~inside] == 0)
    assert abs(out[inside].mean()) < 1e-5 and abs(out[inside].std() - 1) < 1e-5


def test_constant_image_does_not_divide_by_zero():
    image = np.full((3, 4, 5), 7.0, np.float32)
    assert np.all(np.isfinite(zscore(image.copy(), image != 0, False, None)))
    assert np.all(np.isfinite(rescale_to_01(image.copy(), image != 0, False, None)))


def test_ct_normalization_needs_intensity_properties():
    with pytest.raises(ModelError, match="CTNormalization needs foreground_intensity_properties_per_channel"):
        ct(np.zeros((2, 2, 2), np.float32), np.ones((2, 2, 2), bool), False, None)


def test_rgb_normalization_range_check():
    with pytest.raises(InputError, match="0..255"):
        rgb_to_01(np.full((2, 2, 2), 300.0, np.float32), np.ones((2, 2, 2), bool), False, None)


def test_unknown_normalization_lists_the_supported_ones():
    with pytest.raises(ModelError, match=r"'Foo'; supported: ZScoreNormalization, CTNormalization, NoNormalization, "
                                         r"RescaleTo01Normalization, RGBTo01Normalization"):
        normalizer("Foo")


def test_registry_names_are_nnunets():
    from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

    assert all(hasattr(schemes, name) for name in NORMALIZATIONS)
    assert normalizer("NoNormalization") is none
