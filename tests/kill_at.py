"""Run ``mrseg`` and SIGKILL the process itself at one point of one case: a crash at a known place.

Usage: ``python kill_at.py MRSEG_ARGS...`` with ``MRSEG_KILL_AT`` set to ``CASE:STAGE`` (a stage the
pipeline announces: read, segment, write, statistics, preview, commit) or ``CASE:rename`` (after the
first file of the case was moved into place during its commit). The signal is real; only the
moment is chosen.
"""

import os
import signal
import sys

import mrseg.pipeline.case as case_module
import mrseg.pipeline.staging as staging_module
from mrseg.cli import main

case_name, point = os.environ["MRSEG_KILL_AT"].split(":")
announce = case_module._stage


def stage(callback, case, name):  # type: ignore[no-untyped-def]
    if case.name == case_name and name == point:
        os.kill(os.getpid(), signal.SIGKILL)
    announce(callback, case, name)


rename = os.replace


def replace_then_die(source, target):  # type: ignore[no-untyped-def]
    rename(source, target)
    committed = ".mrseg" not in str(target)  # a move into the output folder, not into staging
    if point == "rename" and committed and os.path.basename(str(target)).startswith(f"{case_name}_"):
        os.kill(os.getpid(), signal.SIGKILL)


case_module._stage = stage
staging_module.os.replace = replace_then_die  # type: ignore[assignment]
sys.exit(main(sys.argv[1:]))
