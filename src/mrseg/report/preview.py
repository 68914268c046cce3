"""Preview: one PNG with axial, coronal and sagittal slices and a coloured, labelled overlay.

The image and labels are reoriented to LPS first (:func:`mrseg.io.reorient`), so every preview
reads the same way whatever the file's axis order: axial slices seen from the feet (patient's
right on the left, anterior up), coronal from the front and sagittal from the patient's left,
superior up, each drawn with its true voxel aspect. The slices go through the centre of the
segmented voxels (of the body, when nothing is segmented). Drawn with matplotlib's Agg canvas,
no display needed (the ``report`` extra).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from mrseg.classes import class_colors
from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic
from mrseg.io.image import Image
from mrseg.io.orientation import reorient


def preview_slices(labels: Image, image: Image) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """The three views as (image slice, label slice, row/column aspect), rows top to bottom.

    Raises:
        InputError: the image and labels are on different grids.
    """
    if not image.geometry.same_grid(labels.geometry):
        raise InputError("the image and the label map are on different grids; pass the image the labels were made "
                         "from")
    img, _ = reorient(image, "LPS")
    lab, _ = reorient(labels, "LPS")
    volume, seg = img.array, lab.array  # (z: inferior→superior, y: anterior→posterior, x: right→left)
    sx, sy, sz = img.geometry.spacing
    z, y, x = _centre(seg, volume)
    return {
        "axial": (volume[z], seg[z], sy / sx),
        "coronal": (volume[:, y, :][::-1], seg[:, y, :][::-1], sz / sx),
        "sagittal": (volume[:, :, x][::-1], seg[:, :, x][::-1], sz / sy),
    }


def render_preview(
    labels: Image,
    image: Image,
    *,
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    title: str = "",
    alpha: float = 0.45,
) -> bytes:
    """The preview as PNG bytes.

    Args:
        labels: the label map.
        image: the image it was made from (same grid).
        names: label value → class name, for the legend.
        colors: label value → RGB (0–255); values without one are grey. Default: the catalogue's
            colours for ``names`` (:func:`mrseg.classes.class_colors`).
        title: a line above the views (the case name, say).
        alpha: overlay opacity.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError as err:
        raise InputError("previews need matplotlib: pip install 'mrseg[report]'") from err

    if colors is None:
        colors = class_colors(names)
    views = preview_slices(labels, image)
    lo, hi = _window(image.array)
    present = [int(v) for v in np.unique(labels.array) if v != 0]
    lut = np.zeros((max([*present, *colors, 0]) + 1, 4), np.float32)
    for value in present:
        lut[value, :3] = np.asarray(colors.get(value, (128, 128, 128))) / 255.0
        lut[value, 3] = alpha
    columns = 1 if len(present) <= 22 else 2
    figure = Figure(figsize=(14 + 2.6 * columns, 6.2), dpi=100, facecolor="black")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1, 4, width_ratios=(1, 1, 1, 0.55 * columns), left=0.01, right=0.99, top=0.92,
                               bottom=0.02, wspace=0.04)
    for column, (view, (gray, seg, aspect)) in enumerate(views.items()):
        axes = figure.add_subplot(grid[0, column])
        axes.imshow(gray, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        axes.imshow(lut[seg], aspect=aspect, interpolation="nearest")
        axes.set_title(view, color="white", fontsize=11)
        axes.set_axis_off()
    legend = figure.add_subplot(grid[0, 3])
    legend.set_axis_off()
    handles = [Patch(facecolor=_rgb(colors.get(v, (128, 128, 128))), label=f"{v} {names.get(v, '?')}")
               for v in present]
    if handles:
        legend.legend(handles=handles, loc="center left", frameon=False, labelcolor="white", fontsize=8,
                      ncol=columns)
    else:
        legend.text(0, 0.5, "no class segmented", color="white")
    if title:
        figure.suptitle(title, color="white", fontsize=12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="black")
    return buffer.getvalue()


def write_preview(
    labels: Image,
    image: Image,
    path: str | os.PathLike[str],
    *,
    names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    title: str = "",
) -> Path:
    """Render the preview and write it to ``path`` atomically."""
    return write_bytes_atomic(Path(path), render_preview(labels, image, names=names, colors=colors, title=title))


def _rgb(colour: tuple[int, int, int]) -> tuple[float, float, float]:
    return (colour[0] / 255.0, colour[1] / 255.0, colour[2] / 255.0)


def _centre(seg: np.ndarray, volume: np.ndarray) -> tuple[int, int, int]:
    """Centre of the segmented voxels, else of the voxels brighter than the image's median."""
    mask = seg > 0
    if not mask.any():
        mask = volume > np.median(volume)
    if not mask.any():
        return (seg.shape[0] // 2, seg.shape[1] // 2, seg.shape[2] // 2)
    centre = []
    for axis in range(3):
        profile = mask.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
        centre.append(int(round(float(np.average(np.arange(profile.size), weights=profile)))))
    return (centre[0], centre[1], centre[2])


def _window(volume: np.ndarray) -> tuple[float, float]:
    """Grey window: 1st to 99.5th percentile of the voxels above the 20th percentile (the air left out)."""
    values = volume.reshape(-1)
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    values = values[np.isfinite(values)]
    floor = np.percentile(values, 20)
    body = values[values > floor] if (values > floor).any() else values
    lo, hi = (float(v) for v in np.percentile(body, (1, 99.5)))
    return (lo, hi if hi > lo else lo + 1.0)


__all__ = ["preview_slices", "render_preview", "write_preview"]
