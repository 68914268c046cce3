"""Run a cohort: every case through the case pipeline on Dask workers, resumable and fault-tolerant.

:func:`run_cohort`

1. settles the plan (``cohort.json``): a new cohort writes it, a rerun must match it;
2. adds the new inputs to the manifest and reconciles every row with its case record: a case whose
   record shows it done with every output present is ``done`` and is not submitted again, whatever
   the manifest said when the last driver died; ``failed`` rows stay failed unless retried;
3. submits each remaining case as one Dask task (:func:`mrseg.cohort.worker.segment_case`, with
   ``retries``), and rewrites the manifest as results arrive and every ``refresh_seconds``;
4. builds the quality-control tables and report (:mod:`mrseg.cohort.qc`).

Killing the driver or the whole cluster at any moment loses nothing: a case's outputs are committed
by the case pipeline together with its record, and the next run starts from the records.

One driver at a time works on a cohort folder: it holds ``OUTDIR/.cohort.lock`` (an ``flock`` the
kernel drops when the driver dies, :class:`~mrseg.io.locks.FileLock`) from step 1 to 3, so a second
driver is refused with one line, and the next driver removes what a killed one was writing (a
manifest or plan half written beside the real one) whatever its age.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from mrseg.cohort.cluster import ClusterSpec, open_client
from mrseg.cohort.manifest import MANIFEST_FILE, AttemptLog, CohortSummary, Manifest, ManifestRow, summarize
from mrseg.cohort.plan import PLAN_FILE, CohortPlan, settle_plan
from mrseg.cohort.qc import QC_PLOT, QC_REPORT, QC_TABLE
from mrseg.cohort.worker import TransientCaseError, segment_case
from mrseg.errors import InputError, ModelError
from mrseg.io.files import remove_leftovers
from mrseg.io.locks import FileLock
from mrseg.pipeline import CaseSpec, clean_output_folder
from mrseg.report.records import CaseRecord, read_case_record

log = logging.getLogger(__name__)

RowCallback = Callable[[ManifestRow], None]

DRIVER_LOCK = ".cohort.lock"
DRIVER_FILES = (MANIFEST_FILE, PLAN_FILE, QC_TABLE, QC_REPORT, QC_PLOT)
"""The files only a cohort's driver writes (workers write case outputs and the attempts log)."""


@dataclass(frozen=True)
class CohortResult:
    """What a run left: the manifest, its summary and how long the run took."""

    manifest: Manifest
    summary: CohortSummary
    seconds: float
    submitted: int


@contextlib.contextmanager
def driver_lock(out_dir: Path) -> Iterator[None]:
    """Hold the cohort's driver lock for the block, having removed what a killed driver was writing.

    Raises:
        InputError: another live driver holds it.
    """
    lock = FileLock(out_dir / DRIVER_LOCK)
    if not lock.acquire():
        owner = lock.owner()
        raise InputError(f"{out_dir}: another cohort run ({owner.describe() if owner else 'another process'}) is "
                         "working on this cohort; wait for it to finish (mrseg cohort status) or stop it")
    try:
        for leftover in remove_leftovers(out_dir, older_than_s=0.0, of=DRIVER_FILES):
            log.info("removed %s, left by a driver that was killed while writing it", leftover.name)
        yield
    finally:
        lock.release()


def _prepare_cohort(out_dir: Path, plan: CohortPlan, cases: Iterable[CaseSpec] = (), *,
                    retry_failed: bool = False) -> tuple[Manifest, AttemptLog]:
    """Settle the plan, add ``cases`` and reconcile every row with its case record (step 1–2 of the
    module docstring); writes the manifest. The caller holds the :func:`driver_lock`.

    Raises:
        InputError: another cohort's settings in ``out_dir``, or a case name clash.
    """
    settle_plan(plan, out_dir)
    clean_output_folder(out_dir)
    manifest = Manifest.read(out_dir)
    added = manifest.add(cases)
    if added:
        log.info("%d new case(s) added to the cohort", len(added))
    attempts = AttemptLog(out_dir)
    attempts.update()
    for row in manifest.rows.values():
        _reconcile(row, plan, attempts, retry_failed=retry_failed)
    manifest.write()
    return manifest, attempts


