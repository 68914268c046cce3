"""Label maps moved onto another voxel grid: nearest neighbour in world space.

A prediction evaluated against a reference on another grid, or phantom anatomy drawn on one
grid and imaged on another, needs its label map on a second grid (any orientation, oblique,
anisotropic, another field of view). That is geometry, so it lives here beside the image object
and SimpleITK's file conversion. It is not :mod:`mrseg.inference.resample`, which is nnU-Net's
spline resampling of intensities and logits to a new spacing over the same field of view.
"""

from __future__ import annotations

import numpy as np

from mrseg.errors import InputError
from mrseg.io.files import to_itk
from mrseg.io.image import Geometry, Image


def resample_labels(labels: Image, reference: Geometry | Image) -> Image:
    """Nearest-neighbour resampling of a label map onto another grid, in world space (SimpleITK).

    Voxels of the target grid outside the source image get 0 (background). Label values and
    the dtype are kept (SimpleITK passes values through double precision, which holds every
    value up to 2**53 exactly), and the result carries the target geometry exactly; the input
    is not modified.

    Args:
        labels: integer label map (any integer dtype).
        reference: the target grid, or an image on it (only its geometry is used).

    Returns:
        The label map on ``reference``'s grid, in ``labels``' dtype.

    Raises:
        InputError: ``labels`` holds booleans or floating-point values.

    Example:
        >>> import numpy as np
        >>> labels = Image.from_array(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), spacing=(1.0, 1.0, 2.0))
        >>> finer = Geometry((4, 2, 2), (1.0, 1.0, 1.0), (0.0, 0.0, -0.5), labels.geometry.direction)
        >>> resample_labels(labels, finer).array[:, 0, 0].tolist()
        [0, 0, 4, 4]
    """
    import SimpleITK as sitk

    grid = reference.geometry if isinstance(reference, Image) else reference
    array = np.asarray(labels.array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"resample_labels needs an integer label map, got dtype {array.dtype}; "
            "round and cast the labels to an integer type first"
        )
    source = to_itk(labels)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in grid.shape[::-1]])  # ITK sizes are (x, y, z)
    resampler.SetOutputSpacing(grid.spacing)
    resampler.SetOutputOrigin(grid.origin)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor)
    resampler.SetDefaultPixelValue(0)
    resampler.SetOutputPixelType(source.GetPixelID())
    moved = resampler.Execute(source)
    return Image(sitk.GetArrayFromImage(moved).astype(array.dtype, copy=False), grid)
