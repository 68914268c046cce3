"""Sliding-window prediction with Gaussian importance weighting, as nnU-Net v2 does it.

Every fold's network runs on a tile while the tile is in memory, so the image is read once
however many folds are ensembled; each fold's prediction, times the Gaussian weight over the
fold count, is added to the sums as soon as it is made, which equals nnU-Net's average of
per-fold sliding-window results because the Gaussian weights are the same for every fold.
Logits are summed in float16 as nnU-Net does (float32 on request), and only one tile
row deep along the streaming axis (:func:`iter_logit_slabs`): the finished slabs go to the
export as soon as no later tile reaches them. While the tiles run, freed activation memory
stays in the process (:mod:`mrseg.inference.memory`), so no tile pays for fresh zeroed pages.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from mrseg.inference.lean_unet import InferenceUNet
from mrseg.inference.memory import reuse_freed_memory

PRECISIONS = ("fp32", "bf16", "fp16")
"""Network precisions: plain float32, or autocast to bfloat16 / float16."""

ACCUMULATORS = ("float32", "float16")
"""Types the tile logits can be summed in."""


def tile_starts(image_size: Sequence[int], tile_size: Sequence[int], step: float) -> list[list[int]]:
    """Start index of every tile along each axis; tiles overlap by ``1 - step`` of their size."""
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    starts = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError(f"image size {size} is smaller than the tile size {tile}; pad first")
        n = int(np.ceil((size - tile) / (tile * step))) + 1
        stride = (size - tile) / (n - 1) if n > 1 else 0.0
        starts.append([int(np.round(stride * i)) for i in range(n)])
    return starts


def gaussian_importance(tile_size: Sequence[int], *, sigma_scale: float = 1.0 / 8, peak: float = 10.0) -> np.ndarray:
    """Gaussian weight map over a tile, peak ``peak`` at the centre, no zeros (float32)."""
    impulse = np.zeros(tile_size)
    impulse[tuple(s // 2 for s in tile_size)] = 1
    weights = gaussian_filter(impulse, [s * sigma_scale for s in tile_size], 0, mode="constant", cval=0)
    weights /= weights.max() / peak
    weights = weights.astype(np.float32)
    weights[weights == 0] = weights[weights > 0].min()
    return weights


def _padding(shape: Sequence[int], tile: Sequence[int]) -> list[tuple[int, int]]:
    pads = []
    for s, t in zip(shape, tile):
        diff = max(t - s, 0)
        pads.append((diff // 2, diff - diff // 2))
    return pads


def stream_axis(shape: Sequence[int], patch_size: Sequence[int]) -> int:
    """The axis to stream the logits along: the one where a tile spans the least of the image.

    Only a window one tile deep along this axis is held, so memory for the summed logits is
    ``tile / image`` of the full volume along it.
    """
    return int(np.argmin([t / max(s, t) for s, t in zip(shape, patch_size)]))


def iter_logit_slabs(
    data: Any,
    networks: Sequence[Any],
    *,
    patch_size: Sequence[int],
    num_heads: int,
    step: float = 0.5,
    mirror_axes: Sequence[int] | None = None,
    device: Any = "cpu",
    precision: str = "fp32",
    accumulator: str = "float32",
    reuse_memory: bool = True,
    axis: int | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, int, Any]]:
    """Fold-averaged logits, slab by slab along one axis, each slab as soon as it is final.

    The tiles run in order along ``axis``; once no later tile reaches below the next tile row's
    start, the slab before it is final: it is normalised by its summed Gaussian weights and
    yielded, and the window moves on. Memory for the sums is one tile's depth along ``axis``
    instead of the whole volume. Every voxel gets the same terms as over the whole volume; only
    the order of the tiles (and so float rounding) differs when ``axis`` is not the first.

    Args:
        data: ``(C, z, y, x)`` float32 tensor on the network grid (CPU).
        networks: one network per fold, already on ``device`` and in eval mode.
        patch_size: tile size from the configuration.
        num_heads: number of output channels.
        step: tile step as a fraction of the tile size (0.5: half overlap).
        mirror_axes: spatial axes (0-based) to average mirrored predictions over; None for none.
        device: where the networks run.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"`` to run the networks under autocast
            (the conversion of the inputs is done by autocast).
        accumulator: ``"float32"`` or ``"float16"`` (nnU-Net's choice, half the memory) for
            the summed logits.
        reuse_memory: keep freed activation memory in the process between tiles (faster;
            see :mod:`mrseg.inference.memory`).
        axis: spatial axis (0-based) to stream along; None: :func:`stream_axis`. ``-1`` holds
            the whole volume and yields it once.
        on_tile: called as ``on_tile(done, total)`` after each tile (progress bars).

    Yields:
        ``(lo, hi, slab)``: the slab covers ``[lo, hi)`` of the unpadded volume along ``axis``
        and everything along the other axes, ``(num_heads, ...)`` in the accumulator's type. It
        is a view of the window: use it before asking for the next one.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"accumulator must be one of {', '.join(ACCUMULATORS)}, got {accumulator!r}")
    size = tuple(data.shape[1:])
    pads = _padding(size, patch_size)
    if any(p != (0, 0) for p in pads):
        flat = [v for pair in reversed(pads) for v in pair]
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0)
    shape = tuple(data.shape[1:])
    whole = axis == -1
    axis = 0 if whole else stream_axis(shape, patch_size) if axis is None else axis
    weights = torch.from_numpy(gaussian_importance(patch_size))
    fold_weights = weights / len(networks)  # Gaussian weight and fold average in one factor

    starts_per_axis = tile_starts(shape, patch_size, step)
    rows = starts_per_axis[axis]
    depth = shape[axis] if whole else patch_size[axis]
    window_shape = tuple(depth if a == axis else s for a, s in enumerate(shape))
    logits = torch.zeros((num_heads, *window_shape), dtype=getattr(torch, accumulator))
    weight_sum = torch.zeros(window_shape, dtype=torch.float32)
    window_lo = 0

    def along(lo: int, hi: int) -> tuple[slice, ...]:
        return tuple(slice(lo, hi) if a == axis else slice(None) for a in range(len(shape)))

    def final(lo: int, hi: int) -> tuple[int, int, Any]:
        """Normalise window rows [lo, hi) (window coordinates) and crop them to the unpadded volume."""
        rows_ = along(lo, hi)
        for c in range(num_heads):  # per class: a mixed-type division would make a float32 copy of it all
            logits[c][rows_] /= weight_sum[rows_]
        pad_lo = pads[axis][0]
        first, last = max(window_lo + lo - pad_lo, 0), min(window_lo + hi - pad_lo, size[axis])
        crop = tuple(
            slice(first - window_lo + pad_lo, last - window_lo + pad_lo) if a == axis else slice(p[0], p[0] + n)
            for a, (p, n) in enumerate(zip(pads, size))
        )
        return first, last, logits[(slice(None),) + crop]

    flips: list[tuple[int, ...]] = []
    if mirror_axes:
        spatial = [a + 2 for a in mirror_axes]
        flips = [c for r in range(1, len(spatial) + 1) for c in itertools.combinations(spatial, r)]
    others = [a for a in range(len(shape)) if a != axis]
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device_type = torch.device(device).type
    total = int(np.prod([len(s) for s in starts_per_axis]))
    done = 0
    with reuse_freed_memory(reuse_memory and device_type == "cpu"):  # for the whole pass: a trim per row cost
        # every row's first tile its pages again; inference mode and autocast are thread state, so they are
        # entered per row and never held across a yield
        for row_start in rows:
            if not whole and row_start > window_lo:
                shift = row_start - window_lo  # rows below the new start are final: hand them out
                first, last, slab = final(0, shift)
                if last > first:
                    yield first, last, slab  # outside inference mode and autocast, which are thread state
                _shift_window(logits, weight_sum, axis, shift)
                window_lo = row_start
            with (
                torch.inference_mode(),
                torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
            ):
                for rest in itertools.product(*(starts_per_axis[a] for a in others)):
                    start = list(rest)
                    start.insert(axis, row_start)
                    region = tuple(slice(s, s + t) for s, t in zip(start, patch_size))
                    local = tuple(
                        slice(s - window_lo, s - window_lo + t) if a == axis else r
                        for a, (s, t, r) in enumerate(zip(start, patch_size, region))
                    )
                    tile = data[(slice(None),) + region][None].to(device)

                    def add(z0: int, z1: int, part: Any, local: tuple[slice, ...] = local) -> None:
                        """Add the fold's logits for tile rows [z0, z1) (along the first spatial axis)."""
                        rows_ = (slice(local[0].start + z0, local[0].start + z1), *local[1:])
                        part = part[0].cpu()
                        for c in range(num_heads):  # per class: no float32 copy of the whole slab
                            logits[c][rows_].addcmul_(part[c], fold_weights[z0:z1])

                    for network in networks:  # every fold while the tile is in memory
                        if flips:
                            add(0, patch_size[0], _mirror_averaged(network, tile, flips))
                        else:  # the lean network hands its output over slab by slab
                            _predict_into(network, tile, add)
                    weight_sum[local] += weights
                    done += 1
                    if on_tile is not None:
                        on_tile(done, total)
    first, last, slab = final(0, depth)
    if last > first:
        yield first, last, slab


