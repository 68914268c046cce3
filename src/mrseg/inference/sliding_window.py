"""Sliding-window prediction with Gaussian importance weighting, as nnU-Net v2 does it.

Every fold's network runs on a tile while the tile is in memory, so the image is read once
however many folds are ensembled; the fold average is taken per tile, which equals
nnU-Net's average of per-fold sliding-window results because the Gaussian weights are the
same for every fold. Logits are accumulated in float32 by default, or in float16 as nnU-Net
does (half the memory of the largest array). While the tiles run, freed activation memory
stays in the process (:mod:`mrseg.inference.memory`), so no tile pays for fresh zeroed pages.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

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


def predict_logits(
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
    on_tile: Callable[[int, int], None] | None = None,
) -> Any:
    """Fold-averaged logits over a whole volume.

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
        on_tile: called as ``on_tile(done, total)`` after each tile (progress bars).

    Returns:
        ``(num_heads, z, y, x)`` CPU tensor of logits in the accumulator's type.
    """
    import torch

    pads = _padding(data.shape[1:], patch_size)
    if any(p != (0, 0) for p in pads):
        flat = [v for pair in reversed(pads) for v in pair]
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0)
    shape = tuple(data.shape[1:])
    weights = torch.from_numpy(gaussian_importance(patch_size))
    fold_weights = weights / len(networks)  # Gaussian weight and fold average, applied once per tile
    if accumulator not in ACCUMULATORS:
        raise ValueError(f"accumulator must be one of {', '.join(ACCUMULATORS)}, got {accumulator!r}")
    logits = torch.zeros((num_heads, *shape), dtype=getattr(torch, accumulator))
    weight_sum = torch.zeros(shape, dtype=torch.float32)

    flips: list[tuple[int, ...]] = []
    if mirror_axes:
        spatial = [a + 2 for a in mirror_axes]
        flips = [c for r in range(1, len(spatial) + 1) for c in itertools.combinations(spatial, r)]

    starts = list(itertools.product(*tile_starts(shape, patch_size, step)))
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device_type = torch.device(device).type
    with (
        reuse_freed_memory(reuse_memory and device_type == "cpu"),
        torch.inference_mode(),
        torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
    ):
        for done, start in enumerate(starts, 1):
            region = tuple(slice(s, s + t) for s, t in zip(start, patch_size))
            tile = data[(slice(None),) + region][None].to(device)
            summed = None
            for network in networks:
                prediction = network(tile)
                for axes in flips:
                    prediction += torch.flip(network(torch.flip(tile, axes)), axes)
                if flips:
                    prediction /= len(flips) + 1
                if summed is None:
                    summed = prediction
                else:
                    summed += prediction  # in place: one tile-sized logits buffer, not one per fold
            assert summed is not None
            mean = summed[0].float().cpu()
            mean *= fold_weights
            logits[(slice(None),) + region] += mean
            weight_sum[region] += weights
            if on_tile is not None:
                on_tile(done, len(starts))
    logits /= weight_sum
    if any(p != (0, 0) for p in pads):
        logits = logits[(slice(None),) + tuple(slice(lo, s - hi) for (lo, hi), s in zip(pads, shape))]
    return logits


def count_tiles(shape: Sequence[int], patch_size: Sequence[int], step: float) -> int:
    """How many tiles :func:`predict_logits` runs over an input of ``shape``."""
    padded = [max(s, t) for s, t in zip(shape, patch_size)]
    return int(np.prod([len(s) for s in tile_starts(padded, patch_size, step)]))
