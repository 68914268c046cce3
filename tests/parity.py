"""Helpers to compare mrseg with nnU-Net's own predictor on the same image."""

from __future__ import annotations

from typing import Sequence

import numpy as np

import model_factory
from mrseg.io.files import to_itk
from mrseg.io.image import Image
from mrseg.io.orientation import direction_from_code, orientation_code, rotation_matrix


def phantom_image(
    orientation: str,
    *,
    spacing: Sequence[float] = (1.2, 1.2, 4.0),
    shape: Sequence[int] = (24, 48, 40),
    seed: int = 5,
    ct: bool = False,
) -> Image:
    """A blob phantom whose axes point along ``orientation`` ("oblique" adds a rotation).

    ``spacing`` is ITK (x, y, z) order; ``shape`` numpy (z, y, x) order. ``ct``: in HU, such
    that CT normalisation with the test models' intensity properties (mean 40, sd 300, clipped
    to -1000..1500) gives the z-scored blob image the tiny models were trained on, so that they
    find their classes in it; a little air below the clip and a little metal above it make the
    clipping part of any comparison (a whole slab of clipped air made the models' outputs there
    near ties).
    """
    rng = np.random.default_rng(seed)
    image, _ = model_factory.blob_phantom(shape, spacing[::-1], rng)
    if ct:
        intensity = model_factory.CT_INTENSITY
        image = intensity["mean"] + intensity["std"] * (image - image.mean()) / image.std()
        middle = [n // 2 for n in shape]
        image[middle[0], middle[1] - 2:middle[1] + 2, 0] = intensity["percentile_00_5"] - 200.0
        image[middle[0], middle[1], middle[2] - 2:middle[2] + 2] = intensity["percentile_99_5"] + 500.0
    else:
        image = image * np.float32(100.0)
    if orientation == "oblique":
        las = np.asarray(direction_from_code("LAS")).reshape(3, 3)
        direction = tuple((rotation_matrix((18.0, -11.0, 7.0)) @ las).ravel())
    else:
        direction = direction_from_code(orientation)
    return Image.from_array(image.astype(np.float32), spacing=spacing, origin=(-31.5, 12.25, 80.0),
                            direction=direction)


def two_piece_image(orientation: str) -> Image:
    """:func:`phantom_image` with a smaller copy of its middle beside it, past a gap of background:
    the tiny models label two separate pieces (one piece alone, they label as one component)."""
    import dataclasses

    one = phantom_image(orientation)
    background = one.array.min()
    smaller = np.pad(one.array[:, 8:-8, 8:-8], ((0, 0), (8, 8), (0, 0)), constant_values=background)
    array = np.concatenate([one.array, np.full_like(one.array[:, :, :8], background), smaller], axis=2)
    return Image(array, dataclasses.replace(one.geometry, shape=array.shape))


def nnunet_pools_as_threads(monkeypatch) -> None:
    """Run nnU-Net's postprocessing and metrics pools as thread pools in this process: its own
    functions compute as they always do, without spawning interpreters that import nnU-Net again
    (about 6 s each here)."""
    import types
    from multiprocessing.pool import ThreadPool

    import nnunetv2.evaluation.evaluate_predictions as metrics_module
    import nnunetv2.postprocessing.remove_connected_components as postprocessing_module

    threads = types.SimpleNamespace(get_context=lambda method: types.SimpleNamespace(Pool=ThreadPool))
    for module in (metrics_module, postprocessing_module):
        monkeypatch.setattr(module, "multiprocessing", threads)


def nnunet_plans_manager(plans: dict):
    """nnU-Net v2's ``PlansManager`` for a plans.json dict (the reference for plans-driven steps)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(plans)


def nnunet_predictor(model_folder, *, folds=(0, 1), step: float = 0.5, mirroring: bool = False,
                     checkpoint_name: str = "checkpoint_final.pth"):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=step, use_gaussian=True, use_mirroring=mirroring,
        perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=folds,
                                                   checkpoint_name=checkpoint_name)
    return predictor


def nnunet_labels(predictor, image: Image, *, reorient_to_lps: bool) -> np.ndarray:
    """nnU-Net's labels for ``image``; with ``reorient_to_lps`` the image goes through
    SimpleITK's DICOMOrient as the published MRSegmentator does, and back."""
    import SimpleITK as sitk

    itk = to_itk(Image(image.array.astype(np.float32), image.geometry))
    if reorient_to_lps:
        itk = sitk.DICOMOrient(itk, "LPS")
    array = sitk.GetArrayFromImage(itk)[None].astype(np.float32)
    labels = predictor.predict_single_npy_array(array, {"spacing": list(itk.GetSpacing())[::-1]})
    if not reorient_to_lps:
        return labels
    label_itk = sitk.GetImageFromArray(labels.astype(np.uint8))
    label_itk.CopyInformation(itk)
    return sitk.GetArrayFromImage(sitk.DICOMOrient(label_itk, orientation_code(image.geometry)))


def agreement(ours: np.ndarray, theirs: np.ndarray, *, min_voxels: int = 1) -> tuple[float, dict[int, float]]:
    """Fraction of equal voxels and Dice per class present (``min_voxels`` or more) in either map."""
    assert ours.shape == theirs.shape
    equal = float((ours == theirs).mean())
    dice = {}
    for label in np.union1d(np.unique(ours), np.unique(theirs)):
        if label == 0:
            continue
        a, b = ours == label, theirs == label
        if max(a.sum(), b.sum()) < min_voxels:
            continue
        dice[int(label)] = float(2 * (a & b).sum() / (a.sum() + b.sum()))
    return equal, dice


def assert_agrees(ours: np.ndarray, theirs: np.ndarray, *, min_equal: float = 0.999, min_dice: float = 0.99,
                  min_classes: int = 3, min_voxels: int = 1) -> None:
    equal, dice = agreement(ours, theirs, min_voxels=min_voxels)
    assert len(dice) >= min_classes, f"too few classes predicted for a meaningful comparison: {dice}"
    assert equal >= min_equal, f"only {equal:.5f} of voxels agree; Dice {dice}"
    assert min(dice.values()) >= min_dice, f"Dice below {min_dice}: {dice}"
