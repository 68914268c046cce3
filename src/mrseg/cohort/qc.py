"""Quality control of a cohort: per case and organ the volume, and flags a reviewer looks at first.

Each finished case has a statistics file (the cohort always writes it): per class the volume, the
centroid in LPS millimetres and whether the class touches the image border; its case record
keeps each class's confidence (the mean winning softmax probability of its voxels). From these,
each case earns the flags of :data:`RULES` (kind → severity and when), each with a short
reason. Cases are ranked by the sum of their flags' severities, then by their worst flag, then
by flag count, worst first. The report (``cohort_qc.md``) prints the rules as a table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mrseg.cohort.manifest import Manifest
from mrseg.cohort.plan import PLAN_FILE, CohortPlan, read_plan
from mrseg.io.files import write_bytes_atomic
from mrseg.report.records import read_case_record

log = logging.getLogger(__name__)

QC_TABLE = "cohort_qc.csv"
QC_REPORT = "cohort_qc.md"
QC_PLOT = "cohort_qc_volumes.png"

RULES = {
    "laterality": (3, "an organ of the patient's right lies left of its left-side partner: the liver left of the "
                      "spleen or the stomach, the right kidney left of the left kidney (LPS x grows to the patient's "
                      "left): a left-right flipped header, a mirrored acquisition"),
    "orientation": (3, "the spine anterior of the aorta or of the organs' centre, or an organ of the chest below one "
                       "of the abdomen or pelvis (the heart below the liver, lungs below the kidneys or the bladder, "
                       "the liver below the bladder): wrong axis labels in the header"),
    "missing": (2, "an organ under 1 mL while the organs around it are present (the gallbladder is never expected; "
                   "in a cohort of 8 or more cases, only organs the model finds in at least half of them)"),
    "volume_outlier": (2, "a modified z-score 0.6745 (v - median) / MAD beyond ±3.5 over the cohort's untruncated "
                          "volumes of the organ (at least 8 cases; Iglewicz and Hoaglin), or a volume outside a broad "
                          "adult range"),
    "truncated": (1, "a solid organ touches the image border: its volume is a lower bound"),
    "uncertain": (1, "the network hesitated over an organ: the mean winning probability of its voxels under 0.5, or "
                     "a robust z-score of it under -3.5 against the cohort (at least 8 cases): an unusual sequence, "
                     "artefacts, pathology"),
}
"""Flag kind → (severity, when it is raised). Positional rules use organs of at least
:data:`POSITION_ML`, so stray blobs of a weak segmentation do not count. Not checked:
disagreement between folds (the folds' logits are averaged before anything is kept)."""
SEVERITY = {kind: severity for kind, (severity, _) in RULES.items()}
"""Flag kind → weight in the ranking."""

PRESENT_ML = 1.0
"""An organ under this volume counts as absent."""
POSITION_ML = 20.0
"""Positional rules use organs of at least this volume."""
ROBUST_Z = 3.5
MIN_CASES_FOR_Z = 8
UNSURE_BELOW = 0.5
"""An organ whose voxels' mean winning probability is under this is ``uncertain``."""

RIGHT_OF = (("liver", "spleen"), ("liver", "stomach"), ("right_kidney", "left_kidney"))
"""(organ on the patient's right, organ on the left)."""
ABOVE = (("heart", "liver"), ("left_lung", "left_kidney"), ("right_lung", "right_kidney"),
         ("left_lung", "urinary_bladder"), ("right_lung", "urinary_bladder"), ("heart", "urinary_bladder"),
         ("liver", "urinary_bladder"))
"""(organ above, organ below)."""
POSTERIOR_OF = (("spine", "aorta"),)
"""(organ behind, organ in front); the spine is also checked against the centre of all other organs."""
EXPECTED = {
    "liver": ("right_kidney", "right_lung"),
    "spleen": ("left_kidney", "left_lung"),
    "right_kidney": ("left_kidney",),
    "left_kidney": ("right_kidney",),
    "right_lung": ("left_lung",),
    "left_lung": ("right_lung",),
    "stomach": ("liver", "spleen"),
    "pancreas": ("liver", "spleen", "left_kidney"),
    "aorta": ("liver", "spine"),
    "inferior_vena_cava": ("liver", "right_kidney"),
    "spine": ("left_autochthonous_muscle", "right_autochthonous_muscle"),
    "urinary_bladder": ("left_femur", "right_femur"),
}
"""Organ → neighbours: when every neighbour is present the organ is expected in the field of view.
The gallbladder is never expected (cholecystectomy is common)."""
SOLID_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney", "pancreas", "gallbladder", "heart",
                "urinary_bladder", "stomach")
