"""Loading an nnU-Net v2 model folder: plans, dataset, and the weights of each fold.

A folder may also name **ensemble members** in ``mrseg_ensemble.json``: further nnU-Net v2 model
folders inside it (``{"members": ["members/4mm"]}``), trained on other grids, whose class
probabilities the engine averages with the folder's own (nnU-Net's ensembling of
configurations, done in one pass). The folder itself stays a complete nnU-Net v2 model: nnU-Net
and ``load_model(..., ensemble=False)`` see only its own folds.

This module only loads a folder it is given; turning a model name into a folder (bundled,
published, imported, ``$MRSEG_WEIGHTS_PATH``) is :mod:`mrseg.model.store`'s job.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mrseg.errors import ModelError
from mrseg.model.checkpoint import Checkpoint, load_checkpoint
from mrseg.model.networks import build_network, store_convolutions_in
from mrseg.model.plans import Configuration, DatasetInfo, Plans, read_dataset, read_plans
from mrseg.model.postprocessing import Postprocessing, find_postprocessing, read_postprocessing

log = logging.getLogger(__name__)

Fold = int | str

ENSEMBLE_FILE = "mrseg_ensemble.json"
"""The file in a model folder that names its ensemble members (folders relative to it)."""


@dataclass(frozen=True)
class Model:
    """A loaded model folder: everything needed to build and run its networks."""

    folder: Path
    plans: Plans
    dataset: DatasetInfo
    configuration: Configuration
    checkpoints: tuple[Checkpoint, ...] = field(repr=False)
    members: tuple[Model, ...] = field(default=(), repr=False)
    """Ensemble members named by :data:`ENSEMBLE_FILE` (each loaded with all its folds)."""
    postprocessing: Postprocessing = ()
    """nnU-Net's postprocessing steps for the folder's label maps (its ``postprocessing.json``;
    :func:`~mrseg.model.postprocessing.find_postprocessing`), applied by :mod:`mrseg.postprocess`.
    A member's own file is not applied: the folder's steps are for what the whole folder predicts."""

    @property
    def folds(self) -> tuple[str, ...]:
        return tuple(c.path.parent.name.removeprefix("fold_") for c in self.checkpoints)

    @property
    def mirror_axes(self) -> tuple[int, ...] | None:
        """Axes the checkpoint allows mirroring over at inference (None: never mirror)."""
        return self.checkpoints[0].mirror_axes

    @property
    def num_input_channels(self) -> int:
        return len(self.dataset.channel_names)

    def build_networks(self, device: Any = "cpu", *, conv_dtype: Any = None) -> list[Any]:
        """One network per fold, weights loaded, in eval mode on ``device``.

        On the CPU a float32 network uses the checkpoint's memory-mapped tensors directly
        (no copy of the weights is made); otherwise the weights are copied and the mapping is
        released. ``conv_dtype`` (``torch.bfloat16``, say) stores the convolution weights in
        that type (:func:`~mrseg.model.networks.store_convolutions_in`).
        """
        import torch

        networks = []
        for checkpoint in self.checkpoints:
            network = build_network(
                self.configuration.architecture,
                num_input_channels=self.num_input_channels,
                num_output_channels=self.dataset.num_segmentation_heads,
            )
            weights = checkpoint.read_weights()
            # Share the mapped file only where the network keeps float32 CPU weights; otherwise a
            # copy lets the mapping (and every page of it that was read) go with ``weights``.
            share = conv_dtype is None and torch.device(device).type == "cpu"
            try:
                network.load_state_dict(weights, assign=share)
            except RuntimeError as err:
                raise ModelError(
                    f"{checkpoint.path}: weights do not fit the network in {self.folder / 'plans.json'}: "
                    f"{str(err).splitlines()[0]}"
                ) from err
            del weights
            network = network.float()  # a checkpoint saved in half precision still runs in float32
            if conv_dtype is not None:
                store_convolutions_in(network, conv_dtype)
            networks.append(network.to(device).eval())
        return networks


def available_folds(folder: str | os.PathLike[str], checkpoint_name: str = "checkpoint_final.pth") -> list[str]:
    """Fold names (``"0"``, ``"1"``, ``"all"``) that have ``checkpoint_name`` in ``folder``."""
    folder = Path(folder)
    found = [p.parent.name.removeprefix("fold_") for p in folder.glob(f"fold_*/{checkpoint_name}")]
    return sorted(found, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def load_model(
    folder: str | os.PathLike[str],
    *,
    folds: Sequence[Fold] | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    ensemble: bool = True,
) -> Model:
    """Load an nnU-Net v2 model folder (``plans.json``, ``dataset.json``, ``fold_k/...``).

    Args:
        folder: the model folder.
        folds: which folds to ensemble; None means every fold that has the checkpoint.
        checkpoint_name: ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
        ensemble: also load the members its :data:`ENSEMBLE_FILE` names (every fold of each, the
            same ``checkpoint_name``); False loads the folder alone, as nnU-Net does.

    Raises:
        ModelError: missing files or folds, unknown architecture, label-count mismatch, a
            postprocessing file that is malformed or names other labels, an
            ensemble file that is malformed or names a folder that is missing, nested, or
            predicts other labels, from other input channels or with the axes in another order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        found = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ModelError(
            f"model folder {folder} {found}; pass a model folder (plans.json, dataset.json, fold_K/), "
            "or resolve a model name with mrseg.model.store.resolve_model_folder"
        )
    plans = read_plans(folder / "plans.json")
    dataset = read_dataset(folder / "dataset.json")
    available = available_folds(folder, checkpoint_name)
    if folds is None:
        if not available:
            raise ModelError(f"{folder} has no fold_*/{checkpoint_name}; is this a trained nnU-Net v2 model?")
        chosen = available
    else:
        chosen = [str(f) for f in folds]
        missing = [f for f in chosen if f not in available]
        if missing:
            raise ModelError(
                f"{folder} lacks fold(s) {', '.join(missing)} ({checkpoint_name}); available folds: "
                f"{', '.join(available) or 'none'}"
            )
    checkpoints = tuple(load_checkpoint(folder / f"fold_{f}" / checkpoint_name) for f in chosen)
    configuration = plans.configuration(checkpoints[0].configuration)
    if not configuration.is_3d:
        raise ModelError(f"{folder}: configuration {configuration.name!r} is 2-D; only 3-D models are supported")
    if configuration.previous_stage is not None:
        raise ModelError(f"{folder}: cascade stage {configuration.name!r} needs a previous stage; not supported")
    for checkpoint in checkpoints:
        if checkpoint.configuration != configuration.name:
            raise ModelError(
                f"{checkpoint.path} was trained with configuration {checkpoint.configuration!r}, "
                f"fold {chosen[0]} with {configuration.name!r}; folds of one ensemble must match"
            )
        heads = checkpoint.head_channels
        if heads is not None and heads != dataset.num_segmentation_heads:
            raise ModelError(
                f"label-count mismatch: {checkpoint.path} predicts {heads} classes but "
                f"{folder / 'dataset.json'} lists {dataset.num_segmentation_heads} (background included); "
                "use the dataset.json the model was trained with"
            )
    postprocessing_file = find_postprocessing(folder, chosen)
    postprocessing = read_postprocessing(postprocessing_file) if postprocessing_file is not None else ()
    for step in postprocessing:
        unknown = sorted(set(step.labels) - set(dataset.foreground.values()))
        if unknown:
            raise ModelError(f"{postprocessing_file}: label(s) {', '.join(map(str, unknown))} are not among the "
                             f"labels of {folder / 'dataset.json'}; it belongs to another model")
    members: tuple[Model, ...] = ()
    if ensemble:
        members = tuple(_load_member(folder, member, plans, dataset, checkpoint_name)
                        for member in ensemble_members(folder))
    log.info("loaded %s: configuration %s, folds %s%s", folder, configuration.name, ", ".join(chosen),
             "".join(f"; member {m.folder} ({m.configuration.name})" for m in members))
    return Model(folder, plans, dataset, configuration, checkpoints, members, postprocessing)


