"""Models: nnU-Net v2 plans and dataset files, networks and checkpoints."""

from mrseg.model.loader import WEIGHTS_ENV, Model, available_folds, load_model, resolve_model_folder
from mrseg.model.plans import Configuration, DatasetInfo, Plans

__all__ = [
    "WEIGHTS_ENV", "Configuration", "DatasetInfo", "Model", "Plans", "available_folds", "load_model",
    "resolve_model_folder",
]
