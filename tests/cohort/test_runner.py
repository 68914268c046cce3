"""Cohort runs on a real Dask ``LocalCluster`` with the bundled demo model (an ensemble of two
networks) and its own network alone (``--no-ensemble``): the labels of ``mrseg segment``, bad
inputs among good ones, retry, extension, and kills of the driver and of a worker with real
signals."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cohort_factory import phantom_cohort
from mrseg.cohort import ClusterSpec, CohortPlan, run_cohort
from mrseg.cohort.cluster import dashboard_link
from mrseg.cohort.manifest import ATTEMPTS_FILE, MANIFEST_FILE
from mrseg.cohort.qc import quality_control
from mrseg.cohort.worker import loaded_models
from mrseg.io import Image, orientation_code, read_image, write_image
from mrseg.phantom.randomization import crop
from mrseg.pipeline import ModelSpec, OutputSpec, collect_cases
from mrseg_processes import attempt_events, gone, hidden_items, mrseg_process, run_mrseg, wait_for

# The demo model's own 6 mm network without its 5 mm ensemble member: a real model at half the demo's
# time, for the tests of the cohort machinery (kills, retries, schedulers); the labels of the whole
# ensemble through a cohort are the two-worker test's.
ONE_NETWORK = ("--model", "demo", "--no-ensemble")

pytestmark = pytest.mark.slow


def manifest_rows(out: Path) -> dict[str, dict]:
    return {row["case"]: row for row in csv.DictReader((out / MANIFEST_FILE).open())}


def events(out: Path) -> list[dict]:
    return attempt_events(out / ATTEMPTS_FILE)


def test_a_two_worker_cohort_gives_the_labels_of_mrseg_segment_loading_the_model_once_per_worker(
        tmp_path, demo_model):
    phantom_cohort(tmp_path / "in", 6, truth=tmp_path / "truth")
    # A field of view cut through the liver (the patient's right third missing; stored LPS, so the
    # first x columns): QC must say the liver's volume is a lower bound. (An image with the liver
    # erased is no test: the demo model finds a liver by its place in the body; see its card.)
    full = read_image(tmp_path / "in" / "case01.nii.gz")
    assert orientation_code(full.geometry) == "LPS"
    write_image(crop(full, (slice(None), slice(None), slice(full.array.shape[2] // 3, None))),
                tmp_path / "in" / "cut.nii.gz")
    out = tmp_path / "cohort"
    plan = CohortPlan(ModelSpec(demo_model, name="demo"), OutputSpec(out))
    seen: dict = {}

    def start(client, submitted):
        seen["client"], seen["submitted"] = client, submitted
        seen["dashboard"] = dashboard_link(client)

    def result(row):
        seen.setdefault("rows", []).append(row.case)
        if len(seen["rows"]) == seen["submitted"]:
            seen["models"] = seen["client"].run(loaded_models)

    cases = collect_cases([tmp_path / "in"]).cases
    outcome = run_cohort(out, plan, ClusterSpec(workers=2, threads_per_worker=1), cases=cases, on_start=start,
                         on_result=result)
    assert outcome.summary.counts == {"done": 7, "failed": 0, "pending": 0, "running": 0} and outcome.submitted == 7
    assert sorted(seen["models"].values()) == [1, 1]  # two workers, each holding the model once
    assert seen["dashboard"].startswith("http://127.0.0.1:")  # ClusterSpec's default: the dashboard answers
    rows = manifest_rows(out)
    assert {r["worker"] for r in rows.values()} == set(seen["models"])  # both workers took cases
    assert all(r["attempts"] == "1" and r["output"] == f"{c}_seg.nii.gz" for c, r in rows.items())
    record = json.loads((out / "case00_seg_record.json").read_text())
    assert 0 < record["confidence"]["liver"] <= 1  # cohort runs measure confidence for quality control

    single = run_mrseg("segment", str(tmp_path / "in"), "-o", str(tmp_path / "segment"), "--model", "demo",
                       "--statistics", "--no-progress")
    assert single.returncode == 0, single.stderr
    for case in rows:
        cohort_labels = read_image(out / f"{case}_seg.nii.gz")
        segment_labels = read_image(tmp_path / "segment" / f"{case}_seg.nii.gz")
        assert np.array_equal(cohort_labels.array, segment_labels.array)
        assert cohort_labels.geometry == segment_labels.geometry
    again = run_cohort(out, plan, ClusterSpec(workers=2, threads_per_worker=1), cases=cases)
    assert again.submitted == 0 and again.summary.counts["done"] == 7  # done cases are not sent to workers
    qc, _ = quality_control(out)
    (flagged,) = [c for c in qc.cases if c.case == "cut"]
    assert any(f.kind == "truncated" and "liver" in f.organs for f in flagged.flags)
    assert not any(f.kind in ("laterality", "orientation") for c in qc.cases for f in c.flags)
    assert hidden_items(out) == []


def test_bad_inputs_fail_once_with_their_reason_and_retry_finishes_them_after_a_fix(tmp_path):
    inputs = phantom_cohort(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not an image at all")
    sitk.WriteImage(sitk.GetImageFromArray(read_image(inputs[0]).array[20]), str(tmp_path / "in" / "slice.nii.gz"))
    out = tmp_path / "cohort"
    first = run_mrseg("cohort", "run", str(tmp_path / "in"), "-o", str(out), *ONE_NETWORK, "--workers", "1",
                      "--no-progress")
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert "case(s) to run on 1 worker(s); dashboard: http://127.0.0.1:" in first.stderr  # printed once it answers
    rows = manifest_rows(out)
    assert [rows[c]["status"] for c in ("case00", "case01", "case02")] == ["done"] * 3
    for bad in ("broken", "slice"):
        assert rows[bad]["status"] == "failed" and rows[bad]["attempts"] == "1"  # not retried
        assert rows[bad]["error"].startswith(str(tmp_path / "in" / bad))
        assert f"failed   {bad}: " in first.stderr
    assert "5 case(s): 3 done, 2 failed, 0 pending, 0 running" in first.stderr
    assert not list(out.glob("broken_seg*")) and not list(out.glob("slice_seg*"))

    rerun = run_mrseg("cohort", "run", str(tmp_path / "in"), "-o", str(out), *ONE_NETWORK, "--no-progress",
                      "--no-dashboard")
    assert rerun.returncode == 1 and "0 case(s) run" in rerun.stdout  # failed cases wait for a retry

    write_image(read_image(inputs[1]), tmp_path / "in" / "broken.nii.gz")
    retry = run_mrseg("cohort", "retry", str(out), "--workers", "1", "--no-progress", "--no-dashboard")
    assert retry.returncode == 1 and "2 case(s) run" in retry.stdout
    assert "case(s) to run on 1 worker(s)\n" in retry.stderr  # --no-dashboard: none started, none printed
    rows = manifest_rows(out)
    assert rows["broken"]["status"] == "done" and rows["broken"]["attempts"] == "2"
    assert rows["slice"]["status"] == "failed" and rows["slice"]["attempts"] == "2"
    assert (out / "broken_seg.nii.gz").is_file()

    status = run_mrseg("cohort", "status", str(out))
    assert status.returncode == 0 and "5 case(s): 4 done, 1 failed, 0 pending, 0 running" in status.stdout
    assert "failed   slice: " in status.stdout and "cases/min" in status.stdout
    assert hidden_items(out) == []


def test_a_driver_killed_midway_is_finished_by_a_rerun_doing_every_case_once_and_inputs_added_later_run_alone(
        tmp_path):
    phantom_cohort(tmp_path / "in", 5, fovs=("abdomen",))
    out = tmp_path / "cohort"
    settings = [*ONE_NETWORK, "--workers", "1", "--threads-per-worker", "2", "--no-progress", "--no-dashboard"]
    args = ["cohort", "run", str(tmp_path / "in"), "-o", str(out), *settings]
    driver = mrseg_process(*args)
    wait_for(lambda: any(e["event"] == "start" for e in events(out)), what="the first case to start")
    second = run_mrseg(*args)  # one driver per cohort: the second is refused and writes nothing
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert f"another cohort run (pid {driver.pid} on " in second.stderr and "is working on this cohort" in second.stderr
    wait_for(lambda: sum(e["event"] == "end" for e in events(out)) >= 2, what="two finished cases")
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=30)
    workers = {e["pid"] for e in events(out) if e["event"] == "start"}
    wait_for(lambda: all(gone(pid) for pid in workers), timeout=60, what="the workers to exit with their driver")
    done_before = {e["case"] for e in events(out) if e["event"] == "end" and e["status"] == "segmented"}
    assert 2 <= len(done_before) < 5
    # The driver may die while rewriting its manifest: a young half-written copy beside it must not outlive the rerun.
    (out / f".{MANIFEST_FILE}.k3j9x1.part").write_text("case,input\ncase0")

    rerun = run_mrseg(*args)
    assert rerun.returncode == 0, rerun.stderr
    segmented = [e["case"] for e in events(out) if e["event"] == "end" and e["status"] == "segmented"]
    assert sorted(segmented) == [f"case{i:02d}" for i in range(5)]  # each case's network ran once
    rows = manifest_rows(out)
    assert all(r["status"] == "done" and (out / r["output"]).is_file() for r in rows.values())
    run_again = int(rerun.stdout.split(" case(s) run")[0].rsplit("(", 1)[1])
    assert run_again <= 5 - len(done_before)  # a case committed as the driver died is not sent again
    assert hidden_items(out) == []

    # The cohort grows: a folder of later inputs beside the first; only the new case runs.
    started_before = len([e for e in events(out) if e["event"] == "start"])
    phantom_cohort(tmp_path / "more", 1, first_seed=93000)
    (tmp_path / "more" / "case00.nii.gz").rename(tmp_path / "more" / "late.nii.gz")
    more = run_mrseg("cohort", "run", str(tmp_path / "in"), str(tmp_path / "more"), "-o", str(out), *settings,
                     "--workers", "2")
    assert more.returncode == 0 and "1 case(s) run" in more.stdout
    assert "1 case(s) to run on 1 worker(s)" in more.stderr  # no second worker for a case it would never get
    assert [e["case"] for e in events(out) if e["event"] == "start"][started_before:] == ["late"]
    assert manifest_rows(out)["late"]["status"] == "done"
    other = run_mrseg("cohort", "run", str(tmp_path / "in"), "-o", str(out), *settings, "--fast")
    assert other.returncode == 2 and "other settings" in other.stderr and "Traceback" not in other.stderr
    missing = run_mrseg("cohort", "status", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no cohort here" in missing.stderr
    slurm = run_mrseg("cohort", "run", str(tmp_path / "in"), "-o", str(tmp_path / "slurm"), *ONE_NETWORK,
                      "--slurm", "--slurm-option", "queue=gpu", env={"PATH": "/usr/bin:/bin"})
    assert slurm.returncode == 2 and "needs Slurm's sbatch on the PATH" in slurm.stderr
    assert not (tmp_path / "slurm").exists()  # nothing written


def test_a_worker_killed_mid_case_is_replaced_and_its_case_finishes_on_a_second_attempt(tmp_path):
    phantom_cohort(tmp_path / "in", 3)
    small = read_image(tmp_path / "in" / "case01.nii.gz")
    big = np.pad(small.array, ((60, 60), (80, 80), (80, 80)))
    write_image(Image.from_array(big, spacing=small.geometry.spacing, origin=small.geometry.origin),
                tmp_path / "in" / "big.nii.gz")
    out = tmp_path / "cohort"
    driver = mrseg_process("cohort", "run", str(tmp_path / "in"), "-o", str(out), *ONE_NETWORK, "--workers", "2",
                           "--threads-per-worker", "1", "--no-progress", "--no-dashboard")

    def started() -> list[dict]:
        return [e for e in events(out) if e["event"] == "start" and e["case"] == "big"]

    wait_for(lambda: started(), what="the big case to start")
    time.sleep(0.5)
    victim = started()[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 0, stderr
    row = manifest_rows(out)["big"]
    assert row["status"] == "done" and row["attempts"] == "2"
    tries = [e for e in events(out) if e["case"] == "big"]
    assert [e["event"] for e in tries] == ["start", "start", "end"] and tries[-1]["status"] == "segmented"
    assert tries[1]["pid"] != victim
    assert read_image(out / "big_seg.nii.gz").array.shape == big.shape
    assert hidden_items(out) == []


@contextlib.contextmanager
def running_scheduler(*, worker_memory_mb: int | None = None):
    """A Dask scheduler and one worker (no nanny) as real processes on 127.0.0.1; the worker's
    address space limited to ``worker_memory_mb`` (a machine that runs out of memory)."""
    from distributed import Client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"

    def limit() -> None:
        if worker_memory_mb is not None:
            resource.setrlimit(resource.RLIMIT_AS, (worker_memory_mb * 2**20, worker_memory_mb * 2**20))

    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--no-dashboard", "--no-nanny"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=limit)
    try:
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.wait(timeout=30)


def test_a_cohort_on_a_running_scheduler_retries_a_case_out_of_memory_then_fails_it_and_leaves_the_workers_up(
        tmp_path):
    """One worker (no nanny) on a scheduler started beforehand, its memory limited: the small case
    is done, the big one runs out of memory, is retried once and failed with its reason; the cohort
    does not close a cluster it did not start."""
    from distributed import Client

    phantom_cohort(tmp_path / "in", 1)
    noise = np.random.default_rng(0).normal(size=(200, 400, 400)).astype(np.float32)
    # uncompressed: gzip would spend seconds on 128 MB of noise at each write and read
    write_image(Image.from_array(noise, spacing=(1.0, 1.0, 1.0)), tmp_path / "in" / "big.nii")
    out = tmp_path / "cohort"
    with running_scheduler(worker_memory_mb=1700) as address:  # enough for the small case, not for the big one
        run = run_mrseg("cohort", "run", str(tmp_path / "in"), "-o", str(out), *ONE_NETWORK, "--scheduler",
                        address, "--retries", "1", "--no-progress")
        with Client(address, timeout="30s") as client:
            assert len(client.scheduler_info()["workers"]) == 1  # still up: the cohort closes only what it started
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "on 1 worker(s)" in run.stderr and "dashboard" not in run.stderr  # it runs none of its own
    rows = manifest_rows(out)
    assert rows["case00"]["status"] == "done"
    assert rows["big"]["status"] == "failed" and rows["big"]["attempts"] == "2"  # tried, then retried once
    assert "MemoryError" in rows["big"]["error"] and rows["big"]["error"].endswith("(tried 2 time(s))")
    assert [e["status"] for e in events(out) if e["event"] == "end" and e["case"] == "big"] == ["failed", "failed"]
