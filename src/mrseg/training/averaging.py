"""Weight-space averages of nnU-Net v2 model folders: a model and its fine-tune, or several fine-tunes.

Networks fine-tuned from one starting point stay in one basin of the loss, so the average of
their weights is itself a working network. Averaging a model with its fine-tune (WiSE-FT,
Wortsman et al. 2022) tends to keep what the fine-tune gained on its own training data and
what the starting model did well on data neither saw; averaging several fine-tunes (a
"uniform soup") tends to beat each of them. Networks trained from different random starts
do not average: the result is garbage, and nothing here can tell.

The averaged folder is a standard nnU-Net v2 model folder (the first source's ``plans.json``
and ``dataset.json``, one ``fold_K/checkpoint_final.pth`` per fold) plus ``averaging.json``,
which names the sources and their shares.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

from mrseg.errors import ModelError
from mrseg.model.checkpoint import each_tensor_once, read_checkpoint, save_checkpoint
from mrseg.model.loader import Model, load_model

log = logging.getLogger(__name__)

RECORD_NAME = "averaging.json"
"""The file in an averaged folder that names its sources and their shares."""


def average_models(
    folders: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    shares: Sequence[float] | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
) -> Path:
    """Write the weighted average of the weights of ``folders`` to the model folder ``out``.

    Every fold is averaged with the same fold of the other folders. Floating-point tensors are
    summed in float64 and stored in their own type; any other tensor (a counter) must be equal
    in every source. The folder appears under its final name only when complete.

    Args:
        folders: two or more model folders with the same labels, input channels, folds and
            inference settings (architecture, patch size, spacing, normalisation, resampling);
            they should be fine-tunes of one model, or that model and its fine-tunes.
        out: the new model folder; must not exist yet.
        shares: one non-negative weight per folder (default: equal); divided by their sum.
        checkpoint_name: the checkpoint to average in each ``fold_K``.

    Returns:
        ``out``.

    Raises:
        ModelError: fewer than two folders, bad shares, ``out`` exists, or the folders differ in
            labels, channels, folds, inference settings or the names and shapes of their weights.

    Example:
        >>> average_models(["base", "base_finetuned"], out="base_wise", shares=[0.5, 0.5])  # doctest: +SKIP
    """
    target = Path(out)
    if len(folders) < 2:
        raise ModelError(f"averaging needs at least two model folders, got {len(folders)}")
    fractions = _normalised(shares, len(folders))
    if target.exists():
        raise ModelError(f"{target} exists; choose a new folder for the averaged model or remove it")
    models = [load_model(folder, checkpoint_name=checkpoint_name) for folder in folders]
    _check_compatible(models)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.averaging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        first = models[0].folder
        shutil.copyfile(first / "plans.json", staging / "plans.json")
        shutil.copyfile(first / "dataset.json", staging / "dataset.json")
        for index, fold in enumerate(models[0].folds):
            (staging / f"fold_{fold}").mkdir()
            _write_average([m.checkpoints[index].path for m in models], fractions,
                           staging / f"fold_{fold}" / checkpoint_name)
        record = {"sources": [str(Path(m.folder).resolve()) for m in models], "shares": fractions,
                  "folds": list(models[0].folds), "checkpoint": checkpoint_name}
        (staging / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("averaged %s with shares %s into %s", ", ".join(str(m.folder) for m in models),
             ", ".join(f"{s:.3g}" for s in fractions), target)
    return target


def _normalised(shares: Sequence[float] | None, count: int) -> list[float]:
    if shares is None:
        return [1.0 / count] * count
    if len(shares) != count:
        raise ModelError(f"got {len(shares)} shares for {count} model folders; give one share per folder")
    if any(not s >= 0 for s in shares) or sum(shares) <= 0:  # `not s >= 0` also catches NaN
        raise ModelError(f"shares must be non-negative numbers with a positive sum, got {list(shares)}")
    total = float(sum(shares))
    return [float(s) / total for s in shares]


def _check_compatible(models: Sequence[Model]) -> None:
    """The folders must predict the same labels from the same input in the same way."""
    first = models[0]
    for model in models[1:]:
        where = f"{first.folder} and {model.folder}"
        if model.dataset.labels != first.dataset.labels:
            raise ModelError(f"{where} predict different labels; only models with one dataset.json can be averaged")
        if model.dataset.channel_names != first.dataset.channel_names:
            raise ModelError(f"{where} take different input channels ({first.dataset.channel_names} vs "
                             f"{model.dataset.channel_names})")
        if model.folds != first.folds:
            raise ModelError(f"{first.folder} has folds {', '.join(first.folds)} but {model.folder} has "
                             f"{', '.join(model.folds)}; average folders with the same folds")
        if model.configuration != first.configuration:
            raise ModelError(f"{where} differ in configuration {first.configuration.name!r} (architecture, patch "
                             "size, spacing, normalisation or resampling); only fine-tunes of one model average")
        if (model.plans.transpose_forward, model.plans.transpose_backward) != \
                (first.plans.transpose_forward, first.plans.transpose_backward):
            raise ModelError(f"{where} transpose the image differently (transpose_forward/backward in plans.json)")
        uses_statistics = "CTNormalization" in first.configuration.normalization_schemes
        if uses_statistics and model.plans.intensity_properties != first.plans.intensity_properties:
            raise ModelError(f"{where} normalise CT with different intensity statistics (plans.json "
                             "foreground_intensity_properties_per_channel); their inputs differ")


def _write_average(paths: Sequence[Path], fractions: Sequence[float], target: Path) -> None:
    import torch

    checkpoints = [read_checkpoint(path) for path in paths]
    states: list[dict[str, Any]] = [c["network_weights"] for c in checkpoints]
    reference = states[0]
    for path, state in zip(paths[1:], states[1:]):
        if list(state) != list(reference):
            unmatched = sorted(set(reference) ^ set(state))
            first = unmatched[0] if unmatched else "the same names in another order"
            raise ModelError(f"{path} and {paths[0]} hold different weights (first difference: {first}); "
                             "only fine-tunes of one model average")
        for key, value in state.items():
            if tuple(value.shape) != tuple(reference[key].shape):
                raise ModelError(f"{path}: weight {key} has shape {tuple(value.shape)}, {paths[0]} "
                                 f"{tuple(reference[key].shape)}; only fine-tunes of one model average")

    def average(key: str, value: Any) -> Any:
        if value.is_floating_point():
            total = sum(float(f) * state[key].to(torch.float64) for f, state in zip(fractions, states))
            return total.to(value.dtype)  # type: ignore[union-attr]
        for path, state in zip(paths[1:], states[1:]):
            if not torch.equal(state[key], value):
                raise ModelError(f"{path}: {key} differs from {paths[0]}'s and cannot be averaged")
        return value.clone()

    averaged = each_tensor_once(reference, average)
    save_checkpoint({**checkpoints[0], "network_weights": averaged}, target)


__all__ = ["RECORD_NAME", "average_models"]
