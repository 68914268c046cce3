"""MR and CT images synthesised from tissue or 40-class label maps.

Physics-style contrasts come from each tissue's proton density, T1, T2 and fat fraction
(:mod:`mrseg.phantom.tissues`) and the sequence's parameters:

* T1 spoiled gradient echo (``t1_in``, ``t1_opp``) and two-point Dixon (``dixon_water``,
  ``dixon_fat``): water and fat signals from the steady-state equation, combined as a complex
  signal with the fat phase 0 (in-phase) or π (opposed-phase). Partial volume averages the
  complex signal before the magnitude is taken, so voxels that mix fat and water cancel at
  their interfaces in opposed-phase images (the "India ink" edge) as in real scans.
* T2 single-shot (``t2_haste``) and turbo spin echo (``t2_tse``): ``PD (1 - e^{-TR/T1})
  e^{-TE/T2}``, fat with a lengthened T2 (J-coupling) so that it stays bright.
* CT (``native``, ``contrast``): the tissues' Hounsfield units without and with portal-venous
  contrast.

A random-contrast mode gives every tissue a random intensity (the SynthSeg recipe for training
contrast-agnostic models). Then: partial volume (Gaussian blur whose FWHM is the acquired
resolution, one voxel by default), slice thickness, a smooth multiplicative bias field (MR),
and Rician (MR) or Gaussian (CT) noise. Everything follows from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image
from mrseg.phantom.tissues import DEFAULT_TISSUE_OF_CLASS, TISSUE_INDEX, TISSUES, tissue_property

MODALITIES = ("ct", "mr")
SEQUENCES: dict[str, tuple[str, ...]] = {
    "mr": ("t1_in", "t1_opp", "dixon_water", "dixon_fat", "t2_haste", "t2_tse"),
    "ct": ("native", "contrast"),
}

FAT_T1_MS = 260.0
FAT_T2_MS = 80.0
FAT_T2_TSE_MS = 150.0  # J-coupling keeps fat bright on fast spin echo
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
MR_SCALE = 1000.0  # MR images are scaled so that the brightest tissue is about this


@dataclass(frozen=True)
class SynthesisOptions:
    """How to turn a tissue map into an image.

    Attributes:
        modality: ``"mr"`` or ``"ct"``.
        sequence: see :data:`SEQUENCES`.
        random_contrast: random intensity per tissue instead of physics (training mode).
        bias_field: MR only; peak relative amplitude of the smooth multiplicative field (0: off).
        noise: MR: Rician noise sigma relative to the brightest tissue; CT: ignored.
        ct_noise_hu: CT: Gaussian noise sigma in HU.
        resolution: acquired resolution (x, y, z) in mm, the FWHM of the partial-volume blur;
            default one voxel.
        slice_thickness: FWHM in mm of extra blur along the grid's third (k) axis.
        field_strength: tesla; scales the in/opposed-phase echo times.
    """

    modality: str = "mr"
    sequence: str = "t1_in"
    random_contrast: bool = False
    bias_field: float = 0.3
    noise: float = 0.02
    ct_noise_hu: float = 12.0
    resolution: tuple[float, float, float] | None = None
    slice_thickness: float | None = None
    field_strength: float = 1.5

    def __post_init__(self) -> None:
        if self.modality not in SEQUENCES:
            raise InputError(f"modality must be one of {', '.join(SEQUENCES)}, got {self.modality!r}")
        if self.sequence not in SEQUENCES[self.modality]:
            raise InputError(
                f"{self.modality} sequence must be one of {', '.join(SEQUENCES[self.modality])}, got {self.sequence!r}"
            )


def _spgr(t1: np.ndarray, *, tr: float, flip_deg: float) -> np.ndarray:
    """Steady-state spoiled gradient echo factor ``sin a (1 - E1) / (1 - cos a E1)``."""
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr / np.maximum(t1, 1.0))
    return np.sin(a) * (1 - e1) / (1 - np.cos(a) * e1)


def tissue_signals(options: SynthesisOptions, rng: np.random.Generator) -> np.ndarray:
    """Per-tissue signal (complex for gradient echo), indexed by tissue label."""
    n = len(TISSUES)
    if options.random_contrast:
        values = rng.uniform(0.0, 1.0, n).astype(np.float32) * MR_SCALE
        values[TISSUE_INDEX["air"]] = rng.uniform(0.0, 0.05) * MR_SCALE
        return values
    if options.modality == "ct":
        return tissue_property("hu_contrast" if options.sequence == "contrast" else "hu")
    pd, t1, t2, ff = (tissue_property(p).astype(np.float64) for p in ("pd", "t1", "t2", "fat_fraction"))
    seq = options.sequence
    if seq.startswith("t2_"):
        tr, te = (1500.0, 90.0) if seq == "t2_haste" else (4000.0, 100.0)
        water = pd * (1 - ff) * (1 - np.exp(-tr / t1)) * np.exp(-te / np.maximum(t2, 1.0))
        fat = pd * ff * (1 - np.exp(-tr / FAT_T1_MS)) * np.exp(-te / FAT_T2_TSE_MS)
        signal = water + fat
    else:
        tr, flip = 7.0, 12.0
        te_in = 4.6 * 1.5 / options.field_strength
        te = te_in / 2 if seq == "t1_opp" else te_in  # Dixon water/fat come from the in-phase echo

        def components(echo: float) -> tuple[np.ndarray, np.ndarray]:
            w = pd * (1 - ff) * _spgr(t1, tr=tr, flip_deg=flip) * np.exp(-echo / np.maximum(t2, 1.0))
            f = pd * ff * _spgr(np.full_like(t1, FAT_T1_MS), tr=tr, flip_deg=flip) * np.exp(-echo / FAT_T2_MS)
            return w, f

        water, fat = components(te)
        if seq == "dixon_water":
            signal = water
        elif seq == "dixon_fat":
            signal = fat
        else:
            phase = np.pi if seq == "t1_opp" else 0.0
            signal = water + fat * np.exp(1j * phase)
        # one scale for every gradient-echo image, so in/opposed and Dixon images are comparable
        reference = np.abs(np.add(*components(te_in))).max()
        return (signal / reference * MR_SCALE).astype(np.complex64 if np.iscomplexobj(signal) else np.float32)
    peak = np.abs(signal).max()
    return (signal / peak * MR_SCALE).astype(np.complex64 if np.iscomplexobj(signal) else np.float32)


def _blur(volume: np.ndarray, geometry: Geometry, options: SynthesisOptions) -> np.ndarray:
    """Partial volume: Gaussian blur with the acquired resolution (numpy axis order)."""
    fwhm = np.asarray(options.resolution if options.resolution is not None else geometry.spacing, float)
    if options.slice_thickness is not None:
        fwhm[2] = np.hypot(fwhm[2], options.slice_thickness)
    sigma = (fwhm * FWHM_TO_SIGMA / np.asarray(geometry.spacing))[::-1]
    if np.all(sigma < 0.05):
        return volume
    if np.iscomplexobj(volume):
        return ndimage.gaussian_filter(volume.real, sigma) + 1j * ndimage.gaussian_filter(volume.imag, sigma)
    return ndimage.gaussian_filter(volume, sigma)


def bias_field(geometry: Geometry, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field between ``exp(-amplitude)`` and ``exp(amplitude)``.

    Cubic upsampling of a coarse random 4x4x4 grid over the volume.
    """
    coarse = rng.standard_normal((4, 4, 4))
    coarse /= max(np.abs(coarse).max(), 1e-6)
    zoom = [s / 4 for s in geometry.shape]
    field = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)
    field = field[tuple(slice(0, s) for s in geometry.shape)]
    return np.exp(amplitude * np.clip(field, -1.0, 1.0)).astype(np.float32)  # cubic overshoot clipped


