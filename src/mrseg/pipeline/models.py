"""A model as the pipeline needs it: a pure description, loaded once per process, with an identity.

:class:`ModelSpec` says which model folder and which settings; :func:`load` turns it into a
:class:`LoadedModel` (a :class:`~mrseg.inference.Segmenter` plus what identifies its labels) and
keeps it, so a process that runs many cases (a batch, a cohort worker) loads each model once.
Names of published or bundled models are resolved before a spec is made (by the CLI or
:func:`mrseg.segment`): the pipeline only loads folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mrseg.inference.segmenter import DEFAULT_ORIENTATION, Segmentation, Segmenter
from mrseg.io.image import Image
from mrseg.model.postprocessing import Postprocessing
from mrseg.postprocess import apply_postprocessing

CHECKPOINTS = ("final", "best")


@dataclass(frozen=True)
class ModelSpec:
    """Which model and how to run it.

    Attributes:
        folder: the nnU-Net v2 model folder.
        name: what the user called it (``base``, ``demo``, a path), for records.
        folds: folds to ensemble (None: every fold present).
        checkpoint: ``final`` or ``best``.
        step, tta, device, threads, precision, orientation, low_memory, ensemble: as
            :class:`~mrseg.inference.Segmenter` takes them (``ensemble=False``: a folder that names
            ensemble members runs its own model alone).
        confidence: also measure each class's mean winning probability (case records keep it;
            it does not change the labels, so it is not part of the settings).
        postprocessing: apply the steps of the folder's nnU-Net ``postprocessing.json`` (keep the
            largest connected component; :mod:`mrseg.model.postprocessing`) where it has one;
            False gives the labels as nnU-Net's predictor exports them.
    """

    folder: Path
    name: str | None = None
    folds: tuple[str, ...] | None = None
    checkpoint: str = "final"
    step: float = 0.5
    tta: bool = False
    device: str = "cpu"
    threads: int | None = None
    precision: str = "auto"
    orientation: str | None = DEFAULT_ORIENTATION
    low_memory: bool = False
    confidence: bool = False
    ensemble: bool = True
    postprocessing: bool = True


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A loaded model with what identifies its labels.

    Attributes:
        spec: what was asked for.
        segmenter: the engine.
        settings: everything that shapes the labels (checkpoint checksums, folds, configuration,
            step, mirroring, the precision actually used, orientation, device type). Two runs with
            equal settings give the same labels; case records store it to decide what is done.
        load_seconds: how long loading took.
    """

    spec: ModelSpec
    segmenter: Segmenter
    settings: dict[str, Any] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def classes(self) -> dict[str, int]:
        """The model's foreground classes, name → label value."""
        return dict(self.segmenter.model.dataset.foreground)

    @property
    def title(self) -> str:
        """The model's name as DICOM-SEG and label map headers show it (``demo``, ``base``, a folder's name)."""
        name = self.spec.name
        if not name or any(sep in name for sep in "/\\") or Path(name).exists():
            return self.segmenter.model.folder.name  # a path: its folder's name, not the whole path
        return name

    @property
    def postprocessing(self) -> Postprocessing:
        """The postprocessing steps this model applies (none when the spec turns them off)."""
        return self.segmenter.model.postprocessing if self.spec.postprocessing else ()

    def label(self, image: Image, *, source: str, on_tile: Callable[[int, int], None] | None = None) -> Segmentation:
        """Segment one image (see :meth:`mrseg.inference.Segmenter.run`), then apply the model's
        postprocessing steps (:attr:`postprocessing`; timed as ``postprocess``)."""
        segmentation = self.segmenter.run(image, source=source, on_tile=on_tile)
        steps = self.postprocessing
        if not steps:
            return segmentation
        clock = time.perf_counter()
        labels = apply_postprocessing(segmentation.labels, steps)
        timings = {**segmentation.timings, "postprocess": time.perf_counter() - clock}
        return dataclasses.replace(segmentation, labels=labels, timings=timings)

    def describe(self) -> dict[str, Any]:
        """The model as a run record shows it."""
        model = self.segmenter.model
        return {"folder": str(model.folder), "name": self.spec.name, "folds": list(model.folds),
                "configuration": model.configuration.name, "checkpoint": f"checkpoint_{self.spec.checkpoint}.pth",
                "sha256": self.settings["checkpoints"],
                **({"members": self.settings["members"]} if "members" in self.settings else {}),
                **({"postprocessing": [step.describe() for step in self.postprocessing]}
                   if self.postprocessing else {})}


_LOADED: dict[ModelSpec, LoadedModel] = {}


def load(spec: ModelSpec) -> LoadedModel:
    """The loaded model for ``spec``, loaded on first use in this process and kept.

    Raises:
        ModelError: the folder is not a usable model.
        InputError: a setting is out of range (step, threads, device, precision).
    """
    if spec in _LOADED:
        return _LOADED[spec]
    clock = time.perf_counter()
    segmenter = Segmenter(
        spec.folder,
        folds=list(spec.folds) if spec.folds is not None else None,
        checkpoint_name=f"checkpoint_{spec.checkpoint}.pth",
        device=spec.device,
        step=spec.step,
        tta=spec.tta,
        threads=spec.threads,
        orientation=spec.orientation,
        precision=spec.precision,
        reuse_memory=not spec.low_memory,
        confidence=spec.confidence,
        ensemble=spec.ensemble,
    )
    model = segmenter.model
    settings = {
        "checkpoints": {fold: _sha256(c.path) for fold, c in zip(model.folds, model.checkpoints)},
        "configuration": model.configuration.name,
        "step": segmenter.step,
        "mirror_axes": list(segmenter.mirror_axes) if segmenter.mirror_axes is not None else None,
        "precision": segmenter.precision,
        "device": segmenter.device.type,
        "orientation": segmenter.orientation,
    }
    if model.members:  # only then, so that the records of a plain model keep their settings
        settings["members"] = [
            {"folder": str(m.folder.relative_to(model.folder)), "configuration": m.configuration.name,
             "checkpoints": {fold: _sha256(c.path) for fold, c in zip(m.folds, m.checkpoints)}}
            for m in model.members]
    if spec.postprocessing and model.postprocessing:  # only then, as for the members
        settings["postprocessing"] = [list(step.labels) for step in model.postprocessing]
    loaded = LoadedModel(spec, segmenter, settings, time.perf_counter() - clock)
    _LOADED[spec] = loaded
    return loaded


def loaded_specs() -> list[ModelSpec]:
    """The specs of the models this process keeps loaded."""
    return list(_LOADED)


def forget_loaded() -> None:
    """Drop every model this process keeps (frees their memory)."""
    _LOADED.clear()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["CHECKPOINTS", "LoadedModel", "ModelSpec", "forget_loaded", "load", "loaded_specs"]
