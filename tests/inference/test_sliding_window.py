"""Sliding-window prediction (:mod:`mrseg.inference.sliding_window`): tile positions and Gaussian
weights against nnU-Net v2's own functions; logits streamed slab by slab against the whole volume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_factory import tiny_networks
from mrseg.inference.sliding_window import (
    count_tiles,
    gaussian_importance,
    iter_logit_slabs,
    predict_logits,
    stream_axis,
    tile_starts,
)

PATCH = (8, 16, 12)


@pytest.mark.parametrize("step", [0.5, 0.8, 1.0, 0.3, 0.25])
def test_tile_starts_equal_nnunet(step):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    tile = (16, 32, 24)
    rng = np.random.default_rng(int(step * 100))
    sizes = [tile, (17, 33, 25), (32, 64, 48), (40, 70, 33), (100, 97, 24)]
    sizes += [tuple(int(t + rng.integers(0, 90)) for t in tile) for _ in range(20)]
    for size in sizes:
        assert tile_starts(size, tile, step) == compute_steps_for_sliding_window(size, tile, step), size


def test_tile_starts_cover_the_image():
    for size in range(32, 200, 7):
        (starts,) = tile_starts((size,), (32,), 0.5)
        assert starts[0] == 0 and starts[-1] == size - 32
        assert all(b - a <= 16 for a, b in zip(starts, starts[1:]))


def test_image_equal_to_the_tile_is_one_tile():
    assert tile_starts((16, 32, 32), (16, 32, 32), 0.5) == [[0], [0], [0]]
    assert count_tiles((16, 32, 32), (16, 32, 32), 0.5) == 1


def test_count_tiles_pads_small_images():
    assert count_tiles((8, 20, 40), (16, 32, 32), 0.5) == 1 * 1 * 2
    assert count_tiles((33, 64, 32), (16, 32, 32), 0.5) == 4 * 3 * 1


@pytest.mark.parametrize("step", [0, 1.5, -0.5])
def test_bad_step_raises(step):
    with pytest.raises(ValueError, match=r"step must be in \(0, 1\]"):
        tile_starts((32, 32, 32), (16, 16, 16), step)


def test_image_smaller_than_the_tile_raises():
    with pytest.raises(ValueError, match="smaller than the tile size"):
        tile_starts((10, 32, 32), (16, 16, 16), 0.5)


@pytest.mark.parametrize("tile", [(16, 32, 32), (5, 7, 9), (20, 20, 20), (128, 128, 128)])
def test_gaussian_importance_equals_nnunet(tile):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    theirs = compute_gaussian(tuple(tile), 1.0 / 8, 10, dtype=torch.float32, device=torch.device("cpu")).numpy()
    ours = gaussian_importance(tile)
    assert ours.dtype == np.float32
    assert ours.shape == tuple(tile)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)
    assert ours.min() > 0
    assert np.unravel_index(ours.argmax(), tile) == tuple(t // 2 for t in tile)
    assert math.isclose(float(ours.max()), 10.0, rel_tol=1e-6)


def test_stream_axis_is_where_a_tile_spans_least():
    assert stream_axis((80, 256, 256), (56, 192, 160)) == 2
    assert stream_axis((150, 273, 273), (56, 192, 160)) == 0
    assert stream_axis((40, 20, 20), (56, 192, 160)) == 0  # padded axes count as one tile


@pytest.mark.parametrize("axis", [0, 1, 2, None])
@pytest.mark.parametrize("shape", [(21, 37, 30), (6, 40, 13)])  # the second is padded on two axes
def test_slabs_tile_the_volume_and_equal_the_whole_volume_logits(axis, shape):
    data = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32))
    options = dict(patch_size=PATCH, num_heads=5, step=0.5, precision="fp32", accumulator="float32")
    networks = tiny_networks()
    whole = predict_logits(data, networks, **options)
    assert tuple(whole.shape) == (5, *shape)
    chosen = stream_axis(shape, PATCH) if axis is None else axis
    covered = 0
    for lo, hi, slab in iter_logit_slabs(data, networks, axis=axis, **options):
        assert lo == covered and hi > lo  # in order, no gaps, no overlaps
        covered = hi
        expected = whole.narrow(chosen + 1, lo, hi - lo)
        assert slab.shape == expected.shape
        torch.testing.assert_close(slab, expected, rtol=1e-5, atol=1e-6)  # the tile order may differ
    assert covered == shape[chosen]


def test_tiles_are_reported_once_each():
    data = torch.zeros((1, 21, 37, 30))
    seen = []
    slabs = iter_logit_slabs(data, tiny_networks(1), patch_size=PATCH, num_heads=5, step=0.5, axis=1,
                             on_tile=lambda done, total: seen.append((done, total)))
    for _ in slabs:
        pass
    total = seen[-1][1]
    assert seen == [(k, total) for k in range(1, total + 1)]
