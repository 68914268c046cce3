"""The run report written by mrseg segment: versions, model, settings, every case's status and timings."""

from __future__ import annotations

import json
from importlib import metadata

from mrseg import __version__
from mrseg.cli import main
from mrseg.io import write_image
from mrseg.report.run_report import software_versions
from parity import phantom_image


def test_versions_name_the_libraries_that_shape_the_result():
    versions = software_versions()
    assert versions["mrseg"] == __version__ and versions["torch"] == metadata.version("torch")
    assert {"python", "platform", "numpy", "SimpleITK"} <= set(versions)


def test_segment_writes_one_report_per_run(model_dir, tmp_path):
    write_image(phantom_image("LPS"), tmp_path / "in" / "good.nii.gz")
    (tmp_path / "in" / "broken.nii.gz").write_bytes(b"not an image")
    assert main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_dir()),
                 "--fast", "--no-progress"]) == 1
    (path,) = tmp_path.glob("out/mrseg_run_*.json")
    report = json.loads(path.read_text())
    assert report["counts"] == {"ok": 1, "skipped": 0, "failed": 1}
    assert report["model"]["folds"] == ["0"] and report["model"]["folder"] == str(model_dir())
    assert report["settings"]["step"] == 0.8 and report["settings"]["device"] == "cpu"
    assert report["versions"]["mrseg"] == __version__ and report["model_load_seconds"] > 0
    cases = {case["name"]: case for case in report["cases"]}
    assert cases["good"]["status"] == "ok" and cases["good"]["tiles"] >= 1
    assert cases["good"]["output"].endswith("good_seg.nii.gz")
    assert {"preprocess", "predict", "export"} <= set(cases["good"]["timings"])
    assert cases["broken"]["status"] == "failed" and "broken.nii.gz" in cases["broken"]["error"]
    assert report["seconds"] >= cases["good"]["seconds"]
