"""Previews: the views read the same way whatever the file's axis order; PNGs are written headless."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from mrseg.classes import BASE, class_colors, find_class
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.io import Image, write_image
from mrseg.io.orientation import direction_from_code
from mrseg.report.preview import preview_slices, render_preview

NAMES = {c.index: c.name for c in BASE.classes}


def marked_case(code: str) -> tuple[Image, Image]:
    """A 40 mm cube of liver (5) at the patient's right, anterior and superior, on a grid oriented ``code``."""
    shape = (30, 34, 38)
    direction = direction_from_code(code)
    spacing = (4.0, 3.5, 3.0)
    matrix = np.asarray(direction).reshape(3, 3) * np.asarray(spacing)
    centre_index = (np.array(shape[::-1]) - 1) / 2.0
    origin = -matrix @ centre_index  # the grid centred on world (0, 0, 0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape[::-1]], indexing="ij"), -1)  # (x, y, z, 3)
    world = ijk @ matrix.T + origin
    right, anterior, superior = world[..., 0] < -15, world[..., 1] < -15, world[..., 2] > 15
    region = right & anterior & superior & (np.abs(world).max(-1) < 55)
    labels = np.transpose(np.where(region, 5, 0).astype(np.uint8), (2, 1, 0)).copy()
    rng = np.random.default_rng(0)
    image = (rng.normal(100, 10, shape) + 50 * labels).astype(np.float32)
    kwargs = dict(spacing=spacing, origin=tuple(origin), direction=direction)
    return Image.from_array(labels, **kwargs), Image.from_array(image, **kwargs)


@pytest.mark.parametrize("code", ["LPS", "RAS", "PIL", "ASL", "RSP"])
def test_views_read_the_same_way_in_every_orientation(code):
    labels, image = marked_case(code)
    views = preview_slices(labels, image)
    for view, (gray, seg, aspect) in views.items():
        rows, columns = np.nonzero(seg == 5)
        assert rows.size, view
        # axial: patient's right on the image's left, anterior up; coronal: right on the left, superior
        # up; sagittal: anterior on the left, superior up.
        assert columns.mean() < seg.shape[1] / 2, view
        assert rows.mean() < seg.shape[0] / 2, view
        assert gray.shape == seg.shape
    if code == "LPS":  # aspect = row spacing / column spacing (x 4.0, y 3.5, z 3.0 mm)
        assert [views[v][2] for v in ("axial", "coronal", "sagittal")] == pytest.approx([3.5 / 4.0, 3.0 / 4.0,
                                                                                         3.0 / 3.5])


def test_png_has_the_overlay_colour_and_a_legend(tmp_path):
    labels, image = marked_case("RAS")
    png = render_preview(labels, image, names=NAMES, colors=class_colors(NAMES), title="case")
    assert png.startswith(b"\x89PNG")
    pixels = imread(io.BytesIO(png))[..., :3]
    liver = np.asarray(find_class("liver").color) / 255.0
    # Blended overlay pixels lie between the liver colour and grey; the legend patch is the pure colour.
    assert (np.abs(pixels - liver).max(-1) < 0.02).any()


def test_images_on_another_grid_are_refused():
    labels, image = marked_case("LPS")
    other, _ = marked_case("RAS")
    with pytest.raises(InputError, match="different grids"):
        preview_slices(labels, other)


def test_unknown_names_get_distinct_colours():
    colours = class_colors({1: "spleen", 7: "my_tumour", 8: "my_cyst"})
    assert colours[1] == find_class("spleen").color and colours[7] != colours[8]


def test_preview_command(tmp_path):
    labels, image = marked_case("PIL")
    write_image(labels, tmp_path / "case_seg.nii.gz")
    write_image(image, tmp_path / "case.nii.gz")
    assert main(["preview", str(tmp_path / "case_seg.nii.gz"), str(tmp_path / "case.nii.gz")]) == 0
    assert (tmp_path / "case_seg_preview.png").read_bytes().startswith(b"\x89PNG")
    assert main(["preview", str(tmp_path / "case_seg.nii.gz"), str(tmp_path / "missing.nii.gz")]) == 2
