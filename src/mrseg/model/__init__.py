"""Models: nnU-Net v2 plans and dataset files, networks, checkpoints, and the model store.

:mod:`mrseg.model.loader` loads a model folder (exported here). Turning a model name (bundled,
published, imported, ``$MRSEG_WEIGHTS_PATH``) into a folder, and installing models, is
:mod:`mrseg.model.store`'s job; it is not imported here, so loading a folder never pulls in the
store or the downloader.
"""

from mrseg.model.loader import ENSEMBLE_FILE, Model, available_folds, ensemble_members, load_model
from mrseg.model.plans import Configuration, DatasetInfo, Plans

__all__ = ["ENSEMBLE_FILE", "Configuration", "DatasetInfo", "Model", "Plans", "available_folds", "ensemble_members",
           "load_model"]