"""Organs whose volume matters whole: touching the border makes them ``truncated``. Lungs, bones,
muscles, vessels and bowel routinely leave the field of view and are not flagged."""
ADULT_RANGE_ML = {"liver": (600.0, 3500.0), "spleen": (30.0, 1500.0), "right_kidney": (50.0, 450.0),
                  "left_kidney": (50.0, 450.0), "pancreas": (20.0, 250.0)}
"""Broad adult volume ranges (mL) that only a failed segmentation or a marked pathology leaves."""


@dataclass(frozen=True)
class Organ:
    """One organ of one case, as its statistics give it."""

    volume_ml: float
    centroid_mm: tuple[float, float, float] | None
    touches_border: bool
    confidence: float | None = None


_ABSENT = Organ(0.0, None, False)


@dataclass(frozen=True)
class Flag:
    """One finding: its kind (a key of :data:`SEVERITY`), the organs it concerns and a short reason."""

    kind: str
    organs: tuple[str, ...]
    reason: str

    def text(self) -> str:
        return f"{self.kind} ({self.reason})"


@dataclass
class CaseQC:
    """A case's organs and flags."""

    case: str
    organs: dict[str, Organ]
    flags: list[Flag] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(SEVERITY[f.kind] for f in self.flags)

    def flagged(self, organ: str) -> bool:
        return any(organ in f.organs for f in self.flags)


@dataclass(frozen=True)
class CohortQC:
    """Every checked case, worst first, with the classes in catalogue order and the unchecked cases."""

    cases: list[CaseQC]
    classes: list[str]
    unchecked: list[tuple[str, str]]

    def counts(self) -> dict[str, int]:
        return {kind: sum(any(f.kind == kind for f in c.flags) for c in self.cases) for kind in SEVERITY}


def organs_from_statistics(path: Path, confidence: Mapping[str, float] | None = None) -> dict[str, Organ]:
    """The organs of a case from its statistics JSON (:func:`mrseg.report.statistics.write_statistics`)
    and the confidence its case record keeps."""
    data = json.loads(path.read_text())
    sure = confidence or {}
    return {row["name"]: Organ(float(row["volume_ml"]),
                               tuple(row["centroid_mm"]) if row.get("centroid_mm") else None,  # type: ignore[arg-type]
                               bool(row["touches_border"]), sure.get(row["name"]))
            for row in data["classes"]}


def case_flags(organs: Mapping[str, Organ]) -> list[Flag]:
    """The flags one case earns on its own (all but ``volume_outlier`` against the cohort)."""
    placed = {name: o.centroid_mm for name, o in organs.items() if o.volume_ml >= POSITION_ML and o.centroid_mm}
    flags = []
    wrong = [(r, left, placed[left][0] - placed[r][0]) for r, left in RIGHT_OF
             if r in placed and left in placed and placed[r][0] > placed[left][0]]
    if wrong:
        flags.append(Flag("laterality", tuple(o for r, left, _ in wrong for o in (r, left)), "; ".join(
            f"{r} {-d:.0f} mm left of {left}" for r, left, d in wrong) + ": flipped left-right header?"))
    flags.extend(_orientation(organs, placed))
    expected = [organ for organ, around in EXPECTED.items()
                if organ in organs and organs[organ].volume_ml < PRESENT_ML
                and all(n in organs and organs[n].volume_ml >= POSITION_ML for n in around)]
    if expected:
        flags.append(_missing(tuple(expected)))
    cut = [o for o in SOLID_ORGANS if o in organs and organs[o].volume_ml >= PRESENT_ML and organs[o].touches_border]
    if cut:
        flags.append(Flag("truncated", tuple(cut), f"{', '.join(cut)} at the image border"))
    unsure = [(name, o.confidence) for name, o in organs.items()
              if o.volume_ml >= PRESENT_ML and o.confidence is not None and o.confidence < UNSURE_BELOW]
    if unsure:
        flags.append(Flag("uncertain", tuple(n for n, _ in unsure), ", ".join(
            f"{n} mean probability {p:.2f}" for n, p in unsure)))
    for organ, (low, high) in ADULT_RANGE_ML.items():
        o = organs.get(organ)
        if o is not None and o.volume_ml >= PRESENT_ML and not o.touches_border and not low <= o.volume_ml <= high:
            flags.append(Flag("volume_outlier", (organ,),
                              f"{organ} {o.volume_ml:.0f} mL outside the adult range {low:.0f}-{high:.0f} mL"))
    return flags


