"""Evaluation reports: long and summary CSV, Markdown, JSON and box plots (PNG).

Files written into the report folder (each to a temporary name first, then renamed):

* ``metrics.csv``: one row per case, class and metric (``case,class,metric,value,status``, then
  one column per stratum); ``value`` is empty where undefined and ``status`` says why.
* ``summary.csv``: per class, over all cases and within each stratum group: n, missing,
  capped, mean, SD, median, quartiles, min, max.
* ``report.md``: settings, failures, warnings, the per-organ table (mean ± SD, median [IQR]) and
  organ × stratum tables (e.g. organ × sequence, as in the MRSegmentator paper).
* ``report.json``: everything above in one machine-readable file.
* ``plots/<metric>.png`` (box plot per organ) and ``plots/<metric>_by_<key>.png`` (boxes per
  organ grouped by stratum); these need matplotlib (the ``report`` extra).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mrseg._version import __version__
from mrseg.errors import InputError
from mrseg.evaluation.cohort import CohortEvaluation, SummaryRow
from mrseg.evaluation.metrics import DISTANCE_METRICS, METRIC_TITLES, METRICS, MetricRecord, Status, values_of
from mrseg.io.files import write_bytes_atomic

LONG_COLUMNS: tuple[str, ...] = ("case", "class", "metric", "value", "status")
"""The fixed columns of ``metrics.csv`` (stratum columns follow)."""

SUMMARY_COLUMNS: tuple[str, ...] = (
    "group_by", "group", "class", "metric", "n", "n_missing", "n_capped",
    "mean", "sd", "median", "q1", "q3", "min", "max",
)
"""The columns of ``summary.csv``."""

_SUMMARY_FIELDS = ("mean", "sd", "median", "q1", "q3", "minimum", "maximum")


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files a report consists of."""

    metrics_csv: Path
    summary_csv: Path
    markdown: Path
    json: Path
    plots: tuple[Path, ...]


