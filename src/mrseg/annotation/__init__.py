"""Human-in-the-loop annotation rounds, the way MRSegmentator's labels were made.

A project (:mod:`~mrseg.annotation.project`) holds images, model versions and each case's state.
Each round drafts a batch with the current model (:func:`~mrseg.annotation.rounds.next_round`),
exports the drafts for ITK-SNAP and 3D Slicer (:mod:`~mrseg.annotation.exchange`), takes the
corrections back with their effort (:func:`~mrseg.annotation.rounds.submit`,
:mod:`~mrseg.annotation.effort`) and fine-tunes the next model version on everything accepted
(:func:`~mrseg.annotation.rounds.retrain`). :func:`~mrseg.annotation.rounds.simulate` runs the
loop with an oracle annotator.

Example:
    >>> from mrseg.annotation import Project, Settings, init_project, next_round  # doctest: +SKIP
    >>> init_project(Path("proj"), ["scans/"], Path("ct_model/"), settings=Settings(batch=20))  # doctest: +SKIP
    >>> next_round(Project("proj"))  # doctest: +SKIP
"""

from mrseg.annotation.effort import measure_effort
from mrseg.annotation.exchange import read_correction, write_draft_files
from mrseg.annotation.project import Project, ProjectState, Settings
from mrseg.annotation.rounds import (
    correction_files,
    init_project,
    next_round,
    reject,
    retrain,
    round_table,
    simulate,
    submit,
    write_status,
)

__all__ = ["Project", "ProjectState", "Settings", "correction_files", "init_project", "measure_effort", "next_round",
           "read_correction", "reject", "retrain", "round_table", "simulate", "submit", "write_draft_files",
           "write_status"]
