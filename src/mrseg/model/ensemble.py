"""Making an ensemble folder: nnU-Net v2 models trained on different grids, run as one model.

nnU-Net ensembles configurations (``3d_fullres`` with ``3d_lowres``, say) by predicting with
each and averaging the class probabilities (``nnUNetv2_ensemble``). An mrseg ensemble folder
does the same in one pass: the first model's plans, dataset and folds at the top (a complete nnU-Net v2 model
folder, which nnU-Net and ``load_model(..., ensemble=False)`` load alone), every further model
under ``members/``, and ``mrseg_ensemble.json`` naming them
(:data:`~mrseg.model.loader.ENSEMBLE_FILE`). The engine
(:class:`~mrseg.inference.segmenter.Segmenter`) runs each member on its own grid and averages
the probabilities on the finest one. Unlike a weight average (:mod:`mrseg.training.averaging`),
the members need not share a grid, an architecture or a starting point; they must predict the
same labels from the same input channels, with the image's axes in the same order.

:func:`extract_network` does the reverse for one network: the folder's own model, or one member,
written as a model folder of its own (to fine-tune it, or to ensemble it with another).

``half=True`` stores every member's weights in float16: half the size (the bundled demo model
is two members in 15 MB), run in float32 as before; the labels can differ from the float32
weights' where two classes are nearly tied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from mrseg.errors import ModelError
from mrseg.model.checkpoint import in_half_precision, read_checkpoint, save_checkpoint
from mrseg.model.loader import ENSEMBLE_FILE, Model, ensemble_members, ensemble_mismatch, load_model

log = logging.getLogger(__name__)

MEMBERS_FOLDER = "members"
"""Where an ensemble folder keeps the models after the first."""


def make_ensemble(
    folders: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    half: bool = False,
    descriptions: Sequence[str] | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
) -> Path:
    """Write the ensemble of the model folders ``folders`` to the new folder ``out``.

    Args:
        folders: two or more nnU-Net v2 model folders with one ``dataset.json`` (labels and
            input channels); the first becomes the folder's own model, the others its members
            (every fold of each).
        out: the ensemble folder; must not exist yet. It appears under its final name only when
            complete and loadable.
        half: store the weights in float16.
        descriptions: one line per folder, in order, written to ``mrseg_ensemble.json``'s
            ``sources`` in place of the folders' absolute paths (what a folder that is shipped
            should say: how each network was made, not where it lay on one machine).
        checkpoint_name: the checkpoint taken from each ``fold_K``.

    Returns:
        ``out``.

    Raises:
        ModelError: fewer than two folders, ``out`` exists, a folder is no model or is an
            ensemble itself, the folders differ in labels, input channels or axis order, or
            ``descriptions`` does not give one line per folder.

    Example:
        >>> make_ensemble(["models/demo_6mm", "models/demo_5mm"], out="models/demo", half=True)  # doctest: +SKIP
    """
    target = Path(out)
    if len(folders) < 2:
        raise ModelError(f"an ensemble needs at least two model folders, got {len(folders)}")
    if target.exists():
        raise ModelError(f"{target} exists; choose a new folder for the ensemble or remove it")
    if descriptions is not None and len(descriptions) != len(folders):
        raise ModelError(f"{len(descriptions)} descriptions for {len(folders)} model folders; give one per folder, "
                         "in the folders' order")
    models = [_member(folder, checkpoint_name) for folder in folders]
    first = models[0]
    for model in models[1:]:
        mismatch = ensemble_mismatch(first.plans, first.dataset, model)
        if mismatch:
            raise ModelError(f"{model.folder} {mismatch} against {first.folder}; an ensemble's models must agree")

    names = _member_names(models[1:])
    with _written_whole(target, "ensemble", checkpoint_name) as staging:
        for model, place in zip(models, [staging, *(staging / MEMBERS_FOLDER / name for name in names)]):
            _copy_model(model, place, half=half, checkpoint_name=checkpoint_name)
        record = {"members": [f"{MEMBERS_FOLDER}/{name}" for name in names],
                  "sources": (list(descriptions) if descriptions is not None
                              else [str(Path(m.folder).resolve()) for m in models]),
                  "configurations": [f"{m.configuration.name}, spacing {m.configuration.spacing}" for m in models],
                  "weights": "float16" if half else "as trained"}
        (staging / ENSEMBLE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("ensemble of %s written to %s", ", ".join(str(m.folder) for m in models), target)
    return target


def extract_network(
    folder: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str],
    member: str | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
) -> Path:
    """Write one network of the ensemble folder ``folder`` as a model folder of its own, ``out``.

    Args:
        folder: an ensemble folder (one with ``mrseg_ensemble.json``).
        out: the new model folder; must not exist yet. It appears under its final name only when
            complete and loadable.
        member: which network: ``None`` for the folder's own model (the one nnU-Net loads alone),
            or a member's name as ``mrseg_ensemble.json`` gives it (``members/4mm``) or its last
            part (``4mm``).
        checkpoint_name: the checkpoint taken from each ``fold_K``.

    Returns:
        ``out``.

    Raises:
        ModelError: ``folder`` is no ensemble folder, ``member`` names none of its members, or
            ``out`` exists.

    The plans, dataset and every fold's checkpoint are copied byte for byte (float16 stays
    float16), as :func:`make_ensemble` took them; the folder's other files (``postprocessing.json``,
    the model card) describe the ensemble and stay with it.

    Example:
        >>> extract_network("src/mrseg/models/demo", out="work/demo_6mm")  # doctest: +SKIP
    """
    target = Path(out)
    members = ensemble_members(folder)
    if not members:
        raise ModelError(f"{folder} is not an ensemble folder (no {ENSEMBLE_FILE}); it is a model folder of its own "
                         "already")
    if target.exists():
        raise ModelError(f"{target} exists; choose a new folder for the network or remove it")
    if member is None:
        source = Path(folder)
    else:
        names = [path.relative_to(folder).as_posix() for path in members]
        chosen = [path for path, name in zip(members, names) if member in (name, Path(name).name)]
        if not chosen:
            raise ModelError(f"{folder} has no member {member!r}; its members are {', '.join(names)}")
        source = chosen[0]
    model = load_model(source, checkpoint_name=checkpoint_name, ensemble=False)
    with _written_whole(target, "network", checkpoint_name) as staging:
        _copy_model(model, staging, half=False, checkpoint_name=checkpoint_name)
    log.info("%s of %s written to %s", member or "the folder's own network", folder, target)
    return target


@contextlib.contextmanager
def _written_whole(target: Path, purpose: str, checkpoint_name: str) -> Iterator[Path]:
    """A hidden folder beside ``target`` to write a model folder into: renamed to ``target`` once it
    loads, removed on any failure (a folder that loads, or nothing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{purpose}-{uuid.uuid4().hex[:8]}")
    try:
        yield staging
        load_model(staging, checkpoint_name=checkpoint_name)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _member(folder: str | os.PathLike[str], checkpoint_name: str) -> Model:
    if ensemble_members(folder):
        raise ModelError(f"{folder} is an ensemble itself ({ENSEMBLE_FILE}); ensembles do not nest, give its "
                         "member folders instead ('mrseg weights extract' writes its own network as one)")
    return load_model(folder, checkpoint_name=checkpoint_name, ensemble=False)


def _member_names(models: Sequence[Model]) -> list[str]:
    """A folder name per member: its source folder's name, numbered where two share one."""
    names: list[str] = []
    for index, model in enumerate(models, start=1):
        name = model.folder.resolve().name
        names.append(name if name not in names else f"{name}_{index}")
    return names


def _copy_model(model: Model, place: Path, *, half: bool, checkpoint_name: str) -> None:
    """``model``'s plans, dataset and folds into the new folder ``place``."""
    place.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copyfile(model.folder / name, place / name)
    for fold, checkpoint in zip(model.folds, model.checkpoints):
        (place / f"fold_{fold}").mkdir()
        target = place / f"fold_{fold}" / checkpoint_name
        if half:
            source = read_checkpoint(checkpoint.path)
            save_checkpoint({**source, "network_weights": in_half_precision(source["network_weights"])}, target)
        else:
            shutil.copyfile(checkpoint.path, target)


__all__ = ["MEMBERS_FOLDER", "extract_network", "make_ensemble"]