def _number(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def long_rows(evaluation: CohortEvaluation) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the long per-case table (``metrics.csv``)."""
    keys = list(evaluation.strata_keys)
    rows = []
    for record in evaluation.records():
        for metric in METRICS:
            rows.append(
                [record.case, record.label, metric, _number(record.metrics.value(metric)), str(record.metrics.status)]
                + [record.strata.get(k, "") for k in keys]
            )
    return list(LONG_COLUMNS) + keys, rows


def _summary_csv_rows(rows: Sequence[SummaryRow]) -> list[list[str]]:
    out = []
    for r in rows:
        s = r.summary
        out.append([
            r.group_by, r.group, r.label, r.metric, str(s.n), str(s.n_missing), str(s.n_capped),
            *(_number(v) for v in (s.mean, s.sd, s.median, s.q1, s.q3, s.minimum, s.maximum)),
        ])
    return out


def _digits(metric: str) -> int:
    return 2 if metric in DISTANCE_METRICS else 3


def _markdown(
    evaluation: CohortEvaluation, rows: Sequence[SummaryRow], by: Sequence[str], distance_cap: float | None
) -> str:
    s = evaluation.settings
    tau = f"{s.nsd_tolerance:g}"
    n_cases = len(evaluation.cases)
    lines = [
        "# Segmentation evaluation",
        "",
        f"- predictions: label map `{s.pred_map}`; references: label map `{s.ref_map}`",
        f"- cases: {n_cases} reference(s), {n_cases - len(evaluation.failures)} evaluated, "
        f"{len(evaluation.failures)} failure(s), "
        f"{len(evaluation.unmatched_predictions)} prediction(s) without reference",
        f"- classes ({len(s.classes)}): {', '.join(s.classes)}",
        f"- NSD tolerance {tau} mm; distances for one-sided empty masks: "
        + (f"capped at {distance_cap:g} mm" if distance_cap is not None else "left out (counted as missing)"),
        f"- predictions on another grid: {'resampled (nearest neighbour)' if s.resample_pred else 'refused'}",
        "- Dice and NSD are 0 where one mask is empty; classes absent in both are left out, not scored 1.",
        "- HD95 is the larger of the two directed 95th percentiles; ASSD pools both directions; "
        "surfaces are voxels with a face neighbour outside the mask (MONAI's definition).",
        f"- mrseg {__version__}",
        "",
    ]
    if evaluation.failures:
        lines += ["## Failures", "", "| case | status | reference | detail |", "|---|---|---|---|"]
        for c in evaluation.failures:
            lines.append(f"| {c.case} | {c.status} | {c.ref} | {c.error or 'scored as an empty prediction'} |")
        lines.append("")
    if evaluation.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in evaluation.warnings] + [""]

    overall = {(r.label, r.metric): r.summary for r in rows if r.group_by == "all"}
    lines += [
        "## Per organ, all cases",
        "",
        "mean ± SD; median [Q1, Q3]. n: cases where the class is in the reference or the prediction; "
        "missing: distances undefined because one mask is empty.",
        "",
        f"| class | n | Dice | Dice median [IQR] | HD (mm) | HD95 (mm) | HD95 median [IQR] | ASSD (mm) | NSD@{tau}mm "
        "| missing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in s.classes:
        if (label, "dice") not in overall:
            continue
        get = {m: overall[(label, m)] for m in METRICS}
        lines.append(
            f"| {label} | {get['dice'].n} | {get['dice'].mean_sd(3)} | {get['dice'].median_iqr(3)} "
            f"| {get['hd'].mean_sd(2)} | {get['hd95'].mean_sd(2)} | {get['hd95'].median_iqr(2)} "
            f"| {get['assd'].mean_sd(2)} | {get['nsd'].mean_sd(3)} | {get['hd95'].n_missing} |"
        )
    lines.append("")

    for key in by:
        groups = sorted({r.group for r in rows if r.group_by == key}, key=lambda g: (g == "n/a", g))
        table = {(r.group, r.label, r.metric): r.summary for r in rows if r.group_by == key}
        for metric in ("dice", "hd95", "nsd"):
            lines += [
                f"## {METRIC_TITLES[metric]} by {key} (mean ± SD, n)",
                "",
                "| class | " + " | ".join(groups) + " |",
                "|---|" + "---|" * len(groups),
            ]
            for label in s.classes:
                cells = []
                for g in groups:
                    summary = table.get((g, label, metric))
                    cells.append("–" if summary is None else f"{summary.mean_sd(_digits(metric))} ({summary.n})")
                if any(c != "–" for c in cells):
                    lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")

    if n_cases <= 20:
        lines += [
            "## Per case",
            "",
            f"| case | class | status | Dice | HD (mm) | HD95 (mm) | ASSD (mm) | NSD@{tau}mm |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for record in evaluation.records():
            if record.metrics.status is Status.ABSENT:
                continue
            cells = []
            for metric in METRICS:
                value = record.metrics.value(metric)
                cells.append("–" if value is None else f"{value:.{_digits(metric)}f}")
            lines.append(f"| {record.case} | {record.label} | {record.metrics.status} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(
    evaluation: CohortEvaluation, rows: Sequence[SummaryRow], by: Sequence[str], distance_cap: float | None
) -> dict[str, Any]:
    s = evaluation.settings
    cases = []
    for c in evaluation.cases:
        cases.append({
            "case": c.case,
            "reference": str(c.ref) if c.ref else None,
            "prediction": str(c.pred) if c.pred else None,
            "status": c.status,
            "error": c.error,
            "resampled": c.resampled,
            "strata": dict(c.strata),
            "classes": {
                name: {
                    "status": str(m.status),
                    "pred_voxels": m.pred_voxels,
                    "ref_voxels": m.ref_voxels,
                    **{metric: _clean(m.value(metric)) for metric in METRICS},
                }
                for name, m in c.metrics.items()
            },
        })
    return {
        "mrseg_version": __version__,
        "settings": {
            "pred_map": s.pred_map,
            "ref_map": s.ref_map,
            "classes": list(s.classes),
            "nsd_tolerance_mm": s.nsd_tolerance,
            "distance_cap_mm": distance_cap,
            "resample_pred": s.resample_pred,
            "pred_postfix": s.pred_postfix,
            "metadata": s.metadata,
            "pattern": s.pattern,
            "stratified_by": list(by),
        },
        "counts": {
            "references": len(evaluation.cases),
            "failures": len(evaluation.failures),
            "unmatched_predictions": len(evaluation.unmatched_predictions),
        },
        "failures": [{"case": c.case, "status": c.status, "reference": str(c.ref), "error": c.error}
                     for c in evaluation.failures],
        "unmatched_predictions": [str(p) for p in evaluation.unmatched_predictions],
        "warnings": list(evaluation.warnings),
        "summary": [
            {
                "group_by": r.group_by, "group": r.group, "class": r.label, "metric": r.metric,
                "n": r.summary.n, "n_missing": r.summary.n_missing, "n_capped": r.summary.n_capped,
                **{k: _clean(getattr(r.summary, k)) for k in _SUMMARY_FIELDS},
            }
            for r in rows
        ],
        "cases": cases,
    }


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "key"


def _box_plot(
    groups: Sequence[tuple[str, list[list[float]]]], labels: Sequence[str], title: str, ylabel: str
) -> bytes:
    """One box per class (and per group within a class); returns PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_groups = len(groups)
    fig = Figure(figsize=(max(6.0, 0.3 * len(labels) * max(1, n_groups) + 2.0), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / n_groups
    colours = [f"C{i % 10}" for i in range(n_groups)]
    for g, (group_name, data) in enumerate(groups):
        positions = [i + (g - (n_groups - 1) / 2) * width for i in range(len(labels))]
        present = [(p, d) for p, d in zip(positions, data) if d]
        if not present:
            continue
        parts = ax.boxplot(
            [d for _, d in present], positions=[p for p, _ in present], widths=width * 0.85,
            patch_artist=True, manage_ticks=False, showfliers=False,
        )
        for box in parts["boxes"]:
            box.set_facecolor(colours[g])
            box.set_alpha(0.6)
        for position, values in present:  # the cases themselves, which a box hides when n is small
            ax.plot([position] * len(values), values, ".", color="black", markersize=3, alpha=0.6)
        if n_groups > 1:
            ax.plot([], [], color=colours[g], linewidth=8, alpha=0.6, label=group_name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([label.replace("_", " ") for label in labels], rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if n_groups > 1:
        ax.legend(fontsize=8, ncols=min(n_groups, 4))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise InputError(
            "box plots need matplotlib; install the report extra (pip install 'mrseg[report]') or pass --no-plots"
        ) from err


def _plots(
    evaluation: CohortEvaluation, folder: Path, by: Sequence[str], distance_cap: float | None
) -> list[Path]:
    records = evaluation.records()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tau = f"{evaluation.settings.nsd_tolerance:g}"

    def values(chosen: list[MetricRecord], metric: str) -> list[float]:
        return values_of(chosen, metric, distance_cap=distance_cap)[0]

    by_label: dict[str, list[MetricRecord]] = {}
    for r in records:
        by_label.setdefault(r.label, []).append(r)
    for metric in METRICS:
        labels = [lab for lab in evaluation.classes if values(by_label.get(lab, []), metric)]
        if not labels:
            continue
        title = METRIC_TITLES[metric] + (f" at {tau} mm" if metric == "nsd" else "") + " per organ"
        ylabel = METRIC_TITLES[metric]
        data = [values(by_label[lab], metric) for lab in labels]
        path = folder / f"{metric}.png"
        write_bytes_atomic(path, _box_plot([("all", data)], labels, title, ylabel))
        written.append(path)
        for key in by:
            groups_of: dict[str, list[MetricRecord]] = {}
            for r in records:
                groups_of.setdefault(r.strata.get(key, "n/a"), []).append(r)
            names = sorted(groups_of, key=lambda g: (g == "n/a", g))
            grouped = [
                (g, [values([r for r in groups_of[g] if r.label == lab], metric) for lab in labels]) for g in names
            ]
            path = folder / f"{metric}_by_{_safe(key)}.png"
            write_bytes_atomic(path, _box_plot(grouped, labels, f"{title}, by {key}", ylabel))
            written.append(path)
    return written


def write_report(
    evaluation: CohortEvaluation,
    out: str | os.PathLike[str],
    *,
    by: Sequence[str] | None = None,
    distance_cap: float | None = None,
    plots: bool = True,
) -> ReportFiles:
    """Write the evaluation report files into folder ``out`` (created if missing).

    Args:
        evaluation: the result of :func:`~mrseg.evaluation.evaluate_cohort`.
        out: report folder.
        by: stratum keys for the grouped tables and plots (default: dataset, site, modality and
            sequence where the cases have them).
        distance_cap: mm used for distances undefined because one mask is empty; None leaves
            them out of the aggregates.
        plots: draw the PNG box plots (needs matplotlib).

    Returns:
        The written paths.

    Raises:
        InputError: unknown stratum key, invalid cap, or plots without matplotlib.
    """
    folder = Path(out)
    if plots:
        _require_matplotlib()  # before anything is written
    if folder.exists() and not folder.is_dir():
        raise InputError(f"report folder {folder} is a file; give a folder path")
    folder.mkdir(parents=True, exist_ok=True)
    keys = evaluation.default_strata() if by is None else tuple(by)
    rows = evaluation.summary(by=keys, distance_cap=distance_cap)

    header, long = long_rows(evaluation)
    metrics_csv = folder / "metrics.csv"
    write_bytes_atomic(metrics_csv, _csv_bytes(header, long))
    summary_csv = folder / "summary.csv"
    write_bytes_atomic(summary_csv, _csv_bytes(SUMMARY_COLUMNS, _summary_csv_rows(rows)))
    markdown = folder / "report.md"
    write_bytes_atomic(markdown, _markdown(evaluation, rows, keys, distance_cap).encode("utf-8"))
    report_json = folder / "report.json"
    text = json.dumps(_json(evaluation, rows, keys, distance_cap), indent=1, allow_nan=False)
    write_bytes_atomic(report_json, text.encode("utf-8"))
    pngs = _plots(evaluation, folder / "plots", keys, distance_cap) if plots else []
    return ReportFiles(metrics_csv, summary_csv, markdown, report_json, tuple(pngs))
