"""Proof of fidelity: mrseg's labels against nnU-Net v2's own predictor on the same model and image."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.inference import Segmenter
from parity import assert_agrees, nnunet_labels, nnunet_predictor, phantom_image

ORIENTATIONS = ["RAS", "LPS", "PIL", "ASL", "oblique"]


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_mr_zscore_matches_nnunet_in_every_orientation(model_dir, kind, orientation):
    folder = model_dir(kind=kind)
    image = phantom_image(orientation, spacing=(1.2, 1.3, 4.0))
    predictor = nnunet_predictor(folder)
    ours = Segmenter(folder, precision="fp32").segment(image)
    assert ours.geometry == image.geometry
    assert ours.array.dtype == np.uint8
    assert_agrees(ours.array, nnunet_labels(predictor, image, reorient_to_lps=True))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 3.0), (2.0, 2.0, 2.0), (0.9, 1.1, 5.0)])
def test_plain_nnunet_behaviour_without_reorientation(model_dir, spacing):
    """orientation=None is nnU-Net's own predictor: the array axes go to the network as they are."""
    folder = model_dir()
    image = phantom_image("RAS", spacing=spacing)
    ours = Segmenter(folder, precision="fp32", orientation=None).segment(image)
    assert_agrees(ours.array, nnunet_labels(nnunet_predictor(folder), image, reorient_to_lps=False))


@pytest.mark.parametrize("kind", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_ct_normalisation_matches_nnunet(model_dir, kind):
    folder = model_dir(kind=kind, normalization="CTNormalization")
    image = phantom_image("LPS", spacing=(0.8, 0.8, 1.5), shape=(40, 56, 64), ct=True)
    ours = Segmenter(folder, precision="fp32").segment(image)
    assert_agrees(ours.array, nnunet_labels(nnunet_predictor(folder), image, reorient_to_lps=True))


def test_masked_zscore_transpose_and_inherited_configuration(model_dir):
    folder = model_dir(use_mask_for_norm=True, transpose=(2, 0, 1), configuration="3d_fullres_bs8")
    image = phantom_image("RAS", spacing=(1.3, 1.2, 3.5))
    ours = Segmenter(folder, precision="fp32").segment(image)
    assert_agrees(ours.array, nnunet_labels(nnunet_predictor(folder), image, reorient_to_lps=True))


def test_old_plans_format_matches_nnunet(model_dir):
    folder = model_dir(old_format=True)
    image = phantom_image("PIL")
    ours = Segmenter(folder, precision="fp32").segment(image)
    assert_agrees(ours.array, nnunet_labels(nnunet_predictor(folder), image, reorient_to_lps=True))


def test_fast_mode_single_fold_step_08(model_dir):
    folder = model_dir()
    image = phantom_image("RAS", shape=(30, 60, 52))
    ours = Segmenter(folder, precision="fp32", folds=[0], step=0.8).segment(image)
    predictor = nnunet_predictor(folder, folds=(0,), step=0.8)
    assert_agrees(ours.array, nnunet_labels(predictor, image, reorient_to_lps=True))


def test_mirroring_tta_where_checkpoint_allows_it(model_dir):
    folder = model_dir(mirror_axes=(0, 1, 2))
    image = phantom_image("LPS")
    segmenter = Segmenter(folder, precision="fp32", tta=True)
    assert segmenter.mirror_axes == (0, 1, 2)
    ours = segmenter.segment(image)
    predictor = nnunet_predictor(folder, mirroring=True)
    assert_agrees(ours.array, nnunet_labels(predictor, image, reorient_to_lps=True))


def test_tta_is_ignored_when_the_checkpoint_forbids_mirroring(model_dir, caplog):
    segmenter = Segmenter(model_dir(), precision="fp32", tta=True)
    assert segmenter.mirror_axes is None
    assert "does not allow mirroring" in caplog.text


def test_image_smaller_than_patch_is_padded_like_nnunet(model_dir):
    folder = model_dir()
    image = phantom_image("LPS", shape=(6, 20, 18), spacing=(1.5, 1.5, 3.0))
    ours = Segmenter(folder, precision="fp32").segment(image)
    assert_agrees(ours.array, nnunet_labels(nnunet_predictor(folder), image, reorient_to_lps=True), min_classes=1)


def test_bf16_precision_is_an_explicit_trade(model_dir):
    """bf16 autocast runs the network in bfloat16: close to float32, not identical."""
    from parity import agreement

    folder = model_dir()
    image = phantom_image("RAS")
    exact = Segmenter(folder, precision="fp32").segment(image).array
    fast = Segmenter(folder, precision="bf16").segment(image).array
    equal, dice = agreement(fast, exact)
    assert equal >= 0.99 and min(dice.values()) >= 0.95, (equal, dice)


def test_unknown_precision_is_refused(model_dir):
    from mrseg.errors import InputError

    with pytest.raises(InputError, match="precision must be auto or one of fp32, bf16, fp16"):
        Segmenter(model_dir(), precision="int8")
    assert Segmenter(model_dir()).precision == "fp32"  # auto on every CPU: no default that depends on the hardware
