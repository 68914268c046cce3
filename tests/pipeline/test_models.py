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
