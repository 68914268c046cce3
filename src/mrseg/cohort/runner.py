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
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from mrseg.cohort.cluster import ClusterSpec, open_client
from mrseg.cohort.manifest import AttemptLog, CohortSummary, Manifest, ManifestRow, summarize
from mrseg.cohort.plan import CohortPlan, settle_plan
from mrseg.cohort.worker import TransientCaseError, segment_case
from mrseg.errors import ModelError
from mrseg.pipeline import CaseSpec, clean_output_folder
from mrseg.report.records import CaseRecord, read_case_record

log = logging.getLogger(__name__)

RowCallback = Callable[[ManifestRow], None]


@dataclass(frozen=True)
class CohortResult:
    """What a run left: the manifest, its summary and how long the run took."""

    manifest: Manifest
    summary: CohortSummary
    seconds: float
    submitted: int


def prepare_cohort(out_dir: Path, plan: CohortPlan, cases: Iterable[CaseSpec] = (), *,
                   retry_failed: bool = False) -> tuple[Manifest, AttemptLog]:
    """Settle the plan, add ``cases`` and reconcile every row with its case record (step 1–2 of the
    module docstring); writes the manifest.

    Raises:
        InputError: another cohort's settings in ``out_dir``, or a case name clash.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
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
        InputError: see :func:`prepare_cohort`; ModelError: the model folder is not usable.
    """
    clock = time.perf_counter()
    cluster.check_available()
    _check_model(plan)
    manifest, attempts = prepare_cohort(out_dir, plan, cases, retry_failed=retry_failed)
    todo = manifest.with_status("pending")
    if not todo:
        return CohortResult(manifest, summarize(manifest, attempts), time.perf_counter() - clock, 0)
    cluster = cluster.for_cases(len(todo))
    _, threads = cluster.sizes()
    model = replace(plan.model, threads=threads)
    from distributed import as_completed

    futures: list[Any] = []
    try:
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
    finally:
        attempts.update()
        manifest.write()
    clean_output_folder(out_dir)
    return CohortResult(manifest, summarize(manifest, attempts), time.perf_counter() - clock, len(futures))


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


__all__ = ["CohortResult", "prepare_cohort", "run_cohort"]
