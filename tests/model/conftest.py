"""Model folders for the model tests: copies of the session's trained tiny weights, written as nnU-Net does."""

from __future__ import annotations

import pytest

import model_factory


@pytest.fixture()
def weights(trained_weights):
    """The trained PlainConvUNet weights of the test session."""
    return trained_weights["PlainConvUNet"]


@pytest.fixture()
def write_model():
    """``write_model(folder, weights, num_folds=2, plans=None, dataset=None, **options)`` → a model folder
    with ``num_folds`` copies of ``weights`` (no training, no perturbation)."""
    def write(folder, weights, *, num_folds=2, plans=None, dataset=None, **options):
        plans = model_factory.make_plans() if plans is None else plans
        dataset = model_factory.make_dataset() if dataset is None else dataset
        return model_factory.write_model_folder(folder, plans, dataset, [weights] * num_folds, **options)

    return write