def synthesize(tissues: Image, options: SynthesisOptions, *, seed: int) -> Image:
    """Synthesise an image on the tissue map's grid.

    Args:
        tissues: a tissue map (labels of :mod:`mrseg.phantom.tissues`).
        options: modality, sequence and acquisition effects.
        seed: seed of every random draw (contrast, bias field, noise).

    Returns:
        A float32 image: HU for CT, arbitrary units (brightest tissue about 1000) for MR.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(tissues.array)
    if labels.size and labels.max() >= len(TISSUES):
        raise InputError(f"tissue map holds label {labels.max()}, the catalogue has {len(TISSUES)} tissues")
    signals = tissue_signals(options, rng)
    volume = signals[labels]
    if options.random_contrast:
        volume = volume * (1 + 0.03 * rng.standard_normal(volume.shape)).astype(np.float32)
    volume = _blur(volume, tissues.geometry, options)
    if options.modality == "ct":
        image = volume + rng.normal(0.0, options.ct_noise_hu, volume.shape)
        return tissues.with_array(image.astype(np.float32))
    magnitude_phase = volume if np.iscomplexobj(volume) else volume.astype(np.complex64)
    if options.bias_field > 0:
        magnitude_phase = magnitude_phase * bias_field(tissues.geometry, options.bias_field, rng)
    if options.noise > 0:
        sigma = options.noise * MR_SCALE
        magnitude_phase = magnitude_phase + (
            rng.normal(0.0, sigma, volume.shape) + 1j * rng.normal(0.0, sigma, volume.shape)
        )
    return tissues.with_array(np.abs(magnitude_phase).astype(np.float32))


def _shell(mask: np.ndarray, spacing_zyx: tuple[float, float, float], thickness_mm: float) -> np.ndarray:
    """Voxels of ``mask`` within ``thickness_mm`` of its outside (computed in the mask's box)."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(mask))
    inner = np.pad(mask[box], 1)
    depth = ndimage.distance_transform_edt(inner, sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    out[box] = mask[box] & (depth <= thickness_mm)
    return out


_SHELLS: dict[str, tuple[str, str, float]] = {
    # class → (shell tissue, core tissue, shell thickness mm)
    "right_kidney": ("right_kidney_cortex", "right_kidney_medulla", 6.0),
    "left_kidney": ("left_kidney_cortex", "left_kidney_medulla", 6.0),
    "stomach": ("stomach_wall", "stomach_content", 5.0),
    "small_bowel": ("small_bowel_wall", "small_bowel_content", 3.0),
    "colon": ("colon_wall", "colon_content", 3.0),
    "spine": ("spine_cortex", "spine_marrow", 2.0),
    "sacrum": ("sacrum_cortex", "sacrum_marrow", 2.0),
    "left_hip": ("left_hip_cortex", "left_hip_marrow", 2.0),
    "right_hip": ("right_hip_cortex", "right_hip_marrow", 2.0),
    "left_femur": ("left_femur_cortex", "left_femur_marrow", 3.0),
    "right_femur": ("right_femur_cortex", "right_femur_marrow", 3.0),
}


def tissues_from_labels(
    labels: Image,
    *,
    seed: int = 0,
    fat_mm: float = 15.0,
    wall_mm: float = 10.0,
    closing_mm: float = 20.0,
) -> Image:
    """A plausible tissue map for a plain 40-class label map (a real reference, say).

    Each class gets its bulk tissue; kidneys get cortex and medulla, bones cortex and marrow,
    stomach and bowel wall and content. Unlabelled voxels inside a body outline made from the
    labels (closed by ``closing_mm``, holes filled, grown by ``fat_mm``) become subcutaneous
    fat in the outer ``fat_mm``, then a muscular wall of ``wall_mm``, and visceral fat inside;
    outside the body is air. ``seed`` is accepted for symmetry with the other generators; the
    result is deterministic.
    """
    from mrseg.classes import BASE

    del seed
    array = np.asarray(labels.array)
    if array.size and int(array.max()) > BASE.num_classes:
        raise InputError(f"label map holds label {int(array.max())}; a 40-class map (0..40) is expected")
    spacing = labels.geometry.spacing_zyx
    lut = np.zeros(BASE.num_classes + 1, dtype=np.uint8)
    for cls, tissue in DEFAULT_TISSUE_OF_CLASS.items():
        lut[cls] = tissue
    tissues = lut[array.astype(np.intp)]
    for class_name, (shell, core, mm) in _SHELLS.items():
        mask = array == BASE.index_of(class_name)
        if mask.any():
            tissues[mask] = TISSUE_INDEX[core]
            tissues[_shell(mask, spacing, mm)] = TISSUE_INDEX[shell]

    organs = array > 0
    outside_distance = ndimage.distance_transform_edt(~organs, sampling=spacing)
    grown = outside_distance <= closing_mm
    closed = ndimage.distance_transform_edt(grown, sampling=spacing) > closing_mm
    closed |= organs
    closed = np.stack([ndimage.binary_fill_holes(plane) for plane in closed])  # per slice: open FOV ends
    body = ndimage.distance_transform_edt(~closed, sampling=spacing) <= fat_mm
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    free = body & ~organs
    tissues[free & (depth <= fat_mm)] = TISSUE_INDEX["subcutaneous_fat"]
    tissues[free & (depth > fat_mm) & (depth <= fat_mm + wall_mm)] = TISSUE_INDEX["muscle"]
    tissues[free & (depth > fat_mm + wall_mm)] = TISSUE_INDEX["visceral_fat"]
    tissues[~body] = TISSUE_INDEX["air"]
    return labels.with_array(tissues.astype(np.uint8))


def resample_labels(labels: Image, grid: Geometry) -> Image:
    """Nearest-neighbour resampling of a label map onto another grid, in world coordinates."""
    import SimpleITK as sitk

    from mrseg.io.files import to_itk

    reference = sitk.Image([int(s) for s in grid.shape[::-1]], sitk.sitkUInt8)
    reference.SetSpacing(grid.spacing)
    reference.SetOrigin(grid.origin)
    reference.SetDirection(grid.direction)
    moved = sitk.Resample(to_itk(labels), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return Image(sitk.GetArrayFromImage(moved), grid)