def _missing(organs: tuple[str, ...]) -> Flag:
    return Flag("missing", organs, ", ".join(f"{o} absent beside {' and '.join(EXPECTED[o])}" for o in organs))


def _orientation(organs: Mapping[str, Organ], placed: Mapping[str, tuple[float, float, float]]) -> list[Flag]:
    reasons, involved = [], []
    for back, front in POSTERIOR_OF:
        if back in placed and front in placed and placed[back][1] < placed[front][1]:
            reasons.append(f"{back} anterior of {front}")
            involved += [back, front]
    others = [(name, organs[name].volume_ml) for name in placed if name != "spine"]
    if "spine" in placed and len(others) >= 3:
        weights = np.array([v for _, v in others])
        centre_y = float(np.average([placed[n][1] for n, _ in others], weights=weights))
        if placed["spine"][1] < centre_y:
            reasons.append(f"spine {centre_y - placed['spine'][1]:.0f} mm anterior of the organs' centre")
            involved.append("spine")
    for up, down in ABOVE:
        if up in placed and down in placed and placed[up][2] < placed[down][2]:
            reasons.append(f"{up} below {down}")
            involved += [up, down]
    if not reasons:
        return []
    return [Flag("orientation", tuple(dict.fromkeys(involved)), "; ".join(reasons) + ": wrong axis labels?")]


def confidence_outliers(cases: Sequence[CaseQC], classes: Sequence[str]) -> None:
    """Add ``uncertain`` flags for organs whose confidence is far below the cohort's (robust
    z-score under -3.5, at least 8 cases) to ``cases``, in place."""
    for organ in classes:
        values = [(c, c.organs[organ].confidence) for c in cases if organ in c.organs
                  and c.organs[organ].volume_ml >= PRESENT_ML and c.organs[organ].confidence is not None]
        for case, z, median in _robust_outliers(values):
            if z < -ROBUST_Z and not any(f.kind == "uncertain" and organ in f.organs for f in case.flags):
                sure = case.organs[organ].confidence
                case.flags.append(Flag("uncertain", (organ,), f"{organ} mean probability {sure:.2f}, cohort "
                                       f"median {median:.2f}, robust z {z:+.1f}"))


def _robust_outliers(values: Sequence[tuple[CaseQC, float | None]]) -> list[tuple[CaseQC, float, float]]:
    """(case, modified z-score, median) of every value, when there are enough to judge."""
    if len(values) < MIN_CASES_FOR_Z:
        return []
    numbers = np.array([float(v) for _, v in values if v is not None])
    median = float(np.median(numbers))
    mad = float(np.median(np.abs(numbers - median)))
    if mad <= 0:
        return []
    return [(case, 0.6745 * (float(v) - median) / mad, median) for case, v in values if v is not None]


def drop_unfound_missing(cases: Sequence[CaseQC]) -> None:
    """Remove ``missing`` for organs the model finds in fewer than half of a cohort of at least 8
    cases, in place: a class the model rarely finds says something about the model, not the case
    (the bundled demo model never finds the pancreas or the aorta)."""
    if len(cases) < MIN_CASES_FOR_Z:
        return
    found = {organ: sum(c.organs.get(organ, _ABSENT).volume_ml >= PRESENT_ML for c in cases) for organ in EXPECTED}
    rare = {organ for organ, n in found.items() if n < len(cases) / 2}
    for case in cases:
        kept = []
        for flag in case.flags:
            if flag.kind == "missing":
                organs = tuple(o for o in flag.organs if o not in rare)
                if not organs:
                    continue
                flag = _missing(organs)
            kept.append(flag)
        case.flags[:] = kept


