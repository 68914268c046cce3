"""Quality-control rules on the truth label maps of phantom cases (labels where the organs really
are, as a model that labels by appearance gives them), with the headers flipped as real archives
get them wrong; and the tables, report and plot a cohort gets."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.cohort import CohortPlan, Manifest
from mrseg.cohort.qc import (
    QC_PLOT,
    QC_REPORT,
    QC_TABLE,
    CaseQC,
    Organ,
    build_qc,
    case_flags,
    confidence_outliers,
    drop_unfound_missing,
    volume_outliers,
    write_qc,
)
from mrseg.io import Image
from mrseg.pipeline import CaseSpec, ModelSpec, OutputSpec
from mrseg.report.records import CaseRecord, OutputFile
from mrseg.report.statistics import class_statistics, write_statistics

NAMES = {c.index: c.name for c in BASE.classes}
CLASSES = [c.name for c in BASE.classes]


def organs_of(labels: Image) -> dict[str, Organ]:
    return {r.name: Organ(r.volume_ml, r.centroid_mm, r.touches_border) for r in class_statistics(labels, names=NAMES)}


def flipped(labels: Image, axis: int) -> Image:
    """The same array under a header whose ``axis`` (0 = x, 1 = y, 2 = z) points the other way."""
    direction = np.asarray(labels.geometry.direction, float).reshape(3, 3).copy()
    direction[:, axis] *= -1
    return Image(labels.array, dataclasses.replace(labels.geometry, direction=tuple(direction.ravel())))


def kinds(flags) -> set[str]:
    return {f.kind for f in flags}


def test_a_normal_cohort_has_no_laterality_or_orientation_flags(truth_cohort):
    for labels in truth_cohort:
        assert not kinds(case_flags(organs_of(labels))) & {"laterality", "orientation"}


def test_a_left_right_flipped_header_is_flagged_laterality_and_nothing_else_about_position(truth_cohort):
    for labels in truth_cohort:
        flags = case_flags(organs_of(flipped(labels, 0)))
        laterality = [f for f in flags if f.kind == "laterality"]
        assert laterality and "liver" in laterality[0].organs and "left of" in laterality[0].reason
        assert "orientation" not in kinds(flags)


@pytest.mark.parametrize("axis", [1, 2], ids=["anterior-posterior", "superior-inferior"])
def test_a_flipped_front_back_or_head_feet_axis_is_flagged_orientation(truth_cohort, axis):
    for labels in truth_cohort:
        flags = case_flags(organs_of(flipped(labels, axis)))
        assert "orientation" in kinds(flags) and "laterality" not in kinds(flags)


def test_an_organ_removed_beside_its_neighbours_is_flagged_missing(truth_cohort):
    labels = truth_cohort[1]  # trunk: both kidneys, lungs and the liver in the field of view
    organs = organs_of(labels.with_array(np.where(labels.array == BASE.index_of("liver"), 0, labels.array)))
    (missing,) = [f for f in case_flags(organs) if f.kind == "missing"]
    assert missing.organs == ("liver",) and "right_kidney" in missing.reason


def test_missing_is_kept_for_organs_the_model_finds_and_dropped_for_those_it_rarely_finds():
    def case(name, **volumes):
        neighbours = {"liver": 1500.0, "spleen": 200.0, "left_kidney": 150.0, "right_kidney": 150.0,
                      "right_lung": 900.0, "left_lung": 900.0}
        organs = {n: Organ(v, (0.0, 0.0, 0.0), False) for n, v in {**neighbours, **volumes}.items()}
        return CaseQC(name, organs, case_flags(organs))

    cases = [case(f"c{i}", pancreas=0.0) for i in range(8)] + [case("noliver", liver=0.0, pancreas=0.0)]
    assert all(any(f.kind == "missing" and "pancreas" in f.organs for f in c.flags) for c in cases[:8])
    drop_unfound_missing(cases)
    assert [(c.case, f.organs) for c in cases for f in c.flags if f.kind == "missing"] == [("noliver", ("liver",))]


def test_volume_outliers_use_a_robust_z_score_over_untruncated_cases():
    def case(name, volume, border=False):
        return CaseQC(name, {"spleen": Organ(volume, (90.0, 30.0, 150.0), border)})

    cases = [case(f"c{i}", v) for i, v in enumerate([200, 210, 190, 220, 205, 195, 215, 200])]
    cases += [case("big", 900), case("cut", 20, border=True)]
    volume_outliers(cases, ["spleen"])
    flagged = {c.case: c.flags for c in cases if c.flags}
    assert list(flagged) == ["big"]
    assert "robust z +" in flagged["big"][0].reason and "median 205" in flagged["big"][0].reason
    few = [case("a", 200), case("b", 900)]
    volume_outliers(few, ["spleen"])
    assert not any(c.flags for c in few)  # under 8 cases: no cohort statistics


def test_uncertain_flags_a_hesitant_organ_and_one_far_below_the_cohort():
    def case(name, sure):
        return CaseQC(name, {"spleen": Organ(200.0, (90.0, 30.0, 150.0), False, sure)})

    (flag,) = case_flags({"spleen": Organ(200.0, (90.0, 30.0, 150.0), False, 0.42),
                          "liver": Organ(1500.0, (-60.0, 0.0, 200.0), False, 0.97)})
    assert flag.kind == "uncertain" and flag.organs == ("spleen",) and "0.42" in flag.reason
    cases = [case(f"c{i}", p) for i, p in enumerate([0.95, 0.96, 0.94, 0.95, 0.97, 0.96, 0.95, 0.94])]
    cases.append(case("odd", 0.71))
    confidence_outliers(cases, ["spleen"])
    assert [(c.case, f.kind) for c in cases for f in c.flags] == [("odd", "uncertain")]
    assert "cohort median 0.95" in cases[-1].flags[0].reason


def test_truncated_only_for_solid_organs_at_the_border():
    organs = {"liver": Organ(1500.0, (-60.0, 0.0, 200.0), True), "left_lung": Organ(900.0, (80.0, 20.0, 300.0), True)}
    (flag,) = case_flags(organs)
    assert flag.kind == "truncated" and flag.organs == ("liver",)


def test_a_cohort_gets_its_table_report_and_plot_worst_first(tmp_path, truth_cohort):
    out = tmp_path / "cohort"
    plan = CohortPlan(ModelSpec(tmp_path / "model"), OutputSpec(out))
    manifest = Manifest(out)
    flips = {"case03": 0, "case06": 2}
    for i, labels in enumerate(truth_cohort):
        name = f"case{i:02d}"
        if name in flips:
            labels = flipped(labels, flips[name])
        base = out / f"{name}_seg_stats"
        write_statistics(class_statistics(labels, names=NAMES), base, meta={"case": name})
        record = CaseRecord(name, f"{name}.nii.gz", "segmented",
                            outputs={"statistics_json": OutputFile(base.name + ".json", 1)})
        (out / f"{name}_seg_record.json").write_text(record.to_json())
        manifest.add([CaseSpec.of(tmp_path / f"{name}.nii.gz")])
        manifest.rows[name].status = "done"
    manifest.add([CaseSpec.of(tmp_path / "lost.nii.gz")])
    manifest.rows["lost"].status = "done"  # done, but its record is gone: listed as not checked

    qc = build_qc(out, plan, manifest, CLASSES)
    assert {c.case for c in qc.cases[:2]} == set(flips)
    assert {f.kind for f in qc.cases[0].flags} & {"laterality", "orientation"}
    assert qc.unchecked == [("lost", "no statistics in its case record")]
    paths = write_qc(qc, out)
    assert [p.name for p in paths] == [QC_TABLE, QC_REPORT, QC_PLOT]
    rows = list(csv.DictReader((out / QC_TABLE).open()))
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))
    assert rows[0]["case"] in flips and float(rows[0]["liver_ml"]) > 500
    by_case = {r["case"]: r for r in rows}
    assert "laterality (liver" in by_case["case03"]["flags"] and "orientation (" in by_case["case06"]["flags"]
    report = (out / QC_REPORT).read_text()
    assert "| laterality | 3 | 1 |" in report and "lost: no statistics" in report
    assert (out / QC_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "case00_seg_stats.json").read_text())["classes"][0]["centroid_mm"]
