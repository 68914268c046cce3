"""An annotation project on disk: its settings, model versions, cases and rounds in one JSON file.

``PROJECT/project.json`` is the whole state. Every command that changes it holds the project's
lock (``PROJECT/.lock``, an ``flock`` the kernel drops when the holder dies) while it reads,
changes and rewrites the file atomically (temporary file, then rename), so a crash or two
commands at once never leave a half-written or mixed state.

A case moves ``new`` → ``draft`` (predicted by the current model, not yet handed out) →
``in_correction`` (its files are in ``PROJECT/rounds/NNN/CASE/`` for the annotator) →
``accepted`` (a corrected label map came back, with its effort) or ``rejected`` (unusable;
never trained on, never chosen again).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.locks import FileLock

PROJECT_FILE = "project.json"
STATUSES = ("new", "draft", "in_correction", "accepted", "rejected")
ORDERS = ("random", "uncertain")
PROJECT_VERSION = 1


@dataclass
class CaseState:
    """One case of the project.

    Attributes:
        case: its name (outputs are named after it).
        image: the image file.
        status: one of :data:`STATUSES`.
        round: the round whose batch it is in (None while new).
        draft_model: the model version that made its draft.
        uncertainty: 1 − the mean winning probability over the draft's foreground voxels
            (higher: the model was less sure), from the model that scored it.
        drafted, submitted: when the draft was made, when the correction came back.
        effort: what the correction changed (:func:`mrseg.annotation.effort.measure_effort`).
        reason: why a case was rejected.
    """

    case: str
    image: str
    status: str = "new"
    round: int | None = None
    draft_model: int | None = None
    uncertainty: float | None = None
    drafted: str | None = None
    submitted: str | None = None
    effort: dict[str, Any] | None = None
    reason: str | None = None


@dataclass
class ModelVersion:
    """One model of the project: version 0 is the starting model, each retrain adds one."""

    version: int
    folder: str
    made: str
    accepted_cases: int = 0
    fold: str = "0"
    seconds: float | None = None


@dataclass
class RoundState:
    """One round: the batch chosen by ``next`` and the model that drafted it."""

    round: int
    model: int
    cases: list[str]
    started: str
    order: str


@dataclass
class Settings:
    """How the project runs: batch size, order, classes, seed and how its models predict."""

    batch: int = 50
    order: str = "random"
    classes: list[str] | None = None
    seed: int = 0
    step: float = 0.5
    precision: str = "auto"


@dataclass
class ProjectState:
    """Everything ``project.json`` holds."""

    settings: Settings
    models: list[ModelVersion] = field(default_factory=list)
    cases: dict[str, CaseState] = field(default_factory=dict)
    rounds: list[RoundState] = field(default_factory=list)

    @property
    def model(self) -> ModelVersion:
        """The newest model version."""
        return self.models[-1]

    def with_status(self, *statuses: str) -> list[CaseState]:
        return [c for c in self.cases.values() if c.status in statuses]

    def to_json(self) -> str:
        return json.dumps({"project_version": PROJECT_VERSION, "settings": asdict(self.settings),
                           "models": [asdict(m) for m in self.models],
                           "cases": [asdict(c) for c in self.cases.values()],
                           "rounds": [asdict(r) for r in self.rounds]}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProjectState:
        data = json.loads(text)
        return cls(Settings(**data["settings"]), [ModelVersion(**m) for m in data["models"]],
                   {c["case"]: CaseState(**c) for c in data["cases"]}, [RoundState(**r) for r in data["rounds"]])


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Project:
    """An annotation project folder.

    Example:
        >>> project = Project(Path("liver_project"))  # doctest: +SKIP
        >>> with project.changing() as state:  # doctest: +SKIP
        ...     state.cases["a"].status = "rejected"
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        return self.folder / PROJECT_FILE

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> ProjectState:
        """The project's state.

        Raises:
            InputError: no project here, or a state file that cannot be read.
        """
        if not self.exists():
            raise InputError(f"{self.folder}: no annotation project here (no {PROJECT_FILE}); start one with "
                             "mrseg annotate init")
        try:
            return ProjectState.from_json(self.path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{self.path}: not a readable project state ({err}); restore it from a backup") from err

    def write(self, state: ProjectState) -> None:
        write_bytes_atomic(self.path, state.to_json())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the project's lock (waiting for another command to finish)."""
        with FileLock(self.folder / ".lock").hold(poll_s=0.2):
            yield

    @contextlib.contextmanager
    def changing(self) -> Iterator[ProjectState]:
        """Read the state under the lock, let the caller change it, write it back atomically (not
        when the block raises)."""
        with self.locked():
            state = self.read()
            yield state
            self.write(state)

    def stored_path(self, path: str | os.PathLike[str]) -> str:
        """How the state file records ``path``: relative to the project folder when it lies inside
        it (the models a retrain makes, say), so that the project can be moved or copied whole;
        absolute otherwise."""
        resolved = Path(path).resolve()
        try:
            return resolved.relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return str(resolved)

    def resolved_path(self, stored: str) -> Path:
        """The file or folder a path of the state file names (see :meth:`stored_path`)."""
        return self.folder / stored

    def round_folder(self, number: int) -> Path:
        return self.folder / "rounds" / f"{number:03d}"

    def case_folder(self, number: int, case: str) -> Path:
        return self.round_folder(number) / case

    def models_folder(self) -> Path:
        return self.folder / "models"

    def predictions_folder(self, version: int) -> Path:
        """Where the model version's drafts are predicted (a cohort folder: resumable)."""
        return self.folder / "predictions" / f"v{version}"


__all__ = ["ORDERS", "PROJECT_FILE", "STATUSES", "CaseState", "ModelVersion", "Project", "ProjectState",
           "RoundState", "Settings", "now"]
