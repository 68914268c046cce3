"""The training worker's settings on nnU-Net, in a process of their own (nnU-Net reads its
folders from the environment once, when first imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrseg.training import NnunetFolders, build_dataset, cases_from_folder


def report_of(script: str, phantom_folder, tmp_path, *, dataset_id: int, name: str) -> dict:
    """Build the phantoms into an nnU-Net dataset, run ``script`` in a fresh process with nnU-Net's
    folders in its environment, and return the JSON it printed last."""
    folders = NnunetFolders.under(tmp_path)
    build_dataset(cases_from_folder(phantom_folder), folders.raw, dataset_id=dataset_id, name=name)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **folders.environment()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


CHECK = """
import json, multiprocessing
from mrseg.training import worker
worker.start_pools_from_a_fork_server()
capped = worker._fingerprint_extractor(1000)(41, 1)
uncapped = worker._fingerprint_extractor(None)(41, 1)
print(json.dumps({"spawn": multiprocessing.get_context("spawn").get_start_method(),
                  "fork": multiprocessing.get_context("fork").get_start_method(),
                  "cases": len(capped.dataset),
                  "capped": capped.num_foreground_voxels_for_intensitystats,
                  "uncapped": uncapped.num_foreground_voxels_for_intensitystats}))
"""


@pytest.mark.slow
def test_pools_start_from_a_fork_server_and_intensity_samples_are_capped_per_case(phantom_folder, tmp_path):
    seen = report_of(CHECK, phantom_folder, tmp_path, dataset_id=41, name="Capped")
    assert seen["spawn"] == "forkserver" and seen["fork"] == "fork"  # only nnU-Net's spawn pools change
    assert seen["cases"] == 6 and seen["capped"] == 6 * 1000
    assert seen["uncapped"] == 10e7  # None keeps nnU-Net's 10^8 in all


THREADS = """
import json, multiprocessing, os
from multiprocessing.pool import ThreadPool
from mrseg.training import worker
worker.run_pools_in_threads()
started = []
real_start = multiprocessing.process.BaseProcess.start
multiprocessing.process.BaseProcess.start = lambda self: (started.append(type(self).__name__), real_start(self))[1]
extractor = worker._fingerprint_extractor(1000)(42, 1)
fingerprint = extractor.run()
print(json.dumps({"thread_pool": multiprocessing.get_context("spawn").Pool is ThreadPool,
                  "fork": multiprocessing.get_context("fork").get_start_method(),
                  "processes_started": started, "cases": len(fingerprint["shapes_after_crop"])}))
"""


@pytest.mark.slow
def test_one_process_pools_run_as_threads_and_still_make_the_fingerprint(phantom_folder, tmp_path):
    """With ``processes=1`` the planning step spawns no pool process (each would import nnU-Net and torch)."""
    seen = report_of(THREADS, phantom_folder, tmp_path, dataset_id=42, name="Threads")
    assert seen["thread_pool"] and seen["fork"] == "fork"
    # nnU-Net's file listing forks a pool of its own (cheap: nothing to import); nothing is spawned
    assert not {"SpawnProcess", "ForkServerProcess"} & set(seen["processes_started"]) and seen["cases"] == 6

