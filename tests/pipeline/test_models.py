"""Models as the pipeline loads them: once per process, with the settings that identify their labels."""

from __future__ import annotations

from pathlib import Path

from mrseg.pipeline import ModelSpec, load


def test_a_model_is_loaded_once_per_process(model_dir):
    spec = ModelSpec(Path(model_dir()), folds=("0",))
    assert load(spec) is load(spec)
    settings = load(spec).settings
    assert len(settings["checkpoints"]["0"]) == 64 and settings["device"] == "cpu"
    assert settings["configuration"] == "3d_fullres" and settings["precision"] == "fp32"


def test_other_settings_are_another_model(model_dir):
    fast = load(ModelSpec(Path(model_dir()), folds=("0",), step=0.8))
    usual = load(ModelSpec(Path(model_dir()), folds=("0",), step=0.5))
    assert fast is not usual and fast.settings["step"] == 0.8 and usual.settings["step"] == 0.5
    assert fast.settings["checkpoints"] == usual.settings["checkpoints"]
    assert fast.describe()["folds"] == ["0"] and fast.title == Path(model_dir()).name


def test_an_ensembles_members_are_part_of_its_settings(tmp_path, model_dir):
    """The member's checksum is in the settings the case records compare: a new member is another model."""
    import json
    import shutil

    from mrseg.model import ENSEMBLE_FILE

    folder = tmp_path / "ensemble"
    shutil.copytree(model_dir(), folder)
    shutil.copytree(model_dir(), folder / "members" / "twin")
    (folder / ENSEMBLE_FILE).write_text(json.dumps({"members": ["members/twin"]}))
    plain = load(ModelSpec(Path(model_dir()), folds=("0",)))
    loaded = load(ModelSpec(folder, folds=("0",)))

    (member,) = loaded.settings["members"]
    assert member["folder"] == "members/twin" and member["configuration"] == "3d_fullres"
    assert member["checkpoints"] == plain.settings["checkpoints"] | {"1": member["checkpoints"]["1"]}
    assert set(member["checkpoints"]) == {"0", "1"}  # a member runs with all its folds
    assert loaded.describe()["members"] == loaded.settings["members"]
    assert "members" not in plain.settings and "members" not in plain.describe()


def test_a_folders_postprocessing_is_applied_recorded_and_can_be_turned_off(tmp_path, model_dir):
    """The steps of the folder's postprocessing.json change the labels (so they are part of the
    settings the case records compare); ``postprocessing=False`` gives the engine's labels."""
    import shutil

    import numpy as np
    from scipy import ndimage

    from mrseg.model.postprocessing import KeepLargestComponent, write_postprocessing
    from mrseg.postprocess import apply_postprocessing
    from parity import two_piece_image

    folder = tmp_path / "with_steps"
    shutil.copytree(model_dir(), folder)
    steps = (KeepLargestComponent((1, 2, 3, 4)), KeepLargestComponent((2,)))
    write_postprocessing(steps, folder / "postprocessing.json")
    image = two_piece_image("LPS")
    raw = load(ModelSpec(folder, folds=("0",), postprocessing=False))
    done = load(ModelSpec(folder, folds=("0",)))
    before = raw.label(image, source="scan").labels
    after = done.label(image, source="scan")

    assert ndimage.label(before.array > 0, structure=np.ones((3, 3, 3)))[1] > 1  # so the first step has work
    assert np.array_equal(after.labels.array, apply_postprocessing(before, steps).array)
    assert ndimage.label(after.labels.array > 0, structure=np.ones((3, 3, 3)))[1] == 1
    assert after.labels.geometry == image.geometry and "postprocess" in after.timings
    assert done.settings["postprocessing"] == [[1, 2, 3, 4], [2]] and "postprocessing" not in raw.settings
    assert done.describe()["postprocessing"][0].startswith("keep the largest connected component of labels 1, 2")
    plain = load(ModelSpec(Path(model_dir()), folds=("0",)))
    assert plain.postprocessing == () and "postprocessing" not in plain.settings
    assert raw.settings | {"postprocessing": [[1, 2, 3, 4], [2]]} == done.settings
