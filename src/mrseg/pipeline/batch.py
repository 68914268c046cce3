"""Many cases, one or several models: :func:`process_case` for each, one bad case never stopping the rest.

Cases another process is working on (a second ``mrseg segment`` into the same folder) are put at
the back of the queue and waited for at the end, so two runs share the work and each case is
segmented once. With several models and ``combine``, each case's maps are combined in memory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mrseg.errors import MrsegError
from mrseg.io.files import remove_leftovers, write_bytes_atomic
from mrseg.io.image import Image
from mrseg.io.locks import FileLock
from mrseg.pipeline.case import (
    CaseBusy,
    CaseOutcome,
    CombinedLabels,
    StageCallback,
    TileCallback,
    failed_outcome,
    process_case,
)
from mrseg.pipeline.cases import CaseSpec
from mrseg.pipeline.models import LoadedModel
from mrseg.pipeline.outputs import WORK_FOLDER, OutputSpec
from mrseg.pipeline.staging import recover, remove_empty_work_folder
from mrseg.postprocess import combined_classes
from mrseg.report.records import CaseRecord

log = logging.getLogger(__name__)

@dataclass
class BatchResult:
    """Every case's record per model (in case order), and the combined maps' records."""

    records: list[list[CaseRecord]] = field(default_factory=list)
    combined: list[CaseRecord] = field(default_factory=list)

    def all_records(self) -> list[CaseRecord]:
        return [r for per_model in self.records for r in per_model] + list(self.combined)


def run_batch(
    cases: Sequence[CaseSpec],
    models: Sequence[tuple[LoadedModel, OutputSpec]],
    *,
    combine: OutputSpec | None = None,
    on_stage: StageCallback | None = None,
    on_tile: TileCallback | None = None,
    on_record: Callable[[CaseRecord], None] | None = None,
) -> BatchResult:
    """Run every case through every model; see the module docstring.

    Args:
        cases: the inputs (:func:`mrseg.pipeline.collect_cases`).
        models: each loaded model with its output specification (one postfix each).
        combine: write each case's combined map with this specification (postfix ``combined``).
        on_stage, on_tile: progress, as :func:`process_case` takes them.
        on_record: called with each record as soon as it is final.
    """
    folders = {spec.out_dir for _, spec in models} | ({combine.out_dir} if combine else set())
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        clean_output_folder(folder)
    offsets, table = combined_classes([model.classes for model, _ in models])
    combined_names = {name: value for value, name in table.items()}
    if combine is not None:
        write_bytes_atomic(combine.out_dir / "combined_classes.json",
                           json.dumps({str(k): v for k, v in table.items()}, indent=2))
    slots: list[list[CaseRecord | None]] = [[None] * len(cases) for _ in models]
    combined: list[CaseRecord | None] = [None] * len(cases)
    labels: list[list[Image | None]] = [[None] * len(models) for _ in cases]

    def run(index: int, wait: bool) -> bool:
        """Every unit of case ``index`` not yet done; False when one is busy (try again later)."""
        case = cases[index]
        for m, (model, spec) in enumerate(models):
            if slots[m][index] is not None:
                continue
            try:
                outcome = process_case(case, model, spec, keep_labels=combine is not None, wait=wait,
                                       on_stage=on_stage, on_tile=on_tile)
            except CaseBusy as busy:
                log.info("%s; coming back to it at the end", busy)
                return False
            slots[m][index] = outcome.record
            labels[index][m] = outcome.labels
            if on_record is not None:
                on_record(outcome.record)
        if combine is not None and combined[index] is None:
            try:
                outcome = _combine(case, models, labels[index], combine, combined_names, offsets, wait, on_stage)
            except CaseBusy as busy:
                log.info("%s; coming back to it at the end", busy)
                return False
            combined[index] = outcome.record
            labels[index] = [None] * len(models)
            if on_record is not None:
                on_record(outcome.record)
        return True

    deferred = [i for i in range(len(cases)) if not run(i, wait=False)]
    for index in deferred:
        run(index, wait=True)
    for folder in folders:
        clean_output_folder(folder)
    return BatchResult([[r for r in per_model if r is not None] for per_model in slots],
                       [r for r in combined if r is not None])


def _combine(case: CaseSpec, models: Sequence[tuple[LoadedModel, OutputSpec]], parts: Sequence[Image | None],
             spec: OutputSpec, classes: dict[str, int], offsets: Sequence[int], wait: bool,
             on_stage: StageCallback | None) -> CaseOutcome:
    if any(p is None for p in parts):
        missing = [models[i][1].postfix for i, p in enumerate(parts) if p is None]
        return failed_outcome(case, f"{case.path}: not combined: no label map of {', '.join(missing)} "
                             "(that model failed, or wrote no NIfTI labels)")
    labeller = CombinedLabels([p for p in parts if p is not None], classes, offsets,
                              [model.settings for model, _ in models])
    return process_case(case, labeller, spec, wait=wait, on_stage=on_stage)


def clean_output_folder(out_dir: Path) -> None:
    """Finish or remove what killed runs left in ``out_dir`` (cases no live run holds), then drop an
    empty ``.mrseg`` work folder."""
    work = out_dir / WORK_FOLDER
    staging_root = work / "staging"
    if staging_root.is_dir():
        for staging in sorted(p for p in staging_root.iterdir() if p.is_dir()):
            lock = FileLock(work / "locks" / f"{staging.name}.lock")
            if not lock.acquire():
                continue  # a live run is writing it
            try:
                recover(staging, out_dir, f"{staging.name}_record.json")
            except (OSError, MrsegError) as err:
                log.warning("%s: cannot clean up (%s)", staging, err)
            finally:
                lock.release()
    if work.is_dir():
        remove_empty_work_folder(work)
    remove_leftovers(out_dir)


__all__ = ["BatchResult", "clean_output_folder", "run_batch"]
