"""Where a cohort runs: a Dask ``LocalCluster`` on this machine, an existing scheduler, or Slurm.

Every worker runs one case at a time (one Dask thread) and gives torch ``threads_per_worker``
threads, so ``workers × threads_per_worker`` should not exceed the cores. The default is one
worker per core with one thread each, at most one worker per :data:`GB_PER_WORKER` of memory (a
worker holds the model and one case: about 1–4 GB with the published model): cases run side by
side rather than one case on several threads, because reading, resampling and export are mostly
single-threaded (on 2 cores, 48 demo-model cases: 2 workers × 1 thread 40.8 s, 1 worker × 2
threads 51.1 s; ``benchmarks/bench_cohort.py``).

Slurm goes through ``dask-jobqueue``: one job per worker, booking ``threads_per_worker`` CPUs
(``job_cpu``), with the queue, account, memory, walltime and GPUs given as ``--slurm-option
K=V``. Dask's own pieces are optional (``pip install mrseg[cohort]``); without them a clear
error names the extra.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from mrseg.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

SLURM_OPTIONS = ("queue", "account", "memory", "walltime", "gpus", "interface", "local_directory",
                 "log_directory", "job_extra", "python", "job_name")
"""``--slurm-option`` keys: ``dask_jobqueue.SLURMCluster`` arguments, plus ``gpus`` (a
``--gres=gpu:N`` directive) and ``job_extra`` (one more ``#SBATCH`` directive, verbatim)."""


GB_PER_WORKER = 4.0


def available_memory_gb() -> float:
    """The machine's physical memory in GB (inf where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return float("inf")


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ClusterSpec:
    """How many workers, with how many threads, on which cluster.

    Attributes:
        workers: worker processes (default: one per core, at most one per ``GB_PER_WORKER`` GB).
        threads_per_worker: torch threads of each worker (default: the cores shared out).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); its workers are used
            as they are.
        slurm: start workers as Slurm jobs through ``dask-jobqueue``.
        slurm_options: ``SLURM_OPTIONS`` key → value.
        dashboard: start the scheduler's dashboard (Bokeh) with a ``LocalCluster`` or Slurm: about 1.3 s of
            the driver's CPU per run, worth it where someone is shown the address (``mrseg cohort
            run`` prints it) and not where nobody is (an annotation round's drafts).
    """

    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    slurm: bool = False
    slurm_options: Mapping[str, str] = field(default_factory=dict)
    dashboard: bool = True

    def __post_init__(self) -> None:
        for name in ("workers", "threads_per_worker"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be 1 or more, got {value}")
        if self.scheduler and self.slurm:
            raise InputError("--scheduler and --slurm exclude each other: use a running scheduler, or let mrseg "
                             "start Slurm workers")
        unknown = sorted(set(self.slurm_options) - set(SLURM_OPTIONS))
        if unknown:
            raise InputError(f"unknown --slurm-option {', '.join(unknown)}; valid keys: {', '.join(SLURM_OPTIONS)}")
        if self.slurm_options and not self.slurm:
            raise InputError("--slurm-option needs --slurm")

    def check_available(self) -> None:
        """Check, before anything is written, that this cluster can start here.

        Raises:
            InputError: Dask (or dask-jobqueue for ``--slurm``) is not installed, or ``--slurm``
                without Slurm's ``sbatch`` on the PATH.
        """
        _distributed()
        if self.slurm:
            try:
                import dask_jobqueue  # noqa: F401
            except ImportError as err:
                raise InputError("--slurm needs dask-jobqueue: pip install 'mrseg[cohort]'") from err
            if shutil.which("sbatch") is None:
                raise InputError("--slurm needs Slurm's sbatch on the PATH: run on the cluster's login node")

    def sizes(self) -> tuple[int, int]:
        """(workers, threads per worker), defaults filled in for this machine's cores."""
        cores = available_cores()
        workers = self.workers or max(1, min(cores, int(available_memory_gb() // GB_PER_WORKER)))
        threads = self.threads_per_worker or max(1, cores // workers)
        return workers, threads

    def for_cases(self, cases: int) -> ClusterSpec:
        """This cluster with no more workers than ``cases`` to run, where mrseg starts the workers.

        A worker that would never get a case still costs its start and a copy of the model (a
        retry of one failed case on a 16-core machine would start 16). Threads per worker left
        to the default share the cores among the workers that remain. A running scheduler's
        workers are used as they are.
        """
        workers, _ = self.sizes()
        if self.scheduler or cases >= workers:
            return self
        return replace(self, workers=max(1, cases))


def parse_slurm_options(items: list[str] | None) -> dict[str, str]:
    """``["queue=gpu", "memory=16GB"]`` → a dict.

    Raises:
        InputError: an item without ``=``.
    """
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--slurm-option takes KEY=VALUE, got {item!r} (e.g. queue=gpu, memory=16GB)")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise InputError("cohort runs need Dask's distributed package: pip install 'mrseg[cohort]'") from err
    return distributed


def slurm_cluster(spec: ClusterSpec, **extra: Any) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for ``spec`` (no job submitted until it is scaled).

    Each job is one worker process with one Dask thread (one case at a time) and books
    ``threads_per_worker`` CPUs for torch.

    Raises:
        InputError: dask-jobqueue is not installed.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as err:
        raise InputError("--slurm needs dask-jobqueue: pip install 'mrseg[cohort]'") from err
    _, threads = spec.sizes()
    options: dict[str, Any] = dict(spec.slurm_options)
    directives = []
    if "gpus" in options:
        directives.append(f"--gres=gpu:{options.pop('gpus')}")
    if "job_extra" in options:
        directives.append(options.pop("job_extra"))
    memory = options.pop("memory", f"{4 * threads}GB")
    prologue = [f"export {name}={value}" for name, value in worker_environment(threads).items()]
    # the scheduler runs here (the login node); its dashboard only when asked for, as with a LocalCluster
    scheduler = {"dashboard": spec.dashboard and _has_dashboard(), **extra.pop("scheduler_options", {})}
    return SLURMCluster(cores=1, processes=1, job_cpu=threads, memory=memory, job_extra_directives=directives,
                        job_script_prologue=prologue, scheduler_options=scheduler, **options, **extra)


@contextmanager
def open_client(spec: ClusterSpec, *, retries: int) -> Iterator[Client]:
    """A Dask client on the cluster ``spec`` describes, closed (with the cluster mrseg started) on exit.

    A worker that dies while running a case (killed, out of memory) makes the scheduler run the
    case elsewhere up to ``retries`` times (``distributed.scheduler.allowed-failures``; an external
    scheduler keeps its own setting).
    """
    distributed = _distributed()
    import dask

    workers, threads = spec.sizes()
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.nanny.pre-spawn-environ": worker_environment(threads),
                          "distributed.worker.preload": ["mrseg.cohort.worker_logs"], **QUIET_WORKERS}):
        if spec.scheduler:
            client = distributed.Client(spec.scheduler, timeout="30s")
            cluster = None
        elif spec.slurm:
            cluster = slurm_cluster(spec)
            cluster.scale(jobs=workers)
            client = distributed.Client(cluster)
        else:
            # The scheduler's HTTP routes (health, metrics) on a free port, never a fixed 8787 that a
            # second cohort would find taken; the Bokeh dashboard among them only when asked for.
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
                scheduler_kwargs={"dashboard": spec.dashboard and _has_dashboard()})
            client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}
"""Dask settings for workers that run one long task at a time on busy cores: no statistical
profiler sampling the task's stack every 10 ms, and event-loop ticks and memory checks every
half second instead of every 20 and 100 ms, so Dask's own threads take less time from torch's."""


def worker_environment(threads: int) -> dict[str, str]:
    """Environment of a worker process.

    Dask's default gives every library one thread and makes glibc return freed memory at once
    (``MALLOC_TRIM_THRESHOLD_``); a worker here runs one case with ``threads`` threads, and the
    engine keeps freed memory for the next tile on purpose. Dask runs tasks in a thread, and glibc
    gives such threads their own memory arenas: the same 16 demo-model cases took 11.4–13.3 s of
    predict time in a thread against 9.1–10.1 s in the main thread, and 10.5–11.2 s with
    ``MALLOC_ARENA_MAX=1`` (one arena for all threads), so workers get that too.
    """
    return {"MALLOC_ARENA_MAX": "1",
            **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard address, or None when its page does not answer (a scheduler
    started without the dashboard still lists the service; its web server then answers 404 at
    once). The first page is drawn on request, which took over a second on a loaded CI machine:
    hence the 15 s timeout."""
    import urllib.error
    import urllib.request

    if not _has_dashboard():
        return None
    link = str(client.dashboard_link)
    try:
        with urllib.request.urlopen(link, timeout=15.0):
            return link
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _has_dashboard() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["GB_PER_WORKER", "SLURM_OPTIONS", "ClusterSpec", "available_cores", "available_memory_gb", "dashboard_link",
           "open_client", "parse_slurm_options", "slurm_cluster", "worker_environment"]
