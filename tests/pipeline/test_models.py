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
