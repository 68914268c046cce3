"""Cluster settings, and the Slurm job script dask-jobqueue writes from them (Slurm itself cannot run
here: the script is what sbatch would get)."""

from __future__ import annotations

import pytest

from mrseg.cohort.cluster import (
    GB_PER_WORKER,
    ClusterSpec,
    available_cores,
    available_memory_gb,
    parse_slurm_options,
    slurm_cluster,
)
from mrseg.errors import InputError


def test_defaults_share_the_cores_without_oversubscribing():
    workers, threads = ClusterSpec().sizes()
    assert 1 <= workers <= max(1, available_memory_gb() // GB_PER_WORKER)
    assert workers * threads <= max(available_cores(), 1)
    assert ClusterSpec(workers=1).sizes() == (1, available_cores())
    assert ClusterSpec(workers=2, threads_per_worker=3).sizes() == (2, 3)


def test_no_more_workers_start_than_cases_and_the_cores_stay_shared():
    assert ClusterSpec(workers=4, threads_per_worker=1).for_cases(2).sizes() == (2, 1)
    assert ClusterSpec(workers=4).for_cases(1).sizes() == (1, available_cores())  # one case gets every core
    assert ClusterSpec(workers=2).for_cases(5) == ClusterSpec(workers=2)
    running = ClusterSpec(workers=4, scheduler="tcp://127.0.0.1:8786")
    assert running.for_cases(1) is running  # a running scheduler's workers are not ours to size
    assert ClusterSpec(workers=8, slurm=True).for_cases(3).sizes()[0] == 3  # no idle Slurm jobs either


@pytest.mark.parametrize(("options", "message"), [
    ({"workers": 0}, "--workers must be 1 or more"),
    ({"scheduler": "tcp://x:8786", "slurm": True}, "exclude each other"),
    ({"slurm": True, "slurm_options": {"queu": "gpu"}}, "unknown --slurm-option queu; valid keys: queue"),
    ({"slurm_options": {"queue": "gpu"}}, "--slurm-option needs --slurm"),
])
def test_bad_cluster_options_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        ClusterSpec(**options)


def test_slurm_options_parse_and_a_missing_value_is_refused():
    assert parse_slurm_options(["queue=gpu", "local-directory=/scratch"]) == {"queue": "gpu",
                                                                            "local_directory": "/scratch"}
    with pytest.raises(InputError, match="takes KEY=VALUE, got 'gpu'"):
        parse_slurm_options(["gpu"])


def test_the_slurm_job_script_carries_every_option(tmp_path):
    spec = ClusterSpec(workers=3, threads_per_worker=4, slurm=True, slurm_options={
        "queue": "gpu", "account": "nako", "memory": "16GB", "walltime": "02:00:00", "gpus": "1",
        "job_extra": "--constraint=a100", "log_directory": str(tmp_path)})
    cluster = slurm_cluster(spec, scheduler_options={"dashboard_address": None, "host": "127.0.0.1"})
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("-p gpu", "-A nako", "--cpus-per-task=4", "--mem=15G", "-t 02:00:00", "--gres=gpu:1",
                     "--constraint=a100", f"-e {tmp_path}", f"-o {tmp_path}"):
        assert any(expected in line for line in directives), (expected, directives)
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--memory-limit 14.90GiB" in worker


@pytest.mark.parametrize("dashboard", [True, False])
def test_a_slurm_clusters_scheduler_serves_its_dashboard_only_when_asked_for(dashboard):
    from distributed import Client

    from mrseg.cohort.cluster import dashboard_link

    spec = ClusterSpec(workers=1, slurm=True, dashboard=dashboard)
    cluster = slurm_cluster(spec, scheduler_options={"dashboard_address": ":0", "host": "127.0.0.1"})
    try:  # no job is submitted: the scheduler alone, as on a login node
        with Client(cluster) as client:
            assert (dashboard_link(client) is not None) == dashboard
    finally:
        cluster.close()


def _dask_log_filters() -> list[str]:
    import logging

    return [type(f).__name__ for h in logging.getLogger("distributed").handlers for f in h.filters]


def test_workers_log_dask_errors_without_tracebacks_and_no_dashboard_is_started_unasked():
    """A worker's heartbeat meeting a closing scheduler printed a traceback after a good run.
    (The same cluster shows ``dashboard=False``: its scheduler serves no dashboard page.)"""
    import logging
    import sys

    from mrseg.cohort.cluster import dashboard_link, open_client
    from mrseg.cohort.worker_logs import WithoutTraceback

    with open_client(ClusterSpec(workers=1, threads_per_worker=1, dashboard=False), retries=0) as client:
        assert list(client.run(_dask_log_filters).values()) == [["WithoutTraceback"]]
        assert dashboard_link(client) is None  # the scheduler's HTTP routes answer, its dashboard page does not
        assert client.scheduler_info()["services"]["dashboard"] != 8787  # a free port, not Dask's fixed default
    try:
        raise ConnectionError("Stream is closed")
    except ConnectionError:
        record = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "heartbeat failed", None,
                                   sys.exc_info())
    assert WithoutTraceback().filter(record) and record.exc_info is None
    assert logging.Formatter().format(record) == "heartbeat failed"
