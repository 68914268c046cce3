"""Per-class statistics, checked against SimpleITK's label statistics filters (an independent reference)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.classes import BASE
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.io import Geometry, Image, read_image, write_image
from mrseg.io.files import to_itk
from mrseg.report.statistics import CSV_COLUMNS, class_statistics, write_statistics

NAMES = {c.index: c.name for c in BASE.classes}
OBLIQUE = (0.9751777621563826, 0.2202037819860384, 0.02320833028709636,
           -0.22083307671203586, 0.9748693566874329, 0.029368173619188184,
           -0.016158107115803254, -0.033764356811228656, 0.9992991963288863)


@pytest.fixture()
def case(rng):
    geometry = Geometry((20, 30, 40), (0.8, 1.1, 3.0), (-12.0, 40.0, 7.5), OBLIQUE)
    labels = np.zeros(geometry.shape, np.uint8)
    labels[3:9, 5:20, 10:25] = 5        # liver, inside
    labels[0:4, 0:6, 30:40] = 1         # spleen, touches three faces
    labels[10:12, 22:25, 2:4] = 13      # aorta, small
    image = rng.normal(100.0, 20.0, geometry.shape).astype(np.float32)
    return Image(labels, geometry), Image(image, geometry)


def test_statistics_match_simpleitk(case):
    labels, image = case
    rows = {row.label: row for row in class_statistics(labels, image, names=NAMES)}
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(to_itk(labels))
    intensity = sitk.LabelStatisticsImageFilter()
    intensity.Execute(to_itk(image), to_itk(labels))
    for value in (1, 5, 13):
        row = rows[value]
        assert row.voxels == shape.GetNumberOfPixels(value)
        assert row.volume_ml == pytest.approx(shape.GetPhysicalSize(value) / 1000.0)
        x, y, z, sx, sy, sz = shape.GetBoundingBox(value)
        assert row.bbox_min == (x, y, z) and row.bbox_max == (x + sx - 1, y + sy - 1, z + sz - 1)
        itk_labels = to_itk(labels)
        corners = np.array([itk_labels.TransformIndexToPhysicalPoint((i, j, k)) for i in (x, x + sx - 1)
                            for j in (y, y + sy - 1) for k in (z, z + sz - 1)])
        assert row.bbox_min_mm == pytest.approx(tuple(corners.min(axis=0)), abs=1e-3)
        assert row.bbox_max_mm == pytest.approx(tuple(corners.max(axis=0)), abs=1e-3)
        assert row.mean == pytest.approx(intensity.GetMean(value), rel=1e-9)
        n = row.voxels
        assert row.std == pytest.approx(intensity.GetSigma(value) * np.sqrt((n - 1) / n), rel=1e-6)  # population SD
        mask = labels.array == value
        assert row.median == pytest.approx(float(np.median(image.array[mask])))
        assert row.centroid_mm == pytest.approx(shape.GetCentroid(value), abs=1e-3)
    assert rows[1].touches_border and not rows[5].touches_border and not rows[13].touches_border


@pytest.mark.parametrize("direction", [(-1, 0, 0, 0, -1, 0, 0, 0, 1), (0, 0, -1, 1, 0, 0, 0, -1, 0), OBLIQUE])
def test_the_world_box_has_min_below_max_on_flipped_and_permuted_grids(direction):
    geometry = Geometry((10, 12, 14), (1.0, 2.0, 3.0), (5.0, -7.0, 11.0), direction)
    labels = np.zeros(geometry.shape, np.uint8)
    labels[2:7, 3:9, 4:12] = 5
    (row,) = class_statistics(Image(labels, geometry), names={5: "liver"})
    assert all(lo < hi for lo, hi in zip(row.bbox_min_mm, row.bbox_max_mm))


def test_absent_classes_get_a_row_of_zeros_unless_left_out(case):
    labels, image = case
    rows = class_statistics(labels, image, names=NAMES)
    assert [row.label for row in rows] == list(range(1, 41))
    liver_free = rows[1]  # right kidney: absent
    assert (liver_free.voxels, liver_free.volume_ml, liver_free.mean, liver_free.bbox_min,
            liver_free.centroid_mm) == (0, 0.0, None, None, None)
    present = class_statistics(labels, None, names=NAMES, include_absent=False)
    assert [row.name for row in present] == ["spleen", "liver", "aorta"]
    assert present[1].mean is None and present[1].voxels == 6 * 15 * 15


def test_bad_inputs_are_named(case):
    labels, image = case
    with pytest.raises(InputError, match="integer label map, got dtype float32"):
        class_statistics(image, None, names=NAMES)
    other = Image(image.array, Geometry(image.geometry.shape, (1.0, 1.0, 1.0), image.geometry.origin, OBLIQUE))
    with pytest.raises(InputError, match="different grids"):
        class_statistics(labels, other, names=NAMES)
    with pytest.raises(InputError, match=r"holds values \[13\] that the class list does not name"):
        class_statistics(labels, image, names={1: "spleen", 5: "liver"})


def test_json_and_csv_files_round_trip(case, tmp_path):
    labels, image = case
    rows = class_statistics(labels, image, names=NAMES, include_absent=False)
    json_path, csv_path = write_statistics(rows, tmp_path / "case_seg_stats", meta={"case": "case"})
    payload = json.loads(json_path.read_text())
    assert payload["case"] == "case" and [c["name"] for c in payload["classes"]] == ["spleen", "liver", "aorta"]
    assert payload["classes"][1]["bbox_min"] == list(rows[1].bbox_min)
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [int(r["voxels"]) for r in table] == [r.voxels for r in rows]
    assert table[0]["touches_border"] == "True" and table[1]["bbox_max"] == " ".join(map(str, rows[1].bbox_max))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_seg_stats.csv", "case_seg_stats.json"]


def test_stats_command_on_files(case, tmp_path, capsys):
    labels, image = case
    write_image(labels, tmp_path / "scan_seg.nii.gz")
    write_image(image, tmp_path / "scan.nii.gz")
    assert main(["stats", str(tmp_path / "scan_seg.nii.gz"), str(tmp_path / "scan.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "touches border" in out
    payload = json.loads((tmp_path / "scan_seg_stats.json").read_text())
    assert payload["classes"][4]["name"] == "liver" and payload["classes"][4]["voxels"] == 6 * 15 * 15
    assert main(["stats", str(tmp_path / "scan_seg.nii.gz"), "--catalogue", "body_comp",
                 "-o", str(tmp_path / "bc")]) == 2  # 13 is not a body-composition class
    assert not (tmp_path / "bc.json").exists()


def test_segment_writes_statistics_per_case(model_dir, tmp_path):
    from parity import phantom_image

    write_image(phantom_image("oblique"), tmp_path / "in" / "scan.nii.gz")
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_dir()),
                 "--fast", "--statistics", "--preview", "--no-progress"]) == 0
    payload = json.loads((tmp_path / "out" / "scan_seg_stats.json").read_text())
    labels = read_image(tmp_path / "out" / "scan_seg.nii.gz").array
    counted = {row["label"]: row["voxels"] for row in payload["classes"]}
    assert counted == {v: int((labels == v).sum()) for v in counted}
    assert sum(counted.values()) == int((labels > 0).sum()) > 0
    assert (tmp_path / "out" / "scan_seg_stats.csv").is_file()
    assert (tmp_path / "out" / "scan_seg_preview.png").read_bytes().startswith(b"\x89PNG")


def test_real_label_map_volumes(shared_data):
    labels = read_image(shared_data / "labels" / "example_mr_sm__ref40.nii.gz")
    image = read_image(shared_data / "mr" / "example_mr_sm.nii.gz")
    rows = {row.name: row for row in class_statistics(labels, image, names=NAMES, include_absent=False)}
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.Execute(sitk.ReadImage(str(shared_data / "labels" / "example_mr_sm__ref40.nii.gz")))
    assert rows["liver"].volume_ml == pytest.approx(shape.GetPhysicalSize(5) / 1000.0)
    # The small MR is a 20-slice crop: the liver runs out of the field of view, and the flag says so.
    assert rows["liver"].touches_border and 100 < rows["liver"].volume_ml < 3500
