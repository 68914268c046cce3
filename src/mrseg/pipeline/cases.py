"""Finding the cases in what a user typed: files, folders, glob patterns and DICOM series folders."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mrseg.errors import InputError
from mrseg.io.files import label_map_reason
from mrseg.io.paths import IMAGE_SUFFIXES, case_name, image_suffix, is_dicom_input


@dataclass(frozen=True)
class CaseSpec:
    """One input: an image file or a DICOM series folder, and the name its outputs take.

    Attributes:
        path: the image file or DICOM folder.
        name: the case name (outputs are ``<name>_<postfix>...``).
        series: SeriesInstanceUID to pick from a DICOM folder holding several.
        channel: the volume to use from a 4-D or multi-component image.
    """

    path: Path
    name: str
    series: str | None = None
    channel: int | None = None

    @classmethod
    def of(cls, path: str | os.PathLike[str], *, series: str | None = None, channel: int | None = None) -> CaseSpec:
        return cls(Path(path), case_name(path), series, channel)

    @property
    def is_dicom(self) -> bool:
        """A folder, zip archive or DICOMDIR input is read as a DICOM series."""
        return is_dicom_input(self.path)


@dataclass(frozen=True)
class CaseList:
    """The cases found, and the folder files left out with the reason (label maps, earlier outputs)."""

    cases: tuple[CaseSpec, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())


def collect_cases(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    series: str | None = None,
    channel: int | None = None,
    postfixes: Sequence[str] = (),
) -> CaseList:
    """Expand files, folders and glob patterns into cases, checking that each exists.

    A folder holding image files gives one case per image file in it, leaving out label maps and
    mrseg's own outputs (:func:`mrseg.io.files.label_map_reason`, with the run's ``postfixes``);
    a folder without image files is one DICOM case. A file named explicitly is always a case.

    Raises:
        InputError: a path that does not exist, a pattern that matches nothing, a folder with no
            files at all, or two inputs that would write the same output names.
    """
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?[") and not Path(text).exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: the pattern matches no file; check it (quote it so the shell leaves it)")
            for match in matches:
                _add_folder_file(match, found, skipped, postfixes) if match.is_file() else found.append(match)
            continue
        path = Path(text)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; check the path")
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p))
            if images:
                for image in images:
                    _add_folder_file(image, found, skipped, postfixes)
            elif not any(p.is_file() for p in path.rglob("*")):
                raise InputError(
                    f"{path}: the folder is empty; give image files ({', '.join(IMAGE_SUFFIXES)}) or a DICOM "
                    "series folder"
                )
            else:
                found.append(path)
        else:
            found.append(path)
    cases: list[CaseSpec] = []
    by_name: dict[str, Path] = {}
    seen: set[Path] = set()
    for path in found:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        case = CaseSpec.of(path, series=series, channel=channel)
        if case.name in by_name:
            raise InputError(
                f"{path} and {by_name[case.name]} would both write outputs named {case.name}_*; segment them into "
                "different folders"
            )
        by_name[case.name] = path
        cases.append(case)
    if not cases and skipped:
        raise InputError(f"no images to segment: every file given is a label map or an earlier output "
                         f"({skipped[0][0]}: {skipped[0][1]}); name an image file explicitly to segment it anyway")
    return CaseList(tuple(cases), tuple(skipped))


def _add_folder_file(path: Path, found: list[Path], skipped: list[tuple[Path, str]], postfixes: Sequence[str]) -> None:
    reason = label_map_reason(path, postfixes=tuple(postfixes))
    if reason is None:
        found.append(path)
    else:
        skipped.append((path, reason))


__all__ = ["CaseList", "CaseSpec", "collect_cases"]
