"""The inference engine: a model loaded once, applied to any number of images.

Per image: repair non-finite voxels, reorient to LPS (the orientation the published
MRSegmentator weights were trained in), preprocess, sliding-window prediction with every
fold, export to labels, undo the reorientation. The result is on the input's exact grid.
A model folder whose ``mrseg_ensemble.json`` names members trained on other grids is an
ensemble: every member predicts on its own grid and the class probabilities are averaged (the
bundled demo model is one). Optionally (``scales``) the prediction is repeated on finer or coarser
network grids and averaged the same way: scale test-time augmentation, a measuring tool for the
demo model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from mrseg.errors import InputError
from mrseg.inference.confidence import ClassConfidence
from mrseg.inference.export import SlabExport, exports_in_slabs
from mrseg.inference.lean_unet import InferenceUNet
from mrseg.inference.preprocess import preprocess
from mrseg.inference.sliding_window import PRECISIONS, count_tiles, iter_logit_slabs, stream_axis
from mrseg.io.image import Image
from mrseg.io.orientation import reorient
from mrseg.model.loader import Fold, Model, load_model

log = logging.getLogger(__name__)

DEFAULT_ORIENTATION = "LPS"
"""Axis orientation the image is brought into before the network (as MRSegmentator does)."""

SCALE_LIMITS = (0.5, 2.0)
"""The smallest and largest factor of scale test-time augmentation (:class:`Segmenter`'s ``scales``)."""


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """``scales`` as a tuple, or :class:`InputError` naming what is wrong with them."""
    factors = tuple(float(s) for s in scales)
    if not factors:
        raise InputError("scales: give at least one factor (1.0 is the model's own grid)")
    low, high = SCALE_LIMITS
    bad = [s for s in factors if not low <= s <= high]
    if bad:
        raise InputError(f"scales: every factor must lie in [{low}, {high}], got {', '.join(map(str, bad))}")
    if len(set(factors)) != len(factors):
        raise InputError(f"scales: each factor once, got {', '.join(map(str, factors))}")
    return factors


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A label map on the input grid plus what it cost."""

    labels: Image
    timings: dict[str, float] = field(default_factory=dict)
    num_tiles: int = 0
    repaired_voxels: int = 0
    confidence: dict[int, float] = field(default_factory=dict)
    """Label value → mean winning softmax probability over its voxels on the network grid (when
    the segmenter was asked for it; :mod:`mrseg.inference.confidence`)."""


def repair_nonfinite(array: np.ndarray, *, source: str = "image") -> tuple[np.ndarray, int]:
    """Replace NaN and -inf by the smallest finite value and +inf by the largest.

    Scanners and converters write NaN outside the field of view; the smallest finite value
    is background in both MR (≈0) and CT (air), so the network sees plain background there.

    Returns:
        The repaired copy (or the input itself when all voxels are finite) and the count.

    Raises:
        InputError: no finite voxel at all.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return array, 0
    finite = np.isfinite(array)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad == 0:
        return array, 0
    if bad == finite.size:
        raise InputError(f"{source}: no finite voxel (all NaN or infinite); the file is unusable")
    low, high = array[finite].min(), array[finite].max()
    fixed = np.where(finite, array, np.where(array == np.inf, high, low)).astype(array.dtype)
    return fixed, bad


def resolve_device(device: str | Any) -> Any:
    """A ``torch.device`` for ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; unavailable ones are errors."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} not understood; use cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise InputError(f"device {device!r} not supported; use cpu, cuda, cuda:N or mps")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 dot products natively (AVX-512 BF16 or AMX-BF16)."""
    import torch

    try:
        capabilities = torch.cpu.get_capabilities()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return False
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def auto_precision(device: Any) -> str:
    """What ``precision="auto"`` (the default) means on ``device``: what nnU-Net's predictor runs.

    CUDA: float16 autocast, as nnU-Net runs there. Everywhere else (every CPU, MPS): float32,
    so the default gives the same labels on every machine of a cluster, whatever its CPU.
    bf16 stays an explicit choice (about twice as fast on CPUs with native bfloat16, at a
    measured cost in agreement: README, Speed and memory).
    """
    import torch

    return "fp16" if torch.device(device).type == "cuda" else "fp32"


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Segmenter:
    """A model loaded once, ready to segment many images.

    Args:
        model: a loaded :class:`~mrseg.model.Model` or the path of an nnU-Net v2 model folder
            (a model name such as ``base`` or ``demo`` is resolved first, with
            :func:`mrseg.model.store.resolve_model_folder`; the engine never downloads).
        folds: folds to ensemble when ``model`` is a path (default: all present).
        checkpoint_name: ``checkpoint_final.pth`` (default) or ``checkpoint_best.pth``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        step: sliding-window step as a fraction of the patch (0.5 default, 0.8 fast).
        tta: mirror test-time augmentation, where the checkpoint allows it.
        threads: torch CPU threads while segmenting (None: torch's default).
        orientation: axis orientation to run the network in; None keeps the input's axes
            (plain nnU-Net behaviour).
        precision: ``"auto"`` (:func:`auto_precision`: float16 autocast on CUDA as nnU-Net
            does, float32 everywhere else: nnU-Net's labels, the same on every CPU), ``"fp32"``,
            ``"bf16"`` or ``"fp16"``. In bf16 the convolution weights are stored in bfloat16.
            The logits are summed in float16 in every precision, as nnU-Net does.
        reuse_memory: keep freed activation memory in the process between tiles on the CPU
            (about 1.4-1.5x faster per tile; only blocks up to 32 MiB are kept, and with the lean
            forward pass's in-place steps the peak is about that of reuse off;
            :mod:`mrseg.inference.memory`).
        confidence: also measure, per class, the mean winning probability of its voxels
            (:attr:`Segmentation.confidence`; quality control's ``uncertain`` flag).
        scales: scale test-time augmentation. ``(1.0,)`` (default) is nnU-Net's prediction on
            the model's own grid; several factors run the network once per factor ``s`` on a
            grid ``s`` times finer than the model's spacing (structures look ``s`` times larger)
            and average the class probabilities (:meth:`_predict_over_grids`). Each factor
            lies within :data:`SCALE_LIMITS`.
        ensemble: average with the ensemble members the model folder names (its
            ``mrseg_ensemble.json``; :func:`~mrseg.model.loader.load_model`), each on its own
            grid, as :meth:`_predict_over_grids` does; False runs the folder's own model alone.

    Example:
        >>> seg = Segmenter("path/to/model", folds=[0], step=0.8)  # doctest: +SKIP
        >>> labels = seg.segment(read_image("scan.nii.gz"))  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Model | str | os.PathLike[str],
        *,
        folds: Sequence[Fold] | None = None,
        checkpoint_name: str = "checkpoint_final.pth",
        device: str | Any = "cpu",
        step: float = 0.5,
        tta: bool = False,
        threads: int | None = None,
        orientation: str | None = DEFAULT_ORIENTATION,
        precision: str = "auto",
        reuse_memory: bool = True,
        confidence: bool = False,
        scales: Sequence[float] = (1.0,),
        ensemble: bool = True,
    ) -> None:
        import torch

        if not 0 < step <= 1:
            raise InputError(f"step must be in (0, 1], got {step}")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        # Only a folder is loaded here: a model name is resolved (and installed, where the caller
        # allows downloads) by mrseg.model.store before the engine is built.
        self.model = model if isinstance(model, Model) else load_model(
            Path(model), folds=folds, checkpoint_name=checkpoint_name, ensemble=ensemble
        )
        if not ensemble and self.model.members:
            self.model = dataclasses.replace(self.model, members=())
        self.ensemble: tuple[Model, ...] = (self.model, *self.model.members)
        """The models whose probabilities are averaged: the folder's own first, then its members."""
        self.device = resolve_device(device)
        if precision not in ("auto", *PRECISIONS):
            raise InputError(f"precision must be auto or one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = auto_precision(self.device) if precision == "auto" else precision
        if self.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("--precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), so it is "
                        "emulated and slower than fp32")
        self.step = step
        self.threads = threads
        self.orientation = orientation
        self.tta = tta
        self.mirror_axes = self.model.mirror_axes if tta else None
        if tta and self.model.mirror_axes is None:
            log.warning("--tta ignored: the checkpoint does not allow mirroring (trained without it)")
        self.reuse_memory = reuse_memory
        self.confidence = confidence
        self.scales = check_scales(scales)
        conv_dtype = torch.bfloat16 if self.precision == "bf16" else None
        with _torch_threads(threads):
            self.member_networks = [
                [InferenceUNet(n) for n in member.build_networks(self.device, conv_dtype=conv_dtype)]
                for member in self.ensemble]
        self.networks = self.member_networks[0]

    def run(
        self,
        images: Image | Sequence[Image],
        *,
        source: str = "image",
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Segmentation:
        """Segment one case (one image per model input channel, all on one grid).

        Raises:
            InputError: wrong number of channels, channels on different grids, no finite voxel.
        """
        channels = [images] if isinstance(images, Image) else list(images)
        expected = self.model.num_input_channels
        if len(channels) != expected:
            raise InputError(
                f"{source}: the model takes {expected} input channel(s) "
                f"({', '.join(self.model.dataset.channel_names)}), got {len(channels)}"
            )
        reference = channels[0].geometry
        for other in channels[1:]:
            if not other.geometry.same_grid(reference):
                raise InputError(f"{source}: all input channels must share one grid")

        timings: dict[str, float] = {}
        clock = time.perf_counter()
        repaired = 0
        arrays = []
        for image in channels:
            array, bad = repair_nonfinite(image.array, source=source)
            repaired += bad
            arrays.append(image.with_array(array))
        if repaired:
            log.warning("%s: %d NaN/infinite voxels replaced by the nearest finite extreme", source, repaired)

        step = None
        if self.orientation is not None:
            oriented = []
            for image in arrays:
                image, step = reorient(image, self.orientation)
                oriented.append(image)
            arrays = oriented

        preparing = time.perf_counter() - clock  # the repair and the reorientation count as preprocessing
        with _torch_threads(self.threads):
            one_grid = self.scales == (1.0,) and len(self.ensemble) == 1
            predict = self._predict_one_grid if one_grid else self._predict_over_grids
            labels, num_tiles, sureness = predict([image.array for image in arrays], arrays[0].geometry.spacing_zyx,
                                                  timings, on_tile)
            timings["preprocess"] += preparing
            clock = time.perf_counter()
        result = arrays[0].with_array(labels)
        if step is not None:
            result = step.undo_image(result)
        timings["export"] += time.perf_counter() - clock
        return Segmentation(
            labels=Image(np.ascontiguousarray(result.array), reference),
            timings=timings,
            num_tiles=num_tiles,
            repaired_voxels=repaired,
            confidence=sureness.means() if sureness is not None else {},
        )

    def _predict_one_grid(
        self, arrays: list[np.ndarray], spacing: tuple[float, float, float], timings: dict[str, float],
        on_tile: Callable[[int, int], None] | None,
    ) -> tuple[np.ndarray, int, ClassConfidence | None]:
        """nnU-Net's prediction: the logits on the model's own grid, streamed into the label export."""

        clock = time.perf_counter()
        case = preprocess(arrays, spacing, plans=self.model.plans, configuration=self.model.configuration)
        timings["preprocess"] = time.perf_counter() - clock
        clock = time.perf_counter()
        config = self.model.configuration
        num_tiles = count_tiles(case.data.shape[1:], config.patch_size, self.step)
        streamed = exports_in_slabs(case, config)
        axis = stream_axis(case.data.shape[1:], config.patch_size) if streamed else 0
        heads = self.model.dataset.num_segmentation_heads
        export = SlabExport(case, plans=self.model.plans, configuration=config, num_heads=heads, axis=axis)
        slabs = self._logit_slabs(case, 0, axis=axis if streamed else -1, on_tile=on_tile)
        export_seconds = 0.0
        sureness = ClassConfidence(heads) if self.confidence else None
        confidence_seconds = 0.0
        for lo, hi, slab in slabs:
            start = time.perf_counter()
            if sureness is not None:
                sureness.add(slab)
                confidence_seconds += time.perf_counter() - start
            export.add(lo, hi, slab)
            export_seconds += time.perf_counter() - start
        timings["predict"] = time.perf_counter() - clock - export_seconds
        clock = time.perf_counter()
        labels = export.finish()
        timings["export"] = time.perf_counter() - clock + export_seconds - confidence_seconds
        if sureness is not None:
            timings["confidence"] = confidence_seconds
        return labels, num_tiles, sureness

    def _logit_slabs(
        self, case: Any, member: int, *, axis: int, on_tile: Callable[[int, int], None] | None
    ) -> Iterator[Any]:
        """The sliding window's summed logits of one case preprocessed for ``self.ensemble[member]``,
        slab by slab along ``axis`` (-1: the whole volume at once), with that member's networks
        and this segmenter's settings."""
        import torch

        model = self.ensemble[member]
        config = model.configuration
        return iter_logit_slabs(
            torch.from_numpy(case.data),
            self.member_networks[member],
            patch_size=config.patch_size,
            num_heads=model.dataset.num_segmentation_heads,
            step=self.step,
            mirror_axes=model.mirror_axes if self.tta else None,
            device=self.device,
            precision=self.precision,
            accumulator="float16",  # as nnU-Net sums them: half the memory of float32 sums
            reuse_memory=self.reuse_memory,
            axis=axis,
            on_tile=on_tile,
        )

    def _predict_over_grids(
        self, arrays: list[np.ndarray], spacing: tuple[float, float, float], timings: dict[str, float],
        on_tile: Callable[[int, int], None] | None,
    ) -> tuple[np.ndarray, int, ClassConfidence | None]:
        """The class probabilities averaged over several network grids: every ensemble member
        at every scale factor.

        Each member preprocesses the image by its own plans (its spacing, normalisation and
        crop). At scale ``s`` the image is handed to preprocessing as if its voxels were ``s``
        times larger, so the network runs on a grid ``s`` times finer than the member's spacing
        and sees every structure ``s`` times larger. Every grid covers the same cropped box, so
        each grid's softmax is resampled (trilinear) onto the finest grid (most voxels), where
        they are averaged one class at a time (float16 sums) and exported to the input grid as
        nnU-Net exports probabilities, by the finest grid's member.
        """
        import torch

        heads = self.model.dataset.num_segmentation_heads
        grids = [(member, scale) for member in range(len(self.ensemble)) for scale in self.scales]
        clock = time.perf_counter()
        cases = []
        for member, scale in grids:
            model = self.ensemble[member]
            cases.append(preprocess(arrays, tuple(s * scale for s in spacing), plans=model.plans,
                                    configuration=model.configuration))
        timings["preprocess"] = time.perf_counter() - clock
        finest = int(np.argmax([np.prod(case.data.shape[1:]) for case in cases]))
        grid = tuple(int(n) for n in cases[finest].data.shape[1:])
        tiles = [count_tiles(case.data.shape[1:], self.ensemble[member].configuration.patch_size, self.step)
                 for case, (member, _) in zip(cases, grids)]
        clock = time.perf_counter()
        resample_seconds = 0.0
        average = torch.zeros((heads, *grid), dtype=torch.float16)
        done = 0
        for case, (member, _), num_tiles in zip(cases, grids, tiles):
            offset = done
            progress = None if on_tile is None else (
                lambda i, _n, offset=offset: on_tile(offset + i, sum(tiles)))
            slabs = list(self._logit_slabs(case, member, axis=-1, on_tile=progress))
            done += num_tiles
            start = time.perf_counter()
            logits = slabs[0][2] if len(slabs) == 1 else torch.cat([slab for _, _, slab in slabs], dim=1)
            del slabs
            probabilities = torch.softmax(logits.float(), dim=0)
            del logits
            for c in range(heads):
                channel = probabilities[c]
                if tuple(channel.shape) != grid:
                    channel = torch.nn.functional.interpolate(
                        channel[None, None], size=grid, mode="trilinear", align_corners=False)[0, 0]
                average[c] += (channel / len(grids)).to(torch.float16)
            del probabilities
            resample_seconds += time.perf_counter() - start
        timings["predict"] = time.perf_counter() - clock - resample_seconds
        clock = time.perf_counter()
        sureness = None
        if self.confidence:
            sureness = ClassConfidence(heads)
            sureness.add(torch.log(average.float().clamp_min(1e-6)))  # its softmax is the average again
            timings["confidence"] = time.perf_counter() - clock
        clock = time.perf_counter()
        exporter = self.ensemble[grids[finest][0]]
        export = SlabExport(cases[finest], plans=exporter.plans, configuration=exporter.configuration,
                            num_heads=heads, axis=0)
        export.add(0, grid[0], average)
        labels = export.finish()
        timings["export"] = time.perf_counter() - clock + resample_seconds
        return labels, sum(tiles), sureness

    def segment(self, images: Image | Sequence[Image]) -> Image:
        """Label map of one case on its input grid."""
        return self.run(images).labels
