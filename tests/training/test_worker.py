"""The training worker's settings on nnU-Net, in a process of their own (nnU-Net reads its
folders from the environment once, when first imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrseg.training import NnunetFolders, build_dataset, cases_from_folder

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
    folders = NnunetFolders.under(tmp_path)
    build_dataset(cases_from_folder(phantom_folder), folders.raw, dataset_id=41, name="Capped")
    done = subprocess.run([sys.executable, "-c", CHECK], env={**os.environ, **folders.environment()},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["spawn"] == "forkserver" and seen["fork"] == "fork"  # only nnU-Net's spawn pools change
    assert seen["cases"] == 6 and seen["capped"] == 6 * 1000
    assert seen["uncapped"] == 10e7  # None keeps nnU-Net's 10^8 in all