def ensemble_members(folder: str | os.PathLike[str]) -> list[Path]:
    """The member folders ``folder``'s :data:`ENSEMBLE_FILE` names (none without the file).

    Raises:
        ModelError: the file is not JSON, has no list of relative folder names under
            ``members``, names one twice, or names a folder outside ``folder``.
    """
    folder = Path(folder)
    path = folder / ENSEMBLE_FILE
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); restore it or delete it to use the folder alone") from err
    names = record.get("members") if isinstance(record, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ModelError(f'{path} must hold {{"members": ["FOLDER", ...]}}: one or more folder names relative to '
                         f"{folder}")
    if len(set(names)) != len(names):
        raise ModelError(f"{path} names a member twice ({', '.join(names)}); name each folder once")
    inside = folder.resolve()
    members = []
    for name in names:
        member = folder / name
        if Path(name).is_absolute() or inside not in member.resolve().parents:
            raise ModelError(f"{path}: member {name!r} is not a folder inside {folder}; members travel with it")
        members.append(member)
    return members


def ensemble_mismatch(plans: Plans, dataset: DatasetInfo, member: Model) -> str | None:
    """Why ``member`` cannot join an ensemble whose first model has ``plans`` and ``dataset``
    (None: it can). Members must predict the same labels from the same input channels, with the
    axes in the same order (their probabilities are averaged voxel by voxel)."""
    if member.dataset.labels != dataset.labels or member.dataset.channel_names != dataset.channel_names:
        return "predicts other labels or takes other input channels (dataset.json differs)"
    if member.plans.transpose_forward != plans.transpose_forward:
        return (f"orders the axes otherwise (transpose_forward {list(member.plans.transpose_forward)} against "
                f"{list(plans.transpose_forward)} in plans.json)")
    return None


def _load_member(folder: Path, member: Path, plans: Plans, dataset: DatasetInfo, checkpoint_name: str) -> Model:
    """One ensemble member, loaded alone and checked against the folder's own model."""
    if (member / ENSEMBLE_FILE).exists():
        raise ModelError(f"{member} has its own {ENSEMBLE_FILE}; ensembles do not nest, name its folders in "
                         f"{folder / ENSEMBLE_FILE} instead")
    if not member.is_dir():
        raise ModelError(f"{folder / ENSEMBLE_FILE} names {member}, which does not exist; restore the member "
                         "or remove it from the file")
    model = load_model(member, checkpoint_name=checkpoint_name, ensemble=False)
    mismatch = ensemble_mismatch(plans, dataset, model)
    if mismatch:
        raise ModelError(f"ensemble member {member} {mismatch} against {folder}; an ensemble's models must agree")
    return model
