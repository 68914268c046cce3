"""mrseg: segment 40 anatomical structures in MRI and CT with nnU-Net v2 models.

The Python entry point is :func:`segment` (one image in memory → its label map; the model is
loaded once per process and kept). For files and folders with every output, records and resume,
use :mod:`mrseg.pipeline` (what ``mrseg segment`` runs).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

from mrseg._version import __version__

if TYPE_CHECKING:
    from mrseg.io.image import Image
    from mrseg.model.loader import Model


def segment(
    image: str | os.PathLike[str] | Image,
    *,
    model: str | os.PathLike[str] | Model | None = None,
    folds: Sequence[int | str] | None = None,
    step: float = 0.5,
    tta: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    series: str | None = None,
    channel: int | None = None,
    ensemble: bool = True,
    postprocessing: bool = True,
) -> Image:
    """Segment one image and return its label map on the input's exact grid.

    Args:
        image: a path (NIfTI, MHA, NRRD or a DICOM folder) or an :class:`~mrseg.io.Image`.
        model: an nnU-Net v2 model folder or loaded model; default ``MRSEG_WEIGHTS_PATH``.
        folds: folds to ensemble (default: all present in the folder).
        step: sliding-window step (0.5 default; 0.8 is the published tool's fast mode).
        tta: mirror test-time augmentation where the checkpoint allows it.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: torch CPU threads.
        series: SeriesInstanceUID when a DICOM folder holds several series.
        channel: volume to use from a 4-D image.
        ensemble: average with the members the model folder's ``mrseg_ensemble.json`` names
            (the bundled demo is such an ensemble); False runs the folder's own model alone.
        postprocessing: apply the steps of the model folder's nnU-Net ``postprocessing.json``
            (keep the largest connected component of the classes it names), where it has one.

    Returns:
        A uint8 label :class:`~mrseg.io.Image` (0 background) with the input's geometry.

    Example:
        >>> labels = mrseg.segment("scan.nii.gz", model="weights/")  # doctest: +SKIP
        >>> labels.array.shape == mrseg.io.read_image("scan.nii.gz").array.shape  # doctest: +SKIP
        True
    """
    from mrseg.inference.segmenter import Segmenter
    from mrseg.io.files import read_image
    from mrseg.io.image import Image as _Image
    from mrseg.model.loader import Model as _Model
    from mrseg.model.store import resolve_model_folder
    from mrseg.pipeline import ModelSpec, load
    from mrseg.postprocess import apply_postprocessing

    volume = image if isinstance(image, _Image) else read_image(image, series=series, channel=channel)
    if isinstance(model, _Model):
        labels = Segmenter(model, step=step, tta=tta, device=device, threads=threads,
                           ensemble=ensemble).segment(volume)
        return apply_postprocessing(labels, model.postprocessing) if postprocessing else labels
    # A named published model is installed on first use; the model is loaded once per process.
    spec = ModelSpec(resolve_model_folder(model, install_missing=True), name=str(model) if model else None,
                     folds=tuple(str(f) for f in folds) if folds is not None else None, step=step, tta=tta,
                     device=device, threads=threads, ensemble=ensemble, postprocessing=postprocessing)
    return load(spec).label(volume, source=str(image) if not isinstance(image, _Image) else "image").labels


__all__ = ["__version__", "segment"]