def run_cohort(
    out_dir: Path,
    plan: CohortPlan,
    cluster: ClusterSpec,
    *,
    cases: Iterable[CaseSpec] = (),
    retry_failed: bool = False,
    on_start: Callable[[Any, int], None] | None = None,
    on_result: RowCallback | None = None,
    refresh_seconds: float = 2.0,
) -> CohortResult:
    """Run every case of the cohort in ``out_dir`` that is not done; see the module docstring.

    Args:
        out_dir: the cohort folder (outputs, manifest, plan, QC).
        plan: model, outputs and retry budget.
        cluster: where to run.
        cases: inputs to add to the cohort (a rerun may pass none, or more).
        retry_failed: run the failed cases again (``mrseg cohort retry``).
        on_start: called with the Dask client and the number of cases submitted.
        on_result: called with each case's manifest row as its result arrives.
        refresh_seconds: how often the manifest is rewritten while cases run.

    Raises:
        InputError: another cohort's settings in ``out_dir``, a case name clash, or another driver
        working on the cohort; ModelError: the model folder is not usable.
    """
    clock = time.perf_counter()
    cluster.check_available()
    _check_model(plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    with driver_lock(out_dir):
        manifest, attempts = _prepare_cohort(out_dir, plan, cases, retry_failed=retry_failed)
        todo = manifest.with_status("pending")
        submitted = 0
        if todo:
            try:
                submitted = _run_cases(todo, manifest, attempts, plan, cluster.for_cases(len(todo)),
                                       on_start=on_start, on_result=on_result, refresh_seconds=refresh_seconds)
            finally:
                attempts.update()
                manifest.write()
            clean_output_folder(out_dir)
    return CohortResult(manifest, summarize(manifest, attempts), time.perf_counter() - clock, submitted)


def _run_cases(todo: list[ManifestRow], manifest: Manifest, attempts: AttemptLog, plan: CohortPlan,
               cluster: ClusterSpec, *, on_start: Callable[[Any, int], None] | None, on_result: RowCallback | None,
               refresh_seconds: float) -> int:
    """Submit ``todo`` (step 3 of the module docstring), collect the results into ``manifest`` as they
    arrive, and return how many cases were submitted."""
    from distributed import as_completed

    _, threads = cluster.sizes()
    model = replace(plan.model, threads=threads)
    with open_client(cluster, retries=plan.retries) as client:
        futures = [client.submit(segment_case, row.spec(), model, plan.outputs, retries=plan.retries, pure=False,
                                 key=f"mrseg-{row.case}-{uuid.uuid4().hex[:8]}") for row in todo]
        rows = {future.key: row for future, row in zip(futures, todo)}
        if on_start is not None:
            on_start(client, len(futures))
        results = as_completed(futures, with_results=True, raise_errors=False)
        last_write = time.monotonic()
        while not results.is_empty():
            batch = results.next_batch(block=False) if results.has_ready() else []
            if batch:
                attempts.update()
            else:
                time.sleep(0.1)
            for future, outcome in batch:
                row = rows[future.key]
                _apply_result(row, future.exception() if future.status == "error" else outcome, plan, attempts)
                if on_result is not None:
                    on_result(row)
            if time.monotonic() - last_write >= refresh_seconds or results.is_empty():
                attempts.update()
                _refresh_running(manifest, attempts)
                manifest.write()
                last_write = time.monotonic()
    return len(futures)


def _check_model(plan: CohortPlan) -> None:
    """Read the model's plans and dataset and find its folds, so a wrong model fails once, before
    any worker starts, instead of once per case."""
    from mrseg.model.loader import available_folds
    from mrseg.model.plans import read_dataset, read_plans

    folder = plan.model.folder
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist; pass a model folder or name with --model")
    read_plans(folder / "plans.json")
    read_dataset(folder / "dataset.json")
    checkpoint = f"checkpoint_{plan.model.checkpoint}.pth"
    available = available_folds(folder, checkpoint)
    missing = [f for f in plan.model.folds or () if f not in available]
    if not available or missing:
        raise ModelError(f"{folder} lacks fold(s) {', '.join(missing) or 'fold_*'} ({checkpoint}); available "
                         f"folds: {', '.join(available) or 'none'}")


def _reconcile(row: ManifestRow, plan: CohortPlan, attempts: AttemptLog, *, retry_failed: bool) -> None:
    record = read_case_record(plan.outputs.record_path(row.case))
    tries = attempts.attempts(row.case)
    row.attempts = len(tries)
    if record is not None and _complete(record, plan, row):
        row.status, row.error = "done", ""
        row.output = _output(record)
        if tries and tries[-1].seconds is not None:
            row.seconds, row.worker = tries[-1].seconds, tries[-1].worker
    elif row.status == "failed" and not retry_failed:
        return
    else:
        row.status, row.error = "pending", ""


def _complete(record: CaseRecord, plan: CohortPlan, row: ManifestRow) -> bool:
    if record.status == "failed":
        return False
    wanted = plan.outputs.wanted(dicom_input=Path(row.input).is_dir())
    return all(kind in record.outputs and (plan.outputs.out_dir / record.outputs[kind].path).exists()
               for kind in wanted if kind not in record.left_out)


def _output(record: CaseRecord) -> str:
    for kind in ("labels", "dicom_seg"):
        if kind in record.outputs:
            return record.outputs[kind].path
    return ""


def _apply_result(row: ManifestRow, outcome: Any, plan: CohortPlan, attempts: AttemptLog) -> None:
    tries = attempts.attempts(row.case)
    row.attempts = max(len(tries), row.attempts)
    if tries:
        row.worker = tries[-1].worker
        row.seconds = tries[-1].seconds
    if isinstance(outcome, CaseRecord):
        row.status = "failed" if outcome.status == "failed" else "done"
        row.error = (outcome.error or "") if outcome.status == "failed" else ""
        row.output = _output(outcome)
        if outcome.timings and row.seconds is None:
            row.seconds = round(sum(outcome.timings.values()), 3)
        return
    row.status = "failed"
    row.error = _failure_reason(row, outcome, plan.retries)


def _failure_reason(row: ManifestRow, error: BaseException, retries: int) -> str:
    name = type(error).__name__
    if name == "KilledWorker":
        return (f"{row.input}: the worker running it died {retries + 1} time(s) (killed, or out of memory); "
                "give workers more memory, then mrseg cohort retry")
    if isinstance(error, TransientCaseError):
        return f"{error} (tried {retries + 1} time(s))"
    return f"{row.input}: {name}: {error}"


def _refresh_running(manifest: Manifest, attempts: AttemptLog) -> None:
    """Rows still waiting for their result whose latest attempt has started and not ended are ``running``."""
    for row in manifest.with_status("pending", "running"):
        tries = attempts.attempts(row.case)
        if tries:
            row.attempts = len(tries)
            row.worker = tries[-1].worker
            row.status = "running" if tries[-1].finished is None else row.status


__all__ = ["DRIVER_LOCK", "CohortResult", "driver_lock", "run_cohort"]
