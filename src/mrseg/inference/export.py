"""From network-grid logits back to a label map on the input grid.

nnU-Net v2's export: resample the class logits to the cropped input size (linear, with the
separate-z rule), take the argmax, paste into the uncropped volume, undo the transpose.

nnU-Net holds its summed logits in float16 and resamples them into float16 arrays, so its
argmax compares float16 values, and where two classes round to the same float16 value the
lower class wins. The argmax here compares the same float16 roundings of the logits
(:func:`_rounded_as_nnunet`), whatever type they were summed in, so those ties go the same way.

Unlike nnU-Net, the classes are resampled one at a time into a running argmax, so memory
never holds one full-resolution volume per class. Where the network grid is the input grid,
or the resampling is plain trilinear (the usual case: order 1 without a separate z axis), the
labels are made slab by slab as the sliding window finishes them (:class:`SlabExport`), in
torch in float32, which gives the same values as nnU-Net's float64 path to about 1e-5 and is
many times faster. Other orders and the separate-z rule take the whole logits volume through
the scipy path (:mod:`mrseg.inference.resample`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrseg.inference.preprocess import Preprocessed
from mrseg.inference.resample import resampling_function, separate_z_axis
from mrseg.model.plans import Configuration, Plans


def exports_in_slabs(case: Preprocessed, configuration: Configuration) -> bool:
    """Whether the labels can be made slab by slab (:class:`SlabExport`) for this case.

    True when the network grid is the input grid, or when the resampling back is plain
    trilinear (order 1 without a separate z axis, the usual case); other resamplings need the
    whole logits volume at once.
    """
    if tuple(case.data.shape[1:]) == tuple(case.shape_after_cropping):
        return True
    spec = configuration.resampling_probabilities
    return (
        spec.function == "resample_data_or_seg_to_shape" and spec.order == 1 and not spec.is_seg
        and separate_z_axis(configuration.spacing, case.spacing, spec.force_separate_z) is None
    )


class SlabExport:
    """Labels on the input grid, made from network-grid logits handed in slab by slab.

    Slabs come in order along one axis (:func:`mrseg.inference.sliding_window.iter_logit_slabs`).
    Where the grids are equal each slab's argmax is final at once. Where the logits are
    resampled trilinearly, every output row whose two source rows have arrived is made then,
    one class at a time into a running argmax, so memory holds a slab's worth of output rather
    than the whole volume per class. Otherwise the slabs are gathered and resampled as a whole
    (:func:`_resampled_argmax`).

    Args:
        case: the preprocessing record (network grid shape, crop box, spacing).
        plans: the model's plans.
        configuration: the configuration that produced the logits.
        num_heads: number of logit channels.
        axis: the axis (0-based, network grid) the slabs are cut along.
    """

    def __init__(
        self, case: Preprocessed, *, plans: Plans, configuration: Configuration, num_heads: int, axis: int
    ) -> None:
        self.plans, self.configuration, self.axis, self.spacing = plans, configuration, axis, case.spacing
        self.source_shape = tuple(int(s) for s in case.data.shape[1:])
        self.target: tuple[int, int, int] = case.shape_after_cropping
        self.full = np.zeros(case.shape_before_cropping, dtype=np.uint8 if num_heads <= 255 else np.uint16)
        self.labels = self.full[tuple(slice(lo, hi) for lo, hi in case.bbox)]
        self.same_grid = self.source_shape == self.target
        self.in_slabs = exports_in_slabs(case, configuration)
        self.gathered: Any = None
        self.carry: Any = None  # the last source row of the previous slab (trilinear)
        self.next_row = 0  # first output row along the axis not yet made (trilinear)
        index0, index1, weight1 = _linear_source_rows(self.source_shape[axis], self.target[axis])
        self.index0, self.index1, self.weight1 = index0, index1, weight1

    def add(self, lo: int, hi: int, slab: Any) -> None:
        """Take the logits of source rows ``[lo, hi)`` along the axis (``(heads, ...)``)."""
        import torch

        slab = slab if isinstance(slab, torch.Tensor) else torch.from_numpy(np.asarray(slab))
        if self.same_grid:
            out = np.moveaxis(self.labels, self.axis, 0)[lo:hi]
            out[...] = _running_argmax(slab[c] for c in range(slab.shape[0])).movedim(self.axis, 0).numpy()
        elif self.in_slabs:
            self._trilinear(lo, hi, _rounded_as_nnunet(slab))
        elif lo == 0 and hi == self.source_shape[self.axis]:
            self.gathered = _rounded_as_nnunet(slab)  # the whole volume at once
        else:
            if self.gathered is None:
                self.gathered = torch.empty((slab.shape[0], *self.source_shape), dtype=torch.float16)
            self.gathered.narrow(self.axis + 1, lo, hi - lo).copy_(slab)

    def finish(self) -> np.ndarray:
        """The label map (uint8, or uint16 past 254 classes) on the input grid, ``(z, y, x)``."""
        if self.gathered is not None:
            self.labels[...] = _resampled_argmax(
                self.gathered.numpy(), self.target, configuration=self.configuration, spacing=self.spacing
            )
            self.gathered = None
        return np.ascontiguousarray(self.full.transpose(self.plans.transpose_backward))

    def _trilinear(self, lo: int, hi: int, slab: Any) -> None:
        import torch

        last = hi == self.source_shape[self.axis]
        end = len(self.index1) if last else int(np.searchsorted(self.index1, hi, side="left"))
        rows = slice(self.next_row, end)
        base = lo - 1 if self.carry is not None else lo
        index0 = torch.from_numpy(self.index0[rows] - base)
        index1 = torch.from_numpy(self.index1[rows] - base)
        weight1 = torch.from_numpy(self.weight1[rows])
        plane = tuple(s for a, s in enumerate(self.target) if a != self.axis)

        def channels() -> Any:
            for c in range(slab.shape[0]):
                source = slab[c].movedim(self.axis, 0)
                if self.carry is not None:
                    source = torch.cat((self.carry[c], source))
                yield _resample_rows(source, index0, index1, weight1, plane)

        if end > self.next_row:
            with torch.inference_mode():
                labels = _running_argmax(channels())
            np.moveaxis(self.labels, self.axis, 0)[rows] = labels.numpy()
        self.next_row = end
        self.carry = slab.narrow(self.axis + 1, hi - lo - 1, 1).movedim(self.axis + 1, 1).clone()


def _rounded_as_nnunet(channel: Any) -> Any:
    """``channel`` rounded to float16, the type nnU-Net holds (and resamples into) its logits in."""
    import torch

    return channel if channel.dtype == torch.float16 else channel.to(torch.float16)


def _running_argmax(channels: Any) -> Any:
    """The argmax over class channels given one at a time (torch), on their float16 roundings.

    Ties keep the lower class, as ``argmax`` does; the labels are uint8 (int32 past 255 classes).
    """
    import torch

    best: Any = None
    labels: Any = None
    for c, channel in enumerate(channels):
        channel = _rounded_as_nnunet(channel)
        if best is None:
            best = channel.clone()
            labels = torch.zeros(channel.shape, dtype=torch.uint8)
            continue
        if c == 256:
            labels = labels.to(torch.int32)
        better = channel > best
        labels[better] = c
        torch.maximum(best, channel, out=best)
    return labels


def _linear_source_rows(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each target row: the two source rows and the second one's weight (linear, pixel centres).

    torch's ``interpolate(align_corners=False)`` mapping, in float32 as torch computes it; the
    same mapping as ``skimage.transform.resize(order=1, mode="edge")``.
    """
    rows = np.arange(target, dtype=np.float32)
    if source == target:
        index0 = np.arange(target, dtype=np.int64)
        return index0, index0.copy(), np.zeros(target, np.float32)
    ratio = np.float32(source) / np.float32(target)
    real = np.maximum(ratio * (rows + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    index0 = np.minimum(real.astype(np.int64), source - 1)
    index1 = index0 + (index0 < source - 1)
    weight1 = np.clip(real - index0.astype(np.float32), 0, 1).astype(np.float32)
    return index0, index1, weight1


def _resample_rows(source: Any, index0: Any, index1: Any, weight1: Any, plane: tuple[int, ...]) -> Any:
    """Linear resampling in float32: first along axis 0 (given rows and weights), then bilinear in the plane.

    Separable, so equal to trilinear resampling up to float rounding.
    """
    import torch

    weight1 = weight1[:, None, None]
    rows = source.index_select(0, index0).float() * (1 - weight1)
    rows += source.index_select(0, index1).float() * weight1
    if tuple(rows.shape[1:]) != tuple(plane):
        rows = torch.nn.functional.interpolate(rows[:, None], size=plane, mode="bilinear", align_corners=False)[:, 0]
    return rows


def logits_to_labels(
    logits: Any,
    case: Preprocessed,
    *,
    plans: Plans,
    configuration: Configuration,
) -> np.ndarray:
    """Label map (uint8, or uint16 past 254 classes) on the input grid, numpy ``(z, y, x)`` order.

    Args:
        logits: ``(heads, z, y, x)`` tensor or array on the network grid.
        case: the preprocessing record of the same case.
        plans: the model's plans.
        configuration: the configuration that produced the logits.
    """
    export = SlabExport(case, plans=plans, configuration=configuration, num_heads=logits.shape[0], axis=0)
    export.add(0, logits.shape[1], logits)
    return export.finish()


def _resampled_argmax(
    logits: np.ndarray,
    shape: tuple[int, int, int],
    *,
    configuration: Configuration,
    spacing: tuple[float, float, float],
) -> np.ndarray:
    """Argmax of the logits resampled to ``shape`` (scipy path), one class channel at a time.

    Equals resampling every channel into float16, as nnU-Net does, and then taking the argmax
    (:func:`_running_argmax`: ties go to the lower class), but holds two full-resolution volumes
    instead of one per class.
    """
    import torch

    spec = configuration.resampling_probabilities
    resample = resampling_function(spec)
    channels = (
        torch.from_numpy(resample(
            logits[c : c + 1].astype(np.float32, copy=False), shape, current_spacing=configuration.spacing,
            new_spacing=spacing, spec=spec,
        )[0])
        for c in range(logits.shape[0])
    )
    return _running_argmax(channels).numpy()
