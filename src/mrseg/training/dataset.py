"""Assemble an nnU-Net v2 raw dataset (imagesTr, labelsTr, dataset.json) from mixed CT/MR cases.

The cases come from a CSV (one row per case: image, label, modality, sequence, dataset and the
label map of the label file) or from a folder written by ``mrseg phantom`` (``NAME.nii.gz``,
``NAME_labels.nii.gz`` and the ``NAME.json`` sidecar). Every label file is mapped into the
40-class index with the evaluation module's label maps, and every image/label pair must share
one grid. The dataset is written to a hidden folder next to the target and renamed into place
only when every case is in, so a failed build leaves nothing behind.

Beside dataset.json, ``mrseg_cases.json`` records each case's modality, sequence, source
dataset and original files, which the cross-validation report uses to break Dice down per
sequence.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.evaluation.label_maps import resolve_label_map
from mrseg.io.files import case_name, read_image, write_image
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import orientation_code, reorient

MODALITIES = ("ct", "mr")
"""Modalities a case can have."""

CSV_COLUMNS = ("image", "label", "modality", "sequence", "dataset", "label_map")
"""Columns of a dataset CSV; ``image`` and ``label`` are required, the rest optional."""

CHANNEL_NAME = "MRI"
"""nnU-Net channel name of the single input channel. Any name but ``CT`` selects per-image
z-score normalisation, which MRSegmentator uses for CT and MR alike (nnU-Net's CT scheme
clips to global percentiles of the CT training data, meaningless for MR)."""

CASES_FILE = "mrseg_cases.json"
"""Per-case metadata written beside dataset.json."""


@dataclass(frozen=True)
class DatasetCase:
    """One training case before assembly.

    Attributes:
        image: image file or DICOM folder.
        label: label file on the image's grid.
        modality: ``"ct"`` or ``"mr"``.
        sequence: MR sequence or CT phase (free text, for reports), may be empty.
        dataset: the source collection (free text, for reports), may be empty.
        label_map: built-in label map name or JSON path of the label file's index.
        name: case identifier in the nnU-Net dataset; derived from the image when empty.
    """

    image: str
    label: str
    modality: str = "mr"
    sequence: str = ""
    dataset: str = ""
    label_map: str = "base"
    name: str = ""


def cases_from_csv(path: str | os.PathLike[str], *, label_map: str = "base") -> list[DatasetCase]:
    """Read cases from a CSV with a header; relative paths are relative to the CSV's folder.

    Raises:
        InputError: missing file or required columns, unknown columns, empty rows.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such CSV file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in ("image", "label") if c not in header]
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if missing or unknown:
            raise InputError(
                f"{path}: the header must name the columns {', '.join(CSV_COLUMNS)} (image and label "
                f"required); missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        cases = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("image") or not row.get("label"):
                raise InputError(f"{path}, line {line}: image and label must both be given")
            cases.append(
                DatasetCase(
                    image=str(_relative_to(path.parent, row["image"])),
                    label=str(_relative_to(path.parent, row["label"])),
                    modality=row.get("modality") or "mr",
                    sequence=row.get("sequence", ""),
                    dataset=row.get("dataset", ""),
                    label_map=row.get("label_map") or label_map,
                )
            )
    if not cases:
        raise InputError(f"{path}: no cases listed")
    return cases


def cases_from_folder(folder: str | os.PathLike[str], *, label_map: str = "base") -> list[DatasetCase]:
    """Cases from a folder of ``NAME.nii.gz`` + ``NAME_labels.nii.gz`` (+ ``NAME.json``), as ``mrseg phantom`` writes.

    Raises:
        InputError: no such folder, or no image/label pairs in it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    cases = []
    for label in sorted(folder.glob("*_labels.nii.gz")):
        name = label.name[: -len("_labels.nii.gz")]
        image = folder / f"{name}.nii.gz"
        if not image.is_file():
            raise InputError(f"{label}: its image {image.name} is missing from {folder}")
        sidecar = folder / f"{name}.json"
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        cases.append(
            DatasetCase(
                image=str(image), label=str(label), modality=str(meta.get("modality", "mr")),
                sequence=str(meta.get("sequence", "")), dataset=str(meta.get("source", "")),
                label_map=label_map, name=name,
            )
        )
    if not cases:
        raise InputError(f"{folder}: no NAME.nii.gz / NAME_labels.nii.gz pairs found")
    return cases


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name for a dataset: ``Dataset{id:03d}_{name}``.

    Raises:
        InputError: id outside 1..999 or a name nnU-Net cannot use.
    """
    if not 1 <= dataset_id <= 999:
        raise InputError(f"dataset id must be 1..999 (nnU-Net's DatasetXXX), got {dataset_id}")
    if not name or not all(ch.isalnum() or ch in "-" for ch in name):
        raise InputError(f"dataset name must be letters, digits or '-' (no '_' or spaces), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def build_dataset(
    cases: Sequence[DatasetCase],
    raw_root: str | os.PathLike[str],
    *,
    dataset_id: int,
    name: str,
    overwrite: bool = False,
    geometry_tolerance: float = 1e-4,
    orientation: str | None = "LPS",
    labels: Mapping[str, int] | None = None,
) -> Path:
    """Write an nnU-Net v2 raw dataset (the 40 classes, or ``labels``); returns its folder.

    Images and labels are reoriented to ``orientation`` (default LPS, the axis order
    ``mrseg segment`` gives the network): nnU-Net trains on the arrays as stored, so a dataset
    of mixed orientations would show the network left and right on either side of the array,
    and the left/right classes could not be learned. None keeps each file's own axes.

    Args:
        cases: the cases (:func:`cases_from_csv`, :func:`cases_from_folder`).
        raw_root: nnU-Net's raw folder (``nnUNet_raw``); the dataset goes into
            ``raw_root/Dataset{id:03d}_{name}``.
        dataset_id: nnU-Net dataset id.
        name: dataset name (letters, digits, '-').
        overwrite: replace an existing dataset folder of that name.
        geometry_tolerance: largest difference of spacing, origin (relative to the spacing)
            and direction allowed between an image and its label file.
        orientation: axis orientation code the arrays are brought into (None: as stored).
        labels: the dataset's own classes, name → value (1, 2, … N; background 0 implied),
            for a model of another class set than the 40 (a new organ, a subset, the model an
            annotation project fine-tunes). The label files must already use these values;
            each case's ``label_map`` is then not used.

    Raises:
        InputError: naming the case, for unreadable files, a label grid that differs from
            its image, label values the case's label map does not know, an unknown modality,
            duplicate case names; or an existing dataset without ``overwrite``. Nothing is
            written then.
    """
    if not cases:
        raise InputError("no cases to build a dataset from")
    root = Path(raw_root)
    target = root / dataset_folder_name(dataset_id, name)
    if target.exists() and not overwrite:
        raise InputError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    names = _case_names(cases)
    own = _own_labels(labels) if labels is not None else None
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        (work / "imagesTr").mkdir()
        (work / "labelsTr").mkdir()
        records = []
        for case, case_id in zip(cases, names):
            where = f"case {case_id} ({case.image})"
            if case.modality not in MODALITIES:
                raise InputError(f"{where}: modality must be one of {', '.join(MODALITIES)}, got {case.modality!r}")
            image = _read(case.image, where)
            label_file = _read(case.label, where)
            _check_same_grid(image.geometry, label_file.geometry, where, geometry_tolerance)
            if own is None:
                mapped = resolve_label_map(case.label_map).apply(label_file.array,
                                                                 source=f"{where}, label file {case.label}")
            else:
                mapped = _check_values(label_file.array, own, f"{where}, label file {case.label}")
            label_image = image.with_array(mapped.astype(np.uint8))
            if orientation is not None and orientation_code(image.geometry) != orientation.upper():
                image, _ = reorient(image, orientation)
                label_image, _ = reorient(label_image, orientation)
                write_image(image, work / "imagesTr" / f"{case_id}_0000.nii.gz")
            else:
                _write_image_as_nifti(case.image, image, work / "imagesTr" / f"{case_id}_0000.nii.gz")
            write_image(label_image, work / "labelsTr" / f"{case_id}.nii.gz")
            records.append({"case": case_id, **asdict(case), "name": case_id,
                            "classes_present": sorted(int(v) for v in np.unique(mapped) if v)})
        (work / "dataset.json").write_text(json.dumps(dataset_json(len(records), name, own), indent=2))
        (work / CASES_FILE).write_text(json.dumps(records, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def dataset_json(num_training: int, name: str, labels: Mapping[str, int] | None = None) -> dict[str, object]:
    """nnU-Net v2's dataset.json for one input channel and the 40 classes (or ``labels``)."""
    table: dict[str, int] = {"background": 0}
    table.update(labels if labels is not None else BASE.foreground)
    return {
        "name": name,
        "description": "assembled by mrseg dataset build: "
        + ("40 classes of the MRSegmentator index" if labels is None else f"{len(table) - 1} classes of its own"),
        "channel_names": {"0": CHANNEL_NAME},
        "labels": table,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
    }


def _own_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """``labels`` without background, checked: values 1 … N, each once (nnU-Net's rule)."""
    own = {str(k): int(v) for k, v in labels.items() if k != "background" and int(v) != 0}
    if sorted(own.values()) != list(range(1, len(own) + 1)) or not own:
        raise InputError(f"dataset labels must be numbered 1 … N without gaps, got {own}")
    return own


def _check_values(array: np.ndarray, own: Mapping[str, int], source: str) -> np.ndarray:
    unknown = sorted(int(v) for v in np.unique(array) if v and v not in set(own.values()))
    if unknown:
        raise InputError(f"{source}: label value(s) {unknown} are not among the dataset's classes "
                         f"(1 … {len(own)}); fix the file or the class list")
    return array


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _case_names(cases: Sequence[DatasetCase]) -> list[str]:
    names = []
    for case in cases:
        raw = case.name or case_name(case.image)
        names.append("".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in raw))
    seen: dict[str, str] = {}
    for case, n in zip(cases, names):
        if n in seen:
            raise InputError(
                f"two cases share the name {n!r} ({seen[n]} and {case.image}); rename one or give a name column"
            )
        seen[n] = case.image
    return names


def _read(path: str, where: str) -> Image:
    try:
        return read_image(path)
    except InputError as err:
        raise InputError(f"{where}: {err}") from err


def _check_same_grid(image: Geometry, labels: Geometry, where: str, tolerance: float) -> None:
    problems = image.differences(labels, tolerance=tolerance)
    if problems:
        raise InputError(
            f"{where}: the label file is not on the image's grid: {'; '.join(problems)}; "
            "resample the labels onto the image (nearest neighbour) or pair the right files"
        )


def _write_image_as_nifti(source: str, image: Image, path: Path) -> None:
    """Copy a ``.nii.gz`` as it is (bit for bit); convert anything else to NIfTI."""
    if str(source).lower().endswith(".nii.gz") and Path(source).is_file():
        shutil.copyfile(source, path)
    else:
        write_image(image, path)


def read_cases_file(dataset_folder: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The per-case metadata of a dataset built here (empty for other datasets)."""
    path = Path(dataset_folder) / CASES_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def summarize(records: Iterable[dict[str, object]]) -> dict[str, int]:
    """Case counts per ``modality/sequence``."""
    counts: dict[str, int] = {}
    for record in records:
        key = f"{record.get('modality', '')}/{record.get('sequence', '') or '-'}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
