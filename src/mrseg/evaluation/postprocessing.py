"""Deciding a model's postprocessing as nnU-Net decides it, from predictions and their references.

nnU-Net (``determine_postprocessing``, run by ``nnUNetv2_find_best_configuration`` on the
cross-validation predictions) tries two kinds of step, each on the result of the steps kept so far:

1. keep only the largest connected component of all foreground labels together; kept when the
   foreground mean Dice rises and no label's mean Dice falls;
2. then, label by label in order, keep only the largest component of that label; kept when that
   label's mean Dice rises.

Dice is nnU-Net's: per case and label ``2 TP / (2 TP + FP + FN)``, undefined (NaN) where the label
is in neither map; a label's mean is over the cases where it is defined, the foreground mean is
the mean of the labels' means (NaN when one label is nowhere, so that step 1 is then never kept).
:func:`determine_postprocessing` gives the steps nnU-Net would keep (checked against nnU-Net's own
function in the tests) and :func:`~mrseg.model.postprocessing.write_postprocessing` writes them
where :func:`~mrseg.model.load_model` reads them.

Example:
    >>> import numpy as np
    >>> truth = np.array([[[1, 1, 1, 0, 0, 0]]], np.uint8)
    >>> stray = np.array([[[1, 1, 1, 0, 0, 1]]], np.uint8)
    >>> determine_postprocessing([(stray, truth)], [1]).steps
    (KeepLargestComponent(labels=(1,)),)
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from mrseg.evaluation.metrics import dice
from mrseg.model.postprocessing import KeepLargestComponent, Postprocessing
from mrseg.postprocess import keep_largest_components

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostprocessingDecision:
    """The steps kept and the mean Dice per label before and after them.

    Attributes:
        steps: the steps kept, in the order they are applied.
        dice_before, dice_after: label → mean Dice over the cases (NaN where never defined).
        tried: every step tried, in order, with whether it was kept.
    """

    steps: Postprocessing
    dice_before: dict[int, float]
    dice_after: dict[int, float]
    tried: tuple[tuple[KeepLargestComponent, bool], ...] = field(default=())

    @staticmethod
    def foreground_mean(dice: dict[int, float]) -> float:
        """nnU-Net's foreground mean: the mean of the labels' means (NaN if one is NaN)."""
        return float(np.mean(list(dice.values()))) if dice else float("nan")

    def summary(self) -> dict[str, object]:
        """The Dice before and after as nnU-Net's ``postprocessing.json`` keeps them."""
        def block(dice: dict[int, float]) -> dict[str, object]:
            return {"foreground_mean": {"Dice": _finite_or_none(self.foreground_mean(dice))},
                    "mean": {str(label): {"Dice": _finite_or_none(value)} for label, value in dice.items()}}
        return {"input_folder": block(self.dice_before), "postprocessed": block(self.dice_after)}


def case_dice(predicted: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """nnU-Net's per-case Dice of each label (NaN where the label is in neither map)."""
    if predicted.shape != reference.shape:
        raise ValueError(f"prediction of shape {predicted.shape} against a reference of shape {reference.shape}")
    return {label: dice(predicted == label, reference == label) for label in labels}


def determine_postprocessing(
    cases: Iterable[tuple[np.ndarray, np.ndarray]], labels: Iterable[int]
) -> PostprocessingDecision:
    """The postprocessing steps nnU-Net keeps for these predictions (module docstring).

    The cases are read once, one at a time (a generator that reads files keeps one case in
    memory): a label's own step changes only that label's voxels, so every Dice the decision
    compares is known from each case's labels as predicted, after the all-foreground step, and
    after each label's step on either of those.

    Args:
        cases: (predicted label map, reference label map) pairs on one grid each.
        labels: the foreground label values, in the order nnU-Net tries them (dataset.json's).

    Raises:
        ValueError: no cases, no labels, or a pair on two grids.
    """
    labels = [int(v) for v in labels]
    if not labels:
        raise ValueError("deciding postprocessing needs at least one case and one label")
    everything = KeepLargestComponent(tuple(labels))
    # per case: Dice as predicted, after the all-foreground step, and of each label after its own
    # step on either (plain, whole); only the numbers are kept
    plain: list[dict[int, float]] = []
    whole: list[dict[int, float]] = []
    own_plain: list[dict[int, float]] = []
    own_whole: list[dict[int, float]] = []
    for predicted, reference in cases:
        predicted, reference = np.asarray(predicted), np.asarray(reference)
        one_piece = keep_largest_components(predicted, [everything])
        plain.append(case_dice(predicted, reference, labels))
        whole.append(case_dice(one_piece, reference, labels))
        if len(labels) > 1:
            own_plain.append(_own_step_dice(predicted, reference, labels))
            own_whole.append(_own_step_dice(one_piece, reference, labels))
    if not plain:
        raise ValueError("deciding postprocessing needs at least one case and one label")
    before = _means(plain, labels)
    steps: list[KeepLargestComponent] = []
    tried: list[tuple[KeepLargestComponent, bool]] = []

    means = _means(whole, labels)
    keep = (PostprocessingDecision.foreground_mean(means) > PostprocessingDecision.foreground_mean(before)
            and not any(means[v] < before[v] for v in labels))
    tried.append((everything, keep))
    log.info("largest component of all foreground: %s", "kept" if keep else "not kept")
    if keep:
        steps.append(everything)
    current, own = (means, own_whole) if keep else (dict(before), own_plain)

    if len(labels) > 1:
        own_means = _means(own, labels)
        for label in labels:
            step = KeepLargestComponent((label,))
            keep = own_means[label] > current[label]
            tried.append((step, keep))
            log.info("largest component of label %d: %s (Dice %.5f, with it %.5f)", label,
                     "kept" if keep else "not kept", current[label], own_means[label])
            if keep:
                steps.append(step)
                current[label] = own_means[label]
    return PostprocessingDecision(tuple(steps), before, current, tuple(tried))


def _own_step_dice(predicted: np.ndarray, reference: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Each label's Dice after keeping only its own largest component. The step only clears voxels
    of the label inside its predicted box, so only that box is copied and searched; the
    reference's label sizes come from one count over the whole map."""
    from scipy import ndimage

    boxes = ndimage.find_objects(predicted)
    reference_sizes = np.bincount(reference.ravel(), minlength=max(labels) + 1)
    scores = {}
    for label in labels:
        box = boxes[label - 1] if label - 1 < len(boxes) else None
        if box is None:  # not predicted: the step changes nothing
            scores[label] = 0.0 if reference_sizes[label] else float("nan")
            continue
        kept = keep_largest_components(predicted[box], [KeepLargestComponent((label,))]) == label
        overlap = int(np.count_nonzero(kept & (reference[box] == label)))
        scores[label] = 2 * overlap / (int(np.count_nonzero(kept)) + int(reference_sizes[label]))
    return scores


def _means(per_case: list[dict[int, float]], labels: Sequence[int]) -> dict[int, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a label defined in no case: its mean is NaN
        return {label: float(np.nanmean([scores[label] for scores in per_case])) for label in labels}


def _finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


__all__ = ["PostprocessingDecision", "case_dice", "determine_postprocessing"]