def _predict_into(network: Any, tile: Any, sink: Callable[[int, int, Any], None]) -> None:
    """``network(tile)`` passed to ``sink(z0, z1, part)``: in slabs where the network can, else whole."""
    if isinstance(network, InferenceUNet):
        network(tile, sink=sink)
    else:
        sink(0, tile.shape[2], network(tile))


def _mirror_averaged(network: Any, tile: Any, flips: Sequence[tuple[int, ...]]) -> Any:
    """One fold's prediction for a tile, averaged over the mirrored copies in ``flips``."""
    import torch

    prediction = network(tile)
    for axes in flips:
        prediction += torch.flip(network(torch.flip(tile, axes)), axes)
    if flips:
        prediction /= len(flips) + 1
    return prediction


def _shift_window(logits: Any, weight_sum: Any, axis: int, shift: int) -> None:
    """Move the window ``shift`` rows on along ``axis``: keep the overlap, zero the new rows."""
    depth = weight_sum.shape[axis]
    keep = depth - shift
    for lo in range(0, keep, shift):  # chunks no longer than the shift never overlap their source
        n = min(shift, keep - lo)
        weight_sum.narrow(axis, lo, n).copy_(weight_sum.narrow(axis, lo + shift, n))
        logits.narrow(axis + 1, lo, n).copy_(logits.narrow(axis + 1, lo + shift, n))
    weight_sum.narrow(axis, keep, shift).zero_()
    logits.narrow(axis + 1, keep, shift).zero_()


def predict_logits(data: Any, networks: Sequence[Any], **options: Any) -> Any:
    """Fold-averaged logits over the whole volume: :func:`iter_logit_slabs` holding it all.

    Takes the same arguments as :func:`iter_logit_slabs` (``axis`` excepted).

    Returns:
        ``(num_heads, z, y, x)`` CPU tensor of logits in the accumulator's type.
    """
    ((_, _, logits),) = list(iter_logit_slabs(data, networks, axis=-1, **options))
    return logits


def count_tiles(shape: Sequence[int], patch_size: Sequence[int], step: float) -> int:
    """How many tiles :func:`predict_logits` runs over an input of ``shape``."""
    padded = [max(s, t) for s, t in zip(shape, patch_size)]
    return int(np.prod([len(s) for s in tile_starts(padded, patch_size, step)]))
