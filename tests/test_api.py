"""The top-level Python API: ``mrseg.segment``."""

from __future__ import annotations

import numpy as np
import pytest

import mrseg
from mrseg.errors import ModelError
from mrseg.inference import Segmenter
from mrseg.io import read_image, write_image
from parity import phantom_image


def test_segment_path_and_image_give_the_same_labels(model_dir, tmp_path):
    folder = model_dir()
    image = phantom_image("PIL")
    path = write_image(image, tmp_path / "scan.mha")
    from_path = mrseg.segment(path, model=folder, folds=[0], step=0.8)
    from_image = mrseg.segment(read_image(path), model=folder, folds=[0], step=0.8)
    assert from_path.geometry == read_image(path).geometry
    np.testing.assert_array_equal(from_path.array, from_image.array)
    np.testing.assert_array_equal(from_path.array, Segmenter(folder, folds=[0], step=0.8).segment(image).array)
    assert set(np.unique(from_path.array)) >= {0, 1, 2}


def test_segment_reads_the_model_from_the_environment(model_dir, monkeypatch):
    monkeypatch.setenv("MRSEG_WEIGHTS_PATH", str(model_dir()))
    labels = mrseg.segment(phantom_image("LPS"), folds=[0], step=0.8)
    assert labels.array.dtype == np.uint8 and labels.array.max() > 0


def test_segment_without_model_explains_where_weights_go(monkeypatch):
    monkeypatch.delenv("MRSEG_WEIGHTS_PATH", raising=False)
    with pytest.raises(ModelError, match="MRSEG_WEIGHTS_PATH"):
        mrseg.segment(phantom_image("LPS"))
