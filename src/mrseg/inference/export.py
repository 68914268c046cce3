"""From network-grid logits back to a label map on the input grid.

nnU-Net v2's export: resample the class logits to the cropped input size (linear, with the
separate-z rule), take the argmax, paste into the uncropped volume, undo the transpose.

Unlike nnU-Net, the classes are resampled one at a time into a running argmax, so memory
holds two full-resolution volumes rather than one per class. Plain trilinear resampling (the
usual case: order 1 without a separate z axis) runs in torch in float32, which gives the same
values as the float64 scipy path to about 1e-5 and is many times faster; other orders and the
separate-z rule use the scipy path (:mod:`mrseg.inference.resample`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrseg.inference.preprocess import Preprocessed
from mrseg.inference.resample import resampling_function, separate_z_axis
from mrseg.model.plans import Configuration, Plans


def logits_to_labels(
    logits: Any,
    case: Preprocessed,
    *,
    plans: Plans,
    configuration: Configuration,
) -> np.ndarray:
    """Label map (uint8, or uint16 past 254 classes) on the input grid, numpy ``(z, y, x)`` order.

    Args:
        logits: ``(heads, z, y, x)`` tensor or array on the network grid.
        case: the preprocessing record of the same case.
        plans: the model's plans.
        configuration: the configuration that produced the logits.
    """
    import torch

    array = logits.numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    num_heads = array.shape[0]
    dtype = np.uint8 if num_heads <= 255 else np.uint16
    target = case.shape_after_cropping
    if tuple(array.shape[1:]) == tuple(target):
        cropped = torch.from_numpy(np.ascontiguousarray(array)).argmax(0).numpy().astype(dtype)
    else:
        cropped = _resampled_argmax(array, target, configuration=configuration, spacing=case.spacing, dtype=dtype)
    labels = np.zeros(case.shape_before_cropping, dtype=dtype)
    labels[tuple(slice(lo, hi) for lo, hi in case.bbox)] = cropped
    return np.ascontiguousarray(labels.transpose(plans.transpose_backward))


def _resampled_argmax(
    logits: np.ndarray,
    shape: tuple[int, int, int],
    *,
    configuration: Configuration,
    spacing: tuple[float, float, float],
    dtype: type,
) -> np.ndarray:
    """Argmax of the logits resampled to ``shape``, one class channel at a time.

    Equals resampling every channel and then taking the argmax (ties go to the lower class,
    as with argmax), but holds two full-resolution volumes instead of one per class.
    """
    spec = configuration.resampling_probabilities
    resample = resampling_function(spec)
    trilinear = (
        spec.function == "resample_data_or_seg_to_shape" and spec.order == 1 and not spec.is_seg
        and separate_z_axis(configuration.spacing, spacing, spec.force_separate_z) is None
    )
    best = np.empty(shape, dtype=np.float32)
    labels: np.ndarray = np.zeros(shape, dtype=dtype)
    for c in range(logits.shape[0]):
        if trilinear:
            channel = trilinear_resize(logits[c], shape)
        else:
            channel = resample(
                logits[c : c + 1].astype(np.float32, copy=False), shape, current_spacing=configuration.spacing,
                new_spacing=spacing, spec=spec,
            )[0]
        if c == 0:
            best[...] = channel
            continue
        better = channel > best
        labels[better] = c
        np.maximum(best, channel, out=best)
    return labels


def trilinear_resize(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Linear resampling with pixel-centre alignment and edge clamping, in float32 (torch).

    The same mapping as ``skimage.transform.resize(order=1, mode="edge")``, which nnU-Net uses.
    """
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(volume)).to(torch.float32)[None, None]
    with torch.inference_mode():
        out = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0, 0].numpy()
