"""One case, end to end, for every command: describe the work, process each case, get a record.

- :class:`CaseSpec` (an input), :class:`ModelSpec` (a model folder and how to run it) and
  :class:`OutputSpec` (which outputs, where, under which names) describe the work;
- :func:`load` loads a model once per process; :func:`process_case` does one case under its lock,
  writing its outputs complete-or-absent with a :class:`~mrseg.report.records.CaseRecord` last;
- :func:`run_batch` runs many cases (and several models, combined in memory).

Example:
    >>> from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec, load, process_case  # doctest: +SKIP
    >>> model = load(ModelSpec(Path("weights/")))  # doctest: +SKIP
    >>> process_case(CaseSpec.of("scan.nii.gz"), model, OutputSpec(Path("out"))).record.status  # doctest: +SKIP
    'segmented'
"""

from mrseg.pipeline.batch import BatchResult, clean_output_folder, run_batch
from mrseg.pipeline.case import CaseBusy, CaseOutcome, CombinedLabels, process_case
from mrseg.pipeline.cases import CaseList, CaseSpec, collect_cases
from mrseg.pipeline.models import LoadedModel, ModelSpec, load
from mrseg.pipeline.outputs import OUTPUT_TYPES, OutputSpec

__all__ = [
    "OUTPUT_TYPES", "BatchResult", "CaseBusy", "CaseList", "CaseOutcome", "CaseSpec", "CombinedLabels",
    "LoadedModel", "ModelSpec", "OutputSpec", "clean_output_folder", "collect_cases", "load", "process_case",
    "run_batch",
]
