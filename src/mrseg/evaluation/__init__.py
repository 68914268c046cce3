"""Evaluation: Dice and surface distances per organ, label maps, cohorts, stratified reports.

Pure metric functions work on boolean numpy masks with the spacing in numpy axis order;
:func:`evaluate_case` and :func:`evaluate_cohort` work on label images and files, mapping other
label indices (TotalSegmentator, AMOS22, CHAOS, a JSON file) into the 40 classes first;
:func:`write_report` writes the CSV, Markdown, JSON and PNG outputs.

Example:
    >>> from mrseg.evaluation import evaluate_cohort, write_report  # doctest: +SKIP
    >>> result = evaluate_cohort("preds/", "refs/", ref_map="totalseg_mr", metadata="meta.csv")  # doctest: +SKIP
    >>> write_report(result, "report/", distance_cap=100.0)  # doctest: +SKIP
"""

from mrseg.evaluation.cohort import (
    CaseEvaluation,
    CasePair,
    CohortEvaluation,
    EvaluationSettings,
    Pairing,
    SummaryRow,
    evaluate_case,
    evaluate_cohort,
    pair_cases,
    read_metadata,
    select_classes,
    strata_from_pattern,
)
from mrseg.evaluation.label_maps import (
    LABEL_MAP_NAMES,
    LabelMap,
    label_map,
    load_label_map,
    resolve_label_map,
    target_for_name,
)
from mrseg.evaluation.metrics import (
    DISTANCE_METRICS,
    METRICS,
    MaskMetrics,
    MetricAccumulator,
    MetricRecord,
    Status,
    Summary,
    SurfaceDistances,
    average_symmetric_surface_distance,
    compare_labels,
    compare_masks,
    dice,
    hausdorff_distance,
    hd95,
    labelled_as,
    normalized_surface_dice,
    surface,
    surface_distances,
)
from mrseg.evaluation.report import ReportFiles, write_report

__all__ = [
    "DISTANCE_METRICS", "LABEL_MAP_NAMES", "METRICS", "CaseEvaluation", "CasePair", "CohortEvaluation",
    "EvaluationSettings", "LabelMap", "MaskMetrics", "MetricAccumulator", "MetricRecord", "Pairing",
    "ReportFiles", "Status", "Summary", "SummaryRow", "SurfaceDistances", "average_symmetric_surface_distance",
    "compare_labels", "compare_masks", "dice", "evaluate_case", "evaluate_cohort", "hausdorff_distance", "hd95",
    "label_map", "labelled_as", "load_label_map", "normalized_surface_dice", "pair_cases", "read_metadata",
    "resolve_label_map", "select_classes", "strata_from_pattern", "surface", "surface_distances",
    "target_for_name", "write_report",
]
