"""From network-grid logits back to a label map on the input grid.

nnU-Net v2's export: resample the class logits to the cropped input size (linear, with the
separate-z rule), take the argmax, paste into the uncropped volume, undo the transpose.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrseg.inference.preprocess import Preprocessed
from mrseg.inference.resample import resampling_function
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
    best = np.empty(shape, dtype=np.float32)
    labels: np.ndarray = np.zeros(shape, dtype=dtype)
    for c in range(logits.shape[0]):
        channel = resample(
            logits[c : c + 1], shape, current_spacing=configuration.spacing, new_spacing=spacing, spec=spec
        )[0]
        if c == 0:
            best[...] = channel
            continue
        better = channel > best
        labels[better] = c
        np.maximum(best, channel, out=best)
    return labels
