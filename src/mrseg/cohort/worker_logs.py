"""Loaded into every Dask worker that mrseg starts (``distributed.worker.preload``).

Dask logs its own connection errors with a traceback, for instance a worker whose heartbeat
meets a scheduler already closing at the end of a run. Those tracebacks reached the user's
terminal after a successful run. Here they are cut to their one-line message; a case's own
failure is recorded by mrseg with its reason, not through Dask's log.
"""

from __future__ import annotations

import logging
from typing import Any


class WithoutTraceback(logging.Filter):
    """Keeps the record and its message, drops its traceback and stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: put the filter on the handlers of Dask's logger in this worker."""
    for handler in logging.getLogger("distributed").handlers:
        if not any(isinstance(f, WithoutTraceback) for f in handler.filters):
            handler.addFilter(WithoutTraceback())