def volume_outliers(cases: Sequence[CaseQC], classes: Sequence[str]) -> None:
    """Add ``volume_outlier`` flags against the cohort's distribution (robust z-score; see the
    module docstring) to ``cases``, in place."""
    for organ in classes:
        whole = [c for c in cases if organ in c.organs and not c.organs[organ].touches_border]
        values = [(c, c.organs[organ].volume_ml) for c in whole if c.organs[organ].volume_ml >= PRESENT_ML]
        for case, z, median in _robust_outliers(values):
            if abs(z) > ROBUST_Z:
                case.flags.append(Flag("volume_outlier", (organ,), f"{organ} {case.organs[organ].volume_ml:.0f} mL, "
                                       f"cohort median {median:.0f} mL, robust z {z:+.1f}"))


def build_qc(out_dir: Path, plan: CohortPlan, manifest: Manifest, classes: Sequence[str]) -> CohortQC:
    """Check every done case of the cohort; cases without statistics are listed as unchecked."""
    checked, unchecked = [], []
    for row in manifest.rows.values():
        if row.status != "done":
            continue
        record = read_case_record(plan.outputs.record_path(row.case))
        stats = record.outputs.get("statistics_json") if record is not None else None
        if record is None or stats is None:
            unchecked.append((row.case, "no statistics in its case record"))
            continue
        try:
            organs = organs_from_statistics(out_dir / stats.path, record.confidence)
        except (OSError, ValueError, KeyError) as err:
            unchecked.append((row.case, f"statistics unreadable ({err})"))
            continue
        checked.append(CaseQC(row.case, organs, case_flags(organs)))
    drop_unfound_missing(checked)
    volume_outliers(checked, classes)
    confidence_outliers(checked, classes)
    for case in checked:
        case.flags.sort(key=lambda f: -SEVERITY[f.kind])
    checked.sort(key=lambda c: (-c.score, -max((SEVERITY[f.kind] for f in c.flags), default=0), -len(c.flags),
                                c.case))
    return CohortQC(checked, list(classes), unchecked)


def quality_control(out_dir: Path) -> tuple[CohortQC, list[Path]]:
    """Check the cohort in ``out_dir`` and write its tables, report and plot (``mrseg cohort qc``).

    Raises:
        InputError: ``out_dir`` holds no cohort; ModelError: the cohort's model folder is gone.
    """
    from mrseg.errors import InputError
    from mrseg.model.plans import read_dataset

    plan = read_plan(out_dir)
    if plan is None:
        raise InputError(f"{out_dir}: no cohort here (no {PLAN_FILE}); run mrseg cohort run first")
    foreground = read_dataset(plan.model.folder / "dataset.json").foreground
    classes = [name for name, _ in sorted(foreground.items(), key=lambda kv: kv[1])]
    qc = build_qc(out_dir, plan, Manifest.read(out_dir), classes)
    return qc, write_qc(qc, out_dir)


def write_qc(qc: CohortQC, out_dir: Path) -> list[Path]:
    """Write ``cohort_qc.csv``, ``cohort_qc.md`` and (with matplotlib) ``cohort_qc_volumes.png``."""
    written = [write_bytes_atomic(out_dir / QC_TABLE, _table(qc)), write_bytes_atomic(out_dir / QC_REPORT, _report(qc))]
    try:
        written.append(_plot(qc, out_dir / QC_PLOT))
    except ImportError:
        log.warning("no volume plot: matplotlib is not installed (pip install 'mrseg[report]')")
    return written


def _table(qc: CohortQC) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    sure = any(o.confidence is not None for c in qc.cases for o in c.organs.values())
    writer.writerow(["rank", "case", "score", "flags", *[f"{name}_ml" for name in qc.classes],
                     *([f"{name}_confidence" for name in qc.classes] if sure else [])])
    for rank, case in enumerate(qc.cases, start=1):
        volumes = [f"{case.organs[n].volume_ml:.3f}" if n in case.organs else "" for n in qc.classes]
        confidence = [f"{case.organs[n].confidence:.4f}" if n in case.organs and case.organs[n].confidence is not None
                      else "" for n in qc.classes] if sure else []
        writer.writerow([rank, case.case, case.score, "; ".join(f.text() for f in case.flags), *volumes, *confidence])
    return buffer.getvalue()


