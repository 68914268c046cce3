"""nnU-Net's postprocessing file: which "keep the largest connected component" steps a model's
label maps get after the export.

``nnUNetv2_find_best_configuration`` decides them on the cross-validation predictions
(``nnunetv2.postprocessing.remove_connected_components.determine_postprocessing``) and writes
``postprocessing.json`` (names and arguments, read here) beside ``postprocessing.pkl`` (pickled
functions, never read: unpickling runs code) in ``crossval_results_folds_*/``, which
``nnUNetv2_export_model_to_zip`` ships with the model. mrseg reads the JSON from the model folder
itself or from that subfolder; :mod:`mrseg.postprocess` applies the steps and
:mod:`mrseg.evaluation.postprocessing` decides them as nnU-Net does.

Example:
    >>> KeepLargestComponent((2, 3)).describe()
    'keep the largest connected component of labels 2, 3 together'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mrseg.errors import ModelError

POSTPROCESSING_FILE = "postprocessing.json"
"""The file nnU-Net writes its postprocessing decision to (names and arguments of the steps)."""

LARGEST_COMPONENT = "remove_all_but_largest_component_from_segmentation"
"""nnU-Net's name of its one postprocessing function (in ``postprocessing_fns``)."""


@dataclass(frozen=True)
class KeepLargestComponent:
    """One step: of the voxels labelled any of ``labels``, keep the largest 26-connected component
    (the labels taken together) and set the rest to background, as nnU-Net's
    ``remove_all_but_largest_component_from_segmentation`` does."""

    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.labels or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in self.labels):
            raise ValueError(f"a postprocessing step needs one or more foreground label values, got {self.labels!r}")

    def describe(self) -> str:
        """The step in words (run records, logs)."""
        if len(self.labels) == 1:
            return f"keep the largest connected component of label {self.labels[0]}"
        return f"keep the largest connected component of labels {', '.join(map(str, self.labels))} together"


Postprocessing = tuple[KeepLargestComponent, ...]
"""A model's steps, in the order they are applied (empty: none)."""


def parse_postprocessing(record: Any, *, where: str) -> Postprocessing:
    """The steps of nnU-Net's ``postprocessing.json`` (already read as JSON).

    Raises:
        ModelError: not nnU-Net's layout, a function other than "keep the largest component", or
            label values that are not positive integers (region-based models' overlapping regions
            are not supported).
    """
    names = record.get("postprocessing_fns") if isinstance(record, dict) else None
    arguments = record.get("postprocessing_kwargs") if isinstance(record, dict) else None
    if not isinstance(names, list) or not isinstance(arguments, list) or len(names) != len(arguments):
        raise ModelError(f"{where} must hold nnU-Net's postprocessing_fns and postprocessing_kwargs, two lists of "
                         "equal length; write it again with nnUNetv2_determine_postprocessing or delete it")
    steps = []
    for name, kwargs in zip(names, arguments):
        if name != LARGEST_COMPONENT:
            raise ModelError(f"{where}: postprocessing function {name!r} is not supported; mrseg applies only "
                             f"{LARGEST_COMPONENT}")
        value = kwargs.get("labels_or_regions") if isinstance(kwargs, dict) else None
        values: list[Any] = value if isinstance(value, list) else [value]
        if any(isinstance(v, list) for v in values):
            raise ModelError(f"{where}: step {value!r} names regions; mrseg supports label-based models only")
        try:
            steps.append(KeepLargestComponent(tuple(values)))
        except ValueError as err:
            raise ModelError(f"{where}: {err}") from err
    return tuple(steps)


def read_postprocessing(path: str | os.PathLike[str]) -> Postprocessing:
    """The steps of the ``postprocessing.json`` at ``path``.

    Raises:
        ModelError: the file is not JSON or not nnU-Net's layout (see :func:`parse_postprocessing`).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{path} is not readable JSON ({err}); restore it or delete it to run without "
                         "postprocessing") from err
    return parse_postprocessing(record, where=str(path))


def find_postprocessing(folder: str | os.PathLike[str], folds: Sequence[str]) -> Path | None:
    """The postprocessing file of a model folder: ``FOLDER/postprocessing.json``, else the one in
    ``FOLDER/crossval_results_folds_<folds>/`` (nnU-Net's place; ``<folds>`` joined by ``_``) for
    the folds being loaded, else None."""
    folder = Path(folder)
    for candidate in (folder / POSTPROCESSING_FILE,
                      folder / f"crossval_results_folds_{'_'.join(folds)}" / POSTPROCESSING_FILE):
        if candidate.is_file():
            return candidate
    return None


def write_postprocessing(steps: Postprocessing, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Write ``steps`` as nnU-Net's ``postprocessing.json`` (what nnU-Net's reader and ours read),
    with ``extra`` keys beside them (nnU-Net keeps the Dice before and after there). Written to a
    temporary name first, then renamed."""
    from mrseg.io.files import write_bytes_atomic

    record = {**extra, "postprocessing_fns": [LARGEST_COMPONENT] * len(steps),
              "postprocessing_kwargs": [{"labels_or_regions": list(s.labels) if len(s.labels) > 1 else s.labels[0]}
                                        for s in steps]}
    return write_bytes_atomic(path, json.dumps(record, indent=2) + "\n")


__all__ = ["LARGEST_COMPONENT", "POSTPROCESSING_FILE", "KeepLargestComponent", "Postprocessing",
           "find_postprocessing", "parse_postprocessing", "read_postprocessing", "write_postprocessing"]
