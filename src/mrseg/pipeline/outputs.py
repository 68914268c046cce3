"""What a case writes and under which names: the one place that owns every output name.

For a case ``NAME`` and a postfix ``P`` (``seg`` by default) in ``OUTDIR``:

=================== =================================== ======================================
kind                file                                when
=================== =================================== ======================================
``labels``          ``NAME_P.nii.gz``                   output type nifti/both/auto
``dicom_seg``       ``NAME_P.dcm``                      dicom-seg/both, or auto for DICOM input
``masks``           ``NAME_P/<class>.nii.gz``           ``split_classes``
``statistics_json`` ``NAME_P_stats.json``               ``statistics``
``statistics_csv``  ``NAME_P_stats.csv``                ``statistics``
``preview``         ``NAME_P_preview.png``              ``preview``
(record)            ``NAME_P_record.json``              always, written last
=================== =================================== ======================================

Work in progress lives in ``OUTDIR/.mrseg/`` (staging folders and locks), never under a final name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mrseg.errors import InputError

OUTPUT_TYPES = ("auto", "nifti", "dicom-seg", "both")
"""``--output-type`` values."""

OUTPUT_KINDS = ("labels", "dicom_seg", "masks", "statistics_json", "statistics_csv", "preview")
"""Every kind of output a case can have, in the order they are made and committed."""

WORK_FOLDER = ".mrseg"
"""Hidden folder inside an output folder holding staging folders and locks."""


def default_postfix(model: str | os.PathLike[str] | None) -> str:
    """The output postfix a model gets unless one is given: ``seg`` (as MRSegmentator), and
    ``<name>_seg`` for the published models other than ``base`` (``body_comp_seg``), so two models
    never write the same names."""
    from mrseg.model.store import PUBLISHED

    name = str(model) if model is not None else "base"
    return f"{name}_seg" if name in PUBLISHED and name != "base" else "seg"


@dataclass(frozen=True)
class OutputSpec:
    """Which outputs a run wants, and where they go.

    Attributes:
        out_dir: the output folder.
        postfix: the name postfix (``seg``; ``body_comp_seg`` for the body-composition model).
        output_type: one of :data:`OUTPUT_TYPES`.
        statistics: also per-class statistics (JSON and CSV).
        preview: also a PNG preview.
        split_classes: also one binary mask per class.
        classes: keep only these classes (name → label value); None keeps every class.
        overwrite: replace outputs that exist, whatever made them.
    """

    out_dir: Path
    postfix: str = "seg"
    output_type: str = "auto"
    statistics: bool = False
    preview: bool = False
    split_classes: bool = False
    classes: tuple[tuple[str, int], ...] | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.output_type not in OUTPUT_TYPES:
            raise InputError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")
        if not self.postfix or any(sep in self.postfix for sep in "/\\"):
            raise InputError(f"postfix must be a plain name part such as seg, got {self.postfix!r}")
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @classmethod
    def with_classes(cls, out_dir: Path, classes: Mapping[str, int] | None, **options: object) -> OutputSpec:
        """An OutputSpec whose ``classes`` come from a mapping (stored sorted, so the spec is hashable)."""
        chosen = tuple(sorted(classes.items(), key=lambda kv: kv[1])) if classes else None
        return cls(out_dir, classes=chosen, **options)  # type: ignore[arg-type]

    def stem(self, name: str) -> str:
        return f"{name}_{self.postfix}"

    def paths(self, name: str) -> dict[str, Path]:
        """Every output kind of case ``name`` → its final path."""
        stem = self.stem(name)
        return {
            "labels": self.out_dir / f"{stem}.nii.gz",
            "dicom_seg": self.out_dir / f"{stem}.dcm",
            "masks": self.out_dir / stem,
            "statistics_json": self.out_dir / f"{stem}_stats.json",
            "statistics_csv": self.out_dir / f"{stem}_stats.csv",
            "preview": self.out_dir / f"{stem}_preview.png",
        }

    def record_path(self, name: str) -> Path:
        """The case record, written last: ``NAME_P_record.json``."""
        return self.out_dir / f"{self.stem(name)}_record.json"

    def wanted(self, *, dicom_input: bool) -> tuple[str, ...]:
        """The output kinds this spec asks for, for a file input or a DICOM series input."""
        if self.output_type == "auto":
            kinds = ["labels", "dicom_seg"] if dicom_input else ["labels"]
        elif self.output_type == "both":
            kinds = ["labels", "dicom_seg"]
        else:
            kinds = ["labels" if self.output_type == "nifti" else "dicom_seg"]
        if self.split_classes:
            kinds.append("masks")
        if self.statistics:
            kinds += ["statistics_json", "statistics_csv"]
        if self.preview:
            kinds.append("preview")
        return tuple(k for k in OUTPUT_KINDS if k in kinds)

    @property
    def work_dir(self) -> Path:
        return self.out_dir / WORK_FOLDER

    def staging_dir(self, name: str) -> Path:
        """Where case ``name``'s outputs are written before they are committed together."""
        return self.work_dir / "staging" / self.stem(name)

    def lock_path(self, name: str) -> Path:
        return self.work_dir / "locks" / f"{self.stem(name)}.lock"


__all__ = ["OUTPUT_KINDS", "OUTPUT_TYPES", "OutputSpec", "WORK_FOLDER", "default_postfix"]