def _report(qc: CohortQC) -> str:
    counts = qc.counts()
    flagged = [c for c in qc.cases if c.flags]
    lines = ["# Cohort quality control", "",
             f"{len(qc.cases)} case(s) checked, {len(flagged)} flagged; {len(qc.unchecked)} not checked.", "",
             "| flag | severity | cases |", "|---|---|---|"]
    lines += [f"| {kind} | {SEVERITY[kind]} | {counts[kind]} |" for kind in SEVERITY]
    lines += ["", "## Flagged cases, worst first", ""]
    if flagged:
        lines += ["| rank | case | score | flags |", "|---|---|---|---|"]
        lines += [f"| {i} | {c.case} | {c.score} | {'; '.join(f.text() for f in c.flags)} |"
                  for i, c in enumerate(flagged, start=1)]
    else:
        lines.append("None.")
    if qc.unchecked:
        lines += ["", "## Not checked", ""] + [f"- {case}: {why}" for case, why in qc.unchecked]
    lines += ["", "## Rules", "", "| flag | severity | when |", "|---|---|---|"]
    lines += [f"| {kind} | {severity} | {when} |" for kind, (severity, when) in RULES.items()]
    lines += ["", f"Positional rules use organs of at least {POSITION_ML:.0f} mL. Cases are ranked by the sum of "
              "their flags' severities, then by their worst flag. Not checked: disagreement between folds.", ""]
    return "\n".join(lines)


def _plot(qc: CohortQC, path: Path) -> Path:
    """Each organ's volumes, one row per organ, one point per case (three scatter calls in all, so
    a cohort of thousands draws in about the time of ten cases)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    organs = [n for n in qc.classes if any(c.organs.get(n) and c.organs[n].volume_ml >= PRESENT_ML for c in qc.cases)]
    figure = Figure(figsize=(9, 0.32 * max(len(organs), 4) + 1.4))
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    rng = np.random.default_rng(0)
    plain: list[tuple[float, float]] = []
    ringed: list[tuple[float, float]] = []
    named: list[tuple[float, float, str]] = []
    for row, organ in enumerate(organs):
        points = [(c.organs[organ].volume_ml, c) for c in qc.cases
                  if organ in c.organs and c.organs[organ].volume_ml >= PRESENT_ML]
        jitter = rng.uniform(-0.18, 0.18, len(points))
        for (volume, case), j in zip(points, jitter):
            found = {f.kind for f in case.flags if organ in f.organs}
            if "volume_outlier" in found or "missing" in found:
                named.append((volume, row + j, case.case))
            elif found:
                ringed.append((volume, row + j))
            else:
                plain.append((volume, row + j))
    if plain:
        axis.scatter([v for v, _ in plain], [y for _, y in plain], s=10, color="0.45", alpha=0.7, linewidths=0)
    if ringed:
        axis.scatter([v for v, _ in ringed], [y for _, y in ringed], s=18, facecolors="none", edgecolors="tab:orange",
                     zorder=2)
    if named:
        axis.scatter([v for v, _, _ in named], [y for _, y, _ in named], s=24, color="tab:red", zorder=3)
    for volume, y, case_name in named:
        axis.annotate(case_name, (volume, y), fontsize=6, color="tab:red", xytext=(3, 2), textcoords="offset points")
    axis.set_yticks(range(len(organs)), organs, fontsize=7)
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("volume (mL, log scale)")
    axis.set_title(f"Organ volumes of {len(qc.cases)} cases; red: volume outlier (named), orange ring: truncated "
                   "or misplaced", fontsize=9)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    handle = io.BytesIO()
    figure.savefig(handle, format="png", dpi=110)
    return write_bytes_atomic(path, handle.getvalue())


__all__ = ["QC_PLOT", "QC_REPORT", "QC_TABLE", "RULES", "SEVERITY", "CaseQC", "CohortQC", "Flag", "Organ", "build_qc",
           "case_flags", "confidence_outliers", "drop_unfound_missing", "organs_from_statistics", "quality_control",
           "volume_outliers", "write_qc"]
