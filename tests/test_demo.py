"""The bundled demo model and ``mrseg demo``: offline end to end, nothing downloaded.

The demo model is trained by ``scripts/train_demo_model.py`` and committed under
``src/mrseg/models/demo`` (see its MODEL_CARD.md). The test of the error a missing model gives
runs only where the weights are absent (a build without them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mrseg.cli import main
from mrseg.demo import run_demo
from mrseg.errors import ModelError
from mrseg.io import read_image
from mrseg.model.store import bundled_model_folder, resolve_model_folder
from mrseg.phantom.cases import make_case, write_case

MIN_LIVER_DICE = 0.5  # the model card: 0.90 on held-out phantoms of every contrast

DEMO_PRESENT = (Path(__file__).resolve().parents[1] / "src" / "mrseg" / "models" / "demo" / "fold_0" /
                "checkpoint_final.pth").is_file()
needs_demo = pytest.mark.skipif(not DEMO_PRESENT, reason="demo model missing from src/mrseg/models/demo")


@needs_demo
def test_the_demo_model_ships_inside_the_package_and_is_small():
    folder = bundled_model_folder("demo")
    assert folder == resolve_model_folder("demo")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "plans.json").is_file()


@needs_demo
def test_mrseg_demo_synthesises_segments_and_scores(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "mean over" in out
    (labels,) = tmp_path.glob("*_seg.nii.gz")
    (image,) = [p for p in tmp_path.glob("demo_*.nii.gz") if not p.name.endswith(("_seg.nii.gz", "_labels.nii.gz"))]
    assert read_image(labels).geometry.same_grid(read_image(image).geometry)


@needs_demo
def test_demo_on_a_given_file_finds_its_truth_beside_it(tmp_path):
    case = make_case(seed=90_123, modality="mr", sequence="t2_haste", fov="abdomen", spacing=(3.0, 3.0, 3.0))
    paths = write_case(case, tmp_path / "in", "given")
    result = run_demo(tmp_path / "out", paths["image"])
    assert result.truth == paths["labels"] and result.labels == tmp_path / "out" / "given_seg.nii.gz"
    assert result.dice["liver"] > MIN_LIVER_DICE


@needs_demo
def test_segment_takes_the_demo_model_by_name(tmp_path):
    case = make_case(seed=90_124, modality="ct", sequence="native", fov="abdomen", spacing=(4.0, 4.0, 4.0))
    paths = write_case(case, tmp_path / "in", "ct")
    assert main(["segment", str(paths["image"]), "-o", str(tmp_path / "out"), "--model", "demo",
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "ct_seg.nii.gz").is_file()


@pytest.mark.skipif(DEMO_PRESENT, reason="the demo model is present")
def test_a_missing_demo_model_says_how_to_get_it(tmp_path, caplog):
    with pytest.raises(ModelError, match="the demo model is not in this installation .*train_demo_model.py"):
        bundled_model_folder("demo")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "train_demo_model.py" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing synthesised for a model that is not there


def test_an_unknown_bundled_model_is_refused():
    with pytest.raises(ModelError, match="unknown bundled model 'nope'; bundled: demo"):
        bundled_model_folder("nope")
    assert resolve_model_folder("some/folder") == Path("some/folder")


@pytest.mark.parametrize(("weight", "refusal"), [
    (["liver", "lots"], "--class-weight CLASS WEIGHT: the weight must be a number"),
    (["livr", "3"], "class weight for livr: the demo dataset has no such class (its classes: spleen, "),
    (["liver", "0"], "class weight 0.0 for liver: give a positive number"),
])
def test_train_demo_model_refuses_a_bad_class_weight_before_it_synthesises(tmp_path, weight, refusal):
    """Synthesis and planning take minutes: a weight that training would refuse is refused first."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(script), "--work", str(work), "--class-weight", *weight],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert refusal in done.stderr and "Traceback" not in done.stderr
    assert not work.exists()
