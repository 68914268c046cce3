"""What a Dask worker runs for one case: the case pipeline, with its model loaded once per worker.

:func:`segment_case` is submitted once per case. It logs the attempt (start, then end) in the
cohort's attempts log, runs :func:`mrseg.pipeline.process_case` with the worker's
:class:`~mrseg.pipeline.LoadedModel` (:func:`mrseg.pipeline.load` keeps it for the life of the
worker process) and returns the case record. A bad input comes back as a ``failed`` record and is
not retried; a failure of the machine (out of memory) raises :class:`TransientCaseError`, so Dask
retries the task; a worker that dies mid-case is rescheduled by Dask's scheduler.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

from mrseg.cohort.manifest import append_event
from mrseg.errors import MrsegError
from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, load, process_case
from mrseg.pipeline.case import failed_outcome
from mrseg.pipeline.models import loaded_specs
from mrseg.report.records import CaseRecord


class TransientCaseError(MrsegError):
    """A case failed for a reason of the machine (out of memory), not of its input: try it again."""


def worker_name() -> str:
    """The Dask worker's address, or ``host:pid`` outside a worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def segment_case(case: CaseSpec, model: ModelSpec, outputs: OutputSpec) -> CaseRecord:
    """Run one case on this worker; see the module docstring.

    Raises:
        TransientCaseError: out of memory; the task is worth retrying.
    """
    attempt = uuid.uuid4().hex
    started = time.time()
    append_event(outputs.out_dir, {"event": "start", "id": attempt, "case": case.name, "worker": worker_name(),
                                   "host": socket.gethostname(), "pid": os.getpid(), "started": started})
    record: CaseRecord | None = None
    transient, error = False, None
    try:
        try:
            loaded = load(model)
        except MrsegError as err:
            outcome = failed_outcome(case, str(err))
        else:
            outcome = process_case(case, loaded, outputs, wait=True)
        record, transient = outcome.record, outcome.transient
    except MemoryError as err:
        transient, error = True, f"{case.path}: out of memory ({err})"
        raise TransientCaseError(error) from err
    except BaseException as err:
        error = f"{case.path}: {type(err).__name__}: {err}"
        raise
    finally:
        finished = time.time()
        append_event(outputs.out_dir, {
            "event": "end", "id": attempt, "case": case.name, "finished": finished,
            "seconds": round(finished - started, 3),
            "status": "failed" if transient or record is None else record.status,
            "error": record.error if record is not None else error,
        })
    if transient:
        raise TransientCaseError(record.error or f"{case.path}: failed for a reason of the machine")
    return record


def loaded_models() -> int:
    """How many models this worker process holds loaded (one per model spec: run on every worker
    with ``client.run``, it shows that each loaded the model once)."""
    return len(loaded_specs())


__all__ = ["TransientCaseError", "loaded_models", "segment_case", "worker_name"]

