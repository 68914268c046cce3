"""Cohort runs: the case pipeline over Dask workers, resumable, fault-tolerant, with quality control.

- :mod:`~mrseg.cohort.plan`: the cohort's model, outputs and retry budget (``cohort.json``);
- :mod:`~mrseg.cohort.manifest`: one row per case (``cohort_manifest.csv``) and the attempts log;
- :mod:`~mrseg.cohort.cluster`: a Dask ``LocalCluster``, a running scheduler, or Slurm workers;
- :mod:`~mrseg.cohort.worker`: what a worker runs for one case (the model loaded once per worker);
- :mod:`~mrseg.cohort.runner`: :func:`run_cohort`, submitting, collecting and resuming;
- :mod:`~mrseg.cohort.qc`: per case and organ volumes and flags, ranked worst first.

Dask is an optional dependency (``pip install 'mrseg[cohort]'``): it is imported only when a
cohort runs.

Example:
    >>> from mrseg.cohort import ClusterSpec, CohortPlan, run_cohort  # doctest: +SKIP
    >>> plan = CohortPlan(ModelSpec(Path("weights/")), OutputSpec(Path("cohort_out")))  # doctest: +SKIP
    >>> cases = collect_cases(["scans/"]).cases  # doctest: +SKIP
    >>> run_cohort(Path("cohort_out"), plan, ClusterSpec(workers=2), cases=cases)  # doctest: +SKIP
"""

from mrseg.cohort.cluster import ClusterSpec, open_client, parse_slurm_options, slurm_cluster
from mrseg.cohort.manifest import AttemptLog, Manifest, ManifestRow, summarize
from mrseg.cohort.plan import CohortPlan, read_plan
from mrseg.cohort.runner import CohortResult, run_cohort

__all__ = ["AttemptLog", "ClusterSpec", "CohortPlan", "CohortResult", "Manifest", "ManifestRow", "open_client",
           "parse_slurm_options", "read_plan", "run_cohort", "slurm_cluster", "summarize"]
