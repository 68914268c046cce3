"""MR and CT images synthesised from tissue maps, and tissue maps made from 40-class label maps.

Physics-style contrasts come from each tissue's proton density, T1, T2 and fat fraction
(:mod:`mrseg.phantom.tissues`) plus two properties the catalogue does not hold, kept here
because only image synthesis needs them: T2* (reversible dephasing) and the signal lost to
incidental magnetisation transfer (MT) in multi-slice imaging.

* T1 spoiled gradient echo, in-phase and opposed-phase (``t1_in``, ``t1_opp``), and the
  two-point Dixon water and fat images of the same dual-echo acquisition (``dixon_water``,
  ``dixon_fat``). Water ``W`` and fat ``F`` signals come from the spoiled steady state
  ``sin a (1 - E1) / (1 - cos a E1) exp(-TE / T2*)``. The signal ``W + F exp(i theta)`` (theta 0
  in-phase, pi opposed) is averaged over each voxel's extent and the point-spread function
  *before* the magnitude is taken, so voxels that mix fat and water cancel in opposed-phase
  images: the dark "India ink" outline at fat-water interfaces arises by itself.
* T2 single-shot fast spin echo (``t2_haste``) and turbo spin echo (``t2_tse``):
  ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``; fat with T2 = 150 ms (J-coupling keeps fat bright
  on fast spin echo).
* Spectral fat suppression (``fat_suppression``, for ``t1_in``, ``t2_haste`` and ``t2_tse``):
  the share of the fat component saturated before the echo, as SPIR, SPAIR or CHESS pulses do
  in a fat-suppressed T2 (T2-SPIR) or T1 (VIBE) scan: fat goes dark, water signal is kept.
* CT (``native``, ``contrast``, ``arterial``): each tissue's Hounsfield units without contrast,
  in the portal-venous phase and in the arterial phase (CT angiography); ``enhancement`` scales
  what the contrast agent adds.
* Random contrast (``random_contrast=True``, MR only): every tissue gets a random mean and a
  small random texture, the SynthSeg recipe for training contrast-agnostic models. The left and
  right tissue of a pair (kidneys, lungs, femurs, muscles) share theirs, as in any real scan.

Then, in acquisition order: partial volume (the signal integrated over each voxel with
``oversample`` sub-samples per axis and blurred by a Gaussian point-spread function whose FWHM
is the acquired resolution, plus ``slice_thickness`` through plane), a smooth multiplicative
bias field (MR), and Rician (MR) or Gaussian (CT) noise. All randomness comes from ``seed``.

Example:
    >>> import numpy as np
    >>> from mrseg.io.image import Image
    >>> from mrseg.phantom.tissues import TISSUE_INDEX
    >>> tissues = np.full((8, 16, 16), TISSUE_INDEX["subcutaneous_fat"], dtype=np.uint8)
    >>> tissues[2:6, 4:12, 4:12] = TISSUE_INDEX["liver"]
    >>> image = synthesize(Image.from_array(tissues, spacing=(2.0, 2.0, 4.0)),
    ...                    SynthesisOptions(modality="mr", sequence="t1_opp"), seed=0)
    >>> image.array.dtype, image.array.shape
    (dtype('float32'), (8, 16, 16))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image
from mrseg.phantom.tissues import DEFAULT_TISSUE_OF_CLASS, TISSUE_INDEX, TISSUES, Tissue, tissue_property

__all__ = [
    "FAT_HU_PER_FRACTION",
    "FAT_SUPPRESSIBLE",
    "FAT_T1_MS",
    "FAT_T2_MS",
    "FAT_T2_TSE_MS",
    "FLUID_CONCENTRATIONS",
    "GRADIENT_ECHO",
    "MODALITIES",
    "MR_SCALE",
    "SEQUENCES",
    "SPIN_ECHOES",
    "GradientEcho",
    "SpinEcho",
    "SynthesisOptions",
    "bias_field",
    "synthesize",
    "tissue_signals",
    "tissues_from_labels",
]

MODALITIES = ("ct", "mr")
SEQUENCES: dict[str, tuple[str, ...]] = {
    "ct": ("native", "contrast", "arterial"),
    "mr": ("t1_in", "t1_opp", "dixon_water", "dixon_fat", "t2_haste", "t2_tse"),
}
"""Sequences (MR) and contrast phases (CT) of each modality; the first is the default."""

FAT_SUPPRESSIBLE = ("t1_in", "t2_haste", "t2_tse")
"""The MR sequences that :class:`SynthesisOptions`' ``fat_suppression`` applies to."""

MR_SCALE = 1000.0
"""MR images are in arbitrary units: the brightest catalogue tissue of a sequence is this."""

FAT_T1_MS = 260.0
"""T1 of the fat (methylene) component at 1.5 T, whatever tissue it is in."""
FAT_T2_MS = 80.0
"""T2 of the fat component for gradient echo (before the tissue's dephasing is added)."""
FAT_T2_TSE_MS = 150.0
"""Apparent T2 of fat in fast spin echo: J-coupling is broken up by the tight echo train."""

FLUID_CONCENTRATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # tissue: (T1 ms, T2 ms, HU) at concentration 0 and at concentration 1
    "gallbladder": ((3000.0, 1000.0, 0.0), (600.0, 150.0, 30.0)),  # dilute bile, concentrated (fasting) bile
    "stomach_content": ((3000.0, 1000.0, 10.0), (900.0, 120.0, 45.0)),  # water, a meal
}
"""The fluids whose make-up varies between patients: the gallbladder's bile and the stomach's
content. :class:`SynthesisOptions`' ``bile`` and ``gastric_content`` (0..1) move them between
the two ends, T1 and T2 geometrically and HU linearly: concentrated bile has a short T1 (bright on
T1-weighted MR, often brighter than the liver) and a shorter T2, and a meal is darker on T2 and
denser on CT than water. Neither enhances."""

FAT_HU_PER_FRACTION = -165.0
"""How a solid organ's CT number moves per unit of fat fraction added: a voxel mixes tissue of
about 65 HU with fat of about -100 HU (a steatotic liver of 30 % fat is some 40 HU below normal)."""

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_DEFAULT_R2_PRIME_PER_MS = 1.0 / 100.0  # reversible dephasing of soft tissue at 1.5 T
_DEFAULT_MT_SATURATION = 0.10  # solid soft tissue without a value of its own


@dataclass(frozen=True)
class GradientEcho:
    """A spoiled gradient-echo dual-echo acquisition (times at 1.5 T, ms; flip angle, degrees)."""

    tr_ms: float
    flip_deg: float
    te_in_phase_ms: float
    te_opposed_phase_ms: float


@dataclass(frozen=True)
class SpinEcho:
    """A (turbo) spin-echo acquisition; ``tr_ms`` may be ``inf`` (single shot from rest)."""

    tr_ms: float
    te_ms: float


GRADIENT_ECHO = GradientEcho(tr_ms=150.0, flip_deg=80.0, te_in_phase_ms=4.6, te_opposed_phase_ms=2.3)
"""The breath-hold 2-D dual-echo FLASH of a routine 1.5 T liver protocol (in/opposed phase, Dixon).

A strongly T1-weighted choice (80° at TR 150 ms): it orders fat > liver > spleen, kidney > muscle
as the real upper-abdominal T1 scan in the shared sample data does. Echo times scale with
1.5 T / field strength so that fat and water stay in and out of phase.
"""

SPIN_ECHOES: dict[str, SpinEcho] = {
    # single shot: every slice is excited once, from full relaxation
    "t2_haste": SpinEcho(tr_ms=math.inf, te_ms=90.0),
    "t2_tse": SpinEcho(tr_ms=4000.0, te_ms=100.0),
}


@dataclass(frozen=True)
class SynthesisOptions:
    """How to turn a tissue map into an image.

    Attributes:
        modality: ``"mr"`` or ``"ct"``.
        sequence: one of ``SEQUENCES[modality]``; None (default) picks the modality's first
            (``t1_in`` for MR, ``native`` for CT). Always a string after construction.
        random_contrast: MR only: a random intensity and texture per tissue instead of physics.
        bias_field: MR only: peak amplitude of the smooth multiplicative field, which lies in
            ``[exp(-bias_field), exp(bias_field)]`` with a geometric mean of 1 (0 = off).
        noise: MR only: Rician noise sigma relative to the brightest tissue (``MR_SCALE``);
            0.02 is an SNR of 50 for fat.
        ct_noise_hu: CT only: Gaussian noise sigma in HU (12 HU: a routine abdominal CT).
        enhancement: CT only: multiplies every tissue's enhancement in the contrast phases
            (phase HU minus native HU); 1 is the catalogue's, and the dose, the bolus timing and
            the patient's circulation move it (an angiography aorta lies between 250 and 550 HU).
        resolution: acquired resolution in mm along the grid's i, j, k axes (ITK order): the
            FWHM of the Gaussian point-spread function. None (default) is one voxel (the grid's
            spacing); ``(0, 0, 0)`` is no blur.
        slice_thickness: extra through-plane blur, the FWHM in mm along the grid's k axis
            (added in quadrature to ``resolution``).
        field_strength: tesla; scales the gradient-echo echo times (by 1.5 / field strength)
            and reversible dephasing (proportional to the field).
        bile: concentration of the gallbladder's bile, 0 (dilute) to 1 (concentrated); see
            :data:`FLUID_CONCENTRATIONS`. None (default) keeps the catalogue's bile.
        gastric_content: the stomach's content, 0 (water) to 1 (a meal); None (default) keeps
            the catalogue's (water).
        liver_fat_fraction: the liver's fat fraction, 0..1 (steatosis: about 0.05–0.4); None
            (default) keeps the catalogue's 0.04. It moves the fat component on MR (the liver
            darkens on opposed phase and shows on the Dixon fat image) and the CT number
            (:data:`FAT_HU_PER_FRACTION`).
        pancreas_fat_fraction: likewise for the pancreas (catalogue 0.06; fatty pancreas).
        fat_suppression: MR only, ``t1_in``, ``t2_haste`` or ``t2_tse``: the share of the fat
            component's signal that spectral fat suppression removes (0, the default: none;
            0.85–0.98 in a clinical fat-suppressed scan). The image keeps the unsuppressed
            sequence's scale.
        thrombus_hu: CT only in effect: the CT number of the thrombus lining a diseased aorta,
            in every phase (a thrombus does not enhance); None (default) keeps the catalogue's
            50 HU native and 55 HU after contrast. Real mural thrombus and thrombosed false
            lumens lie between about 30 and 140 HU.

    Raises:
        InputError: an unknown modality or sequence, or an option out of range.
    """

    modality: str = "mr"
    sequence: str | None = None
    random_contrast: bool = False
    bias_field: float = 0.3
    noise: float = 0.02
    ct_noise_hu: float = 12.0
    enhancement: float = 1.0
    resolution: tuple[float, float, float] | None = None
    slice_thickness: float | None = None
    field_strength: float = 1.5
    bile: float | None = None
    gastric_content: float | None = None
    liver_fat_fraction: float | None = None
    pancreas_fat_fraction: float | None = None
    fat_suppression: float = 0.0
    thrombus_hu: float | None = None

    def __post_init__(self) -> None:
        if self.modality not in SEQUENCES:
            raise InputError(f"modality must be one of {', '.join(SEQUENCES)}, got {self.modality!r}")
        if self.sequence is None:
            object.__setattr__(self, "sequence", SEQUENCES[self.modality][0])
        elif self.sequence not in SEQUENCES[self.modality]:
            raise InputError(
                f"{self.modality} sequence must be one of {', '.join(SEQUENCES[self.modality])}, "
                f"got {self.sequence!r}"
            )
        if self.random_contrast and self.modality != "mr":
            raise InputError("random_contrast is an MR option (random intensities are not CT numbers); "
                             "use modality='mr'")
        for name in ("bias_field", "noise", "ct_noise_hu", "enhancement"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (math.isfinite(self.field_strength) and self.field_strength > 0):
            raise InputError(f"field_strength must be a positive number of tesla, got {self.field_strength!r}")
        for name, kind in (("bile", "concentration"), ("gastric_content", "concentration"),
                           ("liver_fat_fraction", "fraction"), ("pancreas_fat_fraction", "fraction")):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
                raise InputError(f"{name} is a {kind} in [0, 1] (or None for the catalogue's), got {value!r}")
        if self.thrombus_hu is not None and not (math.isfinite(self.thrombus_hu) and -100 <= self.thrombus_hu <= 300):
            raise InputError(f"thrombus_hu is a thrombus's CT number, in [-100, 300] HU (or None for the "
                             f"catalogue's), got {self.thrombus_hu!r}")
        if not (math.isfinite(self.fat_suppression) and 0 <= self.fat_suppression <= 1):
            raise InputError(f"fat_suppression is the share of fat signal removed, in [0, 1], "
                             f"got {self.fat_suppression!r}")
        if self.fat_suppression > 0 and (self.modality != "mr" or self.sequence not in FAT_SUPPRESSIBLE
                                         or self.random_contrast):
            kind = "random contrast" if self.random_contrast else f"{self.modality} {self.sequence}"
            raise InputError(f"fat_suppression applies to the MR physics sequences {', '.join(FAT_SUPPRESSIBLE)}, "
                             f"not to {kind}")
        if self.resolution is not None:
            if len(self.resolution) != 3 or not all(math.isfinite(r) and r >= 0 for r in self.resolution):
                raise InputError(f"resolution must be three FWHM values >= 0 in mm (x, y, z), got {self.resolution!r}")
            object.__setattr__(self, "resolution", tuple(float(r) for r in self.resolution))
        if self.slice_thickness is not None and not (
            math.isfinite(self.slice_thickness) and self.slice_thickness >= 0
        ):
            raise InputError(f"slice_thickness must be a FWHM >= 0 in mm, got {self.slice_thickness!r}")


# --- tissue physics the catalogue does not hold ---------------------------------------------

def _is_muscle(tissue: Tissue) -> bool:
    return tissue.name == "muscle" or "muscle" in tissue.name or "gluteus" in tissue.name


def _t2_star_ms(tissue: Tissue) -> float | None:
    """T2* at 1.5 T where it differs from the default dephasing (literature ballpark), else None."""
    name = tissue.name
    if name.endswith("_lung"):
        return 1.5  # air-tissue interfaces
    if name.endswith("_cortex") and tissue.t2 <= 1.0:
        return 0.5  # cortical bone
    if name.endswith("_marrow"):
        return 12.0  # trabecular susceptibility
    if name.endswith("kidney_cortex"):
        return 65.0
    if name.endswith("kidney_medulla"):
        return 45.0
    if _is_muscle(tissue):
        return 27.0
    return {"liver": 30.0, "spleen": 50.0, "pancreas": 35.0, "heart": 35.0, "heart_myocardium": 35.0}.get(name)


def _mt_saturation(tissue: Tissue) -> float:
    """Fraction of the water signal lost to incidental MT in multi-slice imaging.

    Proportional to the tissue's macromolecular pool (largest in muscle, small in fat, none in
    fluids). This, more than T1, is why muscle is the darkest soft tissue on T1 gradient echo.
    """
    name = tissue.name
    if tissue.pd == 0 or (name.endswith("_cortex") and tissue.t2 <= 1.0):
        return 0.0
    if tissue.t2 >= 150.0 or name == "spinal_canal":
        return 0.0  # blood, bile, urine, CSF, bowel fluid
    if "fat" in name:
        return 0.02
    if name.endswith("_marrow") or name.endswith("_lung"):
        return 0.05
    if _is_muscle(tissue):
        return 0.25
    if "kidney" in name:
        return 0.08
    return {"liver": 0.15, "pancreas": 0.15, "heart": 0.15, "heart_myocardium": 0.15, "skin": 0.20, "spleen": 0.10}.get(
        name, _DEFAULT_MT_SATURATION
    )


@lru_cache(maxsize=1)
def _property_table() -> dict[str, np.ndarray]:
    """Per-tissue physics arrays (float64, read-only), indexed by tissue label."""

    def column(values: np.ndarray) -> np.ndarray:
        array = np.asarray(values, dtype=np.float64)
        array.flags.writeable = False
        return array

    r2_prime = []
    for t in TISSUES:
        t2_star = _t2_star_ms(t)
        r2_prime.append(_DEFAULT_R2_PRIME_PER_MS if t2_star is None else max(1.0 / t2_star - 1.0 / t.t2, 0.0))
    return {
        "pd": column(tissue_property("pd")),
        "t1": column(np.maximum(tissue_property("t1"), 1.0)),
        "t2": column(np.maximum(tissue_property("t2"), 0.1)),
        "fat_fraction": column(tissue_property("fat_fraction")),
        "r2_prime": column(np.asarray(r2_prime)),  # 1/ms at 1.5 T
        "mt": column(np.asarray([_mt_saturation(t) for t in TISSUES])),
        "hu": column(tissue_property("hu")),
        "hu_contrast": column(tissue_property("hu_contrast")),
        "hu_arterial": column(tissue_property("hu_arterial")),
    }


def _properties(options: SynthesisOptions) -> dict[str, np.ndarray]:
    """The property table with the options' fluid make-up, organ fat and thrombus applied (the
    catalogue's if none is set)."""
    table = _property_table()
    fluids = {"gallbladder": options.bile, "stomach_content": options.gastric_content}
    fat = {"liver": options.liver_fat_fraction, "pancreas": options.pancreas_fat_fraction}
    if all(c is None for c in (*fluids.values(), *fat.values(), options.thrombus_hu)):
        return table
    table = {name: column.copy() for name, column in table.items()}
    phases = ("hu", "hu_contrast", "hu_arterial")
    for tissue, c in fluids.items():
        if c is None:
            continue
        (t1_0, t2_0, hu_0), (t1_1, t2_1, hu_1) = FLUID_CONCENTRATIONS[tissue]
        i = TISSUE_INDEX[tissue]
        table["t1"][i] = t1_0 * (t1_1 / t1_0) ** c
        table["t2"][i] = t2_0 * (t2_1 / t2_0) ** c
        for phase in phases:
            table[phase][i] = hu_0 + c * (hu_1 - hu_0)
    for tissue, fraction in fat.items():
        if fraction is None:
            continue
        i = TISSUE_INDEX[tissue]
        added = fraction - table["fat_fraction"][i]
        table["fat_fraction"][i] = fraction
        for phase in phases:
            table[phase][i] += FAT_HU_PER_FRACTION * added
    if options.thrombus_hu is not None:
        for phase in phases:
            table[phase][TISSUE_INDEX["aortic_thrombus"]] = options.thrombus_hu
    return table


def _spoiled_steady_state(t1: np.ndarray, *, tr: float, flip_deg: float) -> np.ndarray:
    a = math.radians(flip_deg)
    e1 = np.exp(-tr / t1)
    return math.sin(a) * (1 - e1) / (1 - math.cos(a) * e1)


def _gradient_echo_components(p: dict[str, np.ndarray], field_strength: float,
                               te_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Water and fat signal of every tissue of table ``p`` at one echo time (ms, already scaled
    to the field)."""
    seq = GRADIENT_ECHO
    r2_prime = p["r2_prime"] * (field_strength / 1.5)
    water = (
        p["pd"] * (1 - p["fat_fraction"]) * (1 - p["mt"])
        * _spoiled_steady_state(p["t1"], tr=seq.tr_ms, flip_deg=seq.flip_deg)
        * np.exp(-te_ms * (1 / p["t2"] + r2_prime))
    )
    fat = (
        p["pd"] * p["fat_fraction"]
        * _spoiled_steady_state(np.full_like(p["t1"], FAT_T1_MS), tr=seq.tr_ms, flip_deg=seq.flip_deg)
        * np.exp(-te_ms * (1 / FAT_T2_MS + r2_prime))
    )
    return water, fat


def tissue_signals(options: SynthesisOptions) -> np.ndarray:
    """The noiseless signal of every catalogue tissue for a physics contrast (float32).

    MR gradient echo gives the *signed* real signal ``W + F cos(theta)`` (negative where fat
    dominates an opposed-phase voxel; the magnitude is taken after partial volume). Every MR
    sequence is scaled so that its brightest catalogue tissue is ``MR_SCALE`` without fat
    suppression; in/opposed-phase and Dixon images share the in-phase scale, so
    ``dixon_water + dixon_fat == t1_in``. CT gives Hounsfield units.

    Args:
        options: a physics contrast (``random_contrast`` False).

    Returns:
        ``signal[tissue_label]``.
    """
    if options.random_contrast:
        raise InputError("tissue_signals is for physics contrasts; random contrast is drawn in synthesize")
    p = _properties(options)
    sequence = options.sequence
    if options.modality == "ct":
        if sequence == "native":
            return p["hu"].astype(np.float32)
        phase = p["hu_arterial" if sequence == "arterial" else "hu_contrast"]
        return (p["hu"] + options.enhancement * (phase - p["hu"])).astype(np.float32)
    # the scale comes from the catalogue's tissues without fat suppression, so that neither a
    # fluid's make-up, an organ's fat nor the suppression moves any other tissue
    catalogue = _property_table()
    fat_kept = 1.0 - options.fat_suppression
    if sequence in SPIN_ECHOES:
        se = SPIN_ECHOES[sequence]
        reference = _spin_echo_signal(catalogue, se).max()
        return (_spin_echo_signal(p, se, fat_kept) / reference * MR_SCALE).astype(np.float32)
    scale = 1.5 / options.field_strength
    te_in = GRADIENT_ECHO.te_in_phase_ms * scale
    catalogue_water, catalogue_fat = _gradient_echo_components(catalogue, options.field_strength, te_in)
    reference = (catalogue_water + catalogue_fat).max()
    water, fat = _gradient_echo_components(p, options.field_strength, te_in)
    if sequence == "t1_opp":
        water, fat = _gradient_echo_components(p, options.field_strength, GRADIENT_ECHO.te_opposed_phase_ms * scale)
        signal = water - fat  # exp(i pi) = -1: the complex signal stays real
    elif sequence == "dixon_water":
        signal = water
    elif sequence == "dixon_fat":
        signal = fat
    else:
        signal = water + fat * fat_kept
    return (signal / reference * MR_SCALE).astype(np.float32)


def _spin_echo_signal(p: dict[str, np.ndarray], se: SpinEcho, fat_kept: float = 1.0) -> np.ndarray:
    """Water plus fat signal (the share ``fat_kept`` of it) of every tissue of table ``p`` in a
    (turbo) spin echo."""
    recovery = 1.0 if math.isinf(se.tr_ms) else 1 - np.exp(-se.tr_ms / p["t1"])
    fat_recovery = 1.0 if math.isinf(se.tr_ms) else 1 - math.exp(-se.tr_ms / FAT_T1_MS)
    water = p["pd"] * (1 - p["fat_fraction"]) * (1 - p["mt"]) * recovery * np.exp(-se.te_ms / p["t2"])
    fat = p["pd"] * p["fat_fraction"] * fat_recovery * math.exp(-se.te_ms / FAT_T2_TSE_MS)
    return water + fat * fat_kept


# --- acquisition effects ------------------------------------------------------------------------

def _subvoxel_kernel(oversample: int) -> np.ndarray:
    """1-D weights of integrating the linearly interpolated signal over a voxel, ``k`` samples.

    Sub-sample offsets ``(s + 0.5) / k - 0.5`` voxel; one at offset ``o`` takes ``|o|`` of the
    neighbour on its side. ``k = 1`` is the identity; ``k = 2`` gives ``[1/8, 3/4, 1/8]``.
    """
    offsets = (np.arange(oversample) + 0.5) / oversample - 0.5
    side = float(np.abs(offsets[offsets < 0]).sum() / oversample)
    return np.array([side, 1 - 2 * side, side], dtype=np.float32)


def _partial_volume(
    volume: np.ndarray, geometry: Geometry, options: SynthesisOptions, oversample: int
) -> np.ndarray:
    """Sub-voxel integration and the Gaussian point-spread function (in place where possible)."""
    if oversample > 1:
        kernel = _subvoxel_kernel(oversample)
        for axis in range(3):
            if volume.shape[axis] > 1:
                volume = ndimage.convolve1d(volume, kernel, axis=axis, mode="nearest")
    fwhm = np.asarray(options.resolution if options.resolution is not None else geometry.spacing, dtype=float)
    if options.slice_thickness:
        fwhm[2] = math.hypot(fwhm[2], options.slice_thickness)
    sigma_zyx = (fwhm * _FWHM_TO_SIGMA / np.asarray(geometry.spacing))[::-1]
    for axis, sigma in enumerate(sigma_zyx):
        if sigma >= 0.05 and volume.shape[axis] > 1:
            volume = ndimage.gaussian_filter1d(volume, float(sigma), axis=axis, mode="nearest", truncate=3.0)
    return volume


def _lagrange_basis(nodes: np.ndarray, n: int) -> np.ndarray:
    """``basis[x, m]``: the Lagrange polynomial of node ``m`` at integer positions ``x < n``."""
    x = np.arange(n, dtype=np.float64)[:, None]
    basis = np.ones((n, len(nodes)))
    for m, node in enumerate(nodes):
        for q, other in enumerate(nodes):
            if q != m:
                basis[:, m] *= (x[:, 0] - other) / (node - other)
    return basis


def bias_field(
    geometry: Geometry,
    amplitude: float,
    rng: np.random.Generator,
    *,
    length_mm: float = 250.0,
) -> np.ndarray:
    """A smooth multiplicative MR bias field on a grid (float32, numpy order).

    ``exp(amplitude * g)`` where ``g`` is a random cubic polynomial of the *world* position
    (relative to the grid's centre, in units of ``length_mm``), mean-centred and scaled to
    ``max |g| = 1``: the field lies in ``[exp(-amplitude), exp(amplitude)]`` with geometric
    mean 1 and varies over the body, not over voxels. A cubic in world coordinates is a cubic in
    each voxel index, so it is evaluated exactly from a 4x4x4 lattice by separable Lagrange
    interpolation (fast on large grids).

    Args:
        geometry: the grid.
        amplitude: peak log-amplitude (0 gives ones).
        rng: random generator.
        length_mm: spatial scale of the polynomial's variable.

    Returns:
        The field, shape ``geometry.shape``.
    """
    shape = geometry.shape
    # random cubic in world (u, v, w): coefficients shrink with degree
    powers = [(a, b, c) for a in range(4) for b in range(4) for c in range(4) if 0 < a + b + c <= 3]
    coefficients = rng.standard_normal(len(powers)) / np.array([1.0 + sum(p) for p in powers])
    if amplitude == 0:
        return np.ones(shape, dtype=np.float32)
    size_xyz = np.asarray(shape[::-1])
    nodes = [np.linspace(0.0, n - 1.0, min(int(n), 4)) for n in size_xyz]  # per ITK axis
    lattice = np.stack(np.meshgrid(*nodes, indexing="ij"), axis=-1)  # (ni, nj, nk, 3) indices
    centre = geometry.affine_lps @ np.append((size_xyz - 1) / 2.0, 1.0)
    world = lattice @ geometry.affine_lps[:3, :3].T + geometry.affine_lps[:3, 3]
    u, v, w = np.moveaxis((world - centre[:3]) / length_mm, -1, 0)
    values = sum(k * u**a * v**b * w**c for k, (a, b, c) in zip(coefficients, powers))  # (ni, nj, nk)
    bi, bj, bk = (_lagrange_basis(nodes[a], int(size_xyz[a])) for a in range(3))
    # contract k, then j, then i: the last step is one (nk*nj, 4) @ (4, ni) product
    along_k = np.einsum("ijc,zc->zij", np.asarray(values), bk)
    along_j = np.einsum("zij,yj->zyi", along_k, bj)
    g = (along_j.reshape(-1, along_j.shape[-1]) @ bi.T).reshape(shape).astype(np.float32)
    g -= g.mean()
    peak = float(np.abs(g).max())
    if peak > 0:
        g *= amplitude / peak
    return np.exp(g, out=g)


_PAIRED_TISSUES: tuple[tuple[int, int], ...] = tuple(
    (t.index, TISSUE_INDEX["right_" + t.name[len("left_"):]])
    for t in TISSUES if t.name.startswith("left_") and "right_" + t.name[len("left_"):] in TISSUE_INDEX
)


def _check_tissue_map(tissues: Image) -> np.ndarray:
    array = np.asarray(tissues.array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"tissue map must hold integer tissue labels, got dtype {array.dtype}; "
                         "make one with tissues_from_labels or mrseg.phantom.anatomy")
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= len(TISSUES):
            bad = high if high >= len(TISSUES) else low
            raise InputError(f"tissue map holds label {bad}; the tissue catalogue has labels 0..{len(TISSUES) - 1}")
    return array


def synthesize(tissues: Image, options: SynthesisOptions, *, seed: int, oversample: int = 1) -> Image:
    """Synthesise an MR or CT image of a tissue map, on the tissue map's grid.

    Args:
        tissues: integer tissue labels of :mod:`mrseg.phantom.tissues` (any orientation,
            anisotropic spacing).
        options: modality, sequence and acquisition effects.
        seed: seed of every random draw (random contrast, bias field, noise).
        oversample: sub-samples per axis with which the (linearly interpolated) signal is
            integrated over each voxel: ``k > 1`` mixes about an eighth of each neighbour into a
            voxel (partial volume at every boundary, before the magnitude is taken); 1 = off.

    Returns:
        A float32 image with the tissue map's geometry: HU for CT, arbitrary units for MR (the
        brightest catalogue tissue of the sequence is about ``MR_SCALE``, air is noise).

    Raises:
        InputError: the tissue map is not integer tissue labels, or ``oversample < 1``.
    """
    labels = _check_tissue_map(tissues)
    if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 1:
        raise InputError(f"oversample must be an integer >= 1, got {oversample!r}")
    rng = np.random.default_rng(seed)
    if options.random_contrast:
        means = rng.uniform(0.0, 1.0, len(TISSUES)) * MR_SCALE
        spreads = rng.uniform(0.005, 0.04, len(TISSUES)) * MR_SCALE
        means[TISSUE_INDEX["air"]] = spreads[TISSUE_INDEX["air"]] = 0.0  # outside the body stays dark
        for left, right in _PAIRED_TISSUES:  # the two kidneys (lungs, femurs, ...) look alike in any scan
            means[left], spreads[left] = means[right], spreads[right]
        texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape, dtype=np.float32), 1.0)
        texture *= np.float32(1.0 / max(float(texture.std()), 1e-6))
        volume = means.astype(np.float32)[labels] + spreads.astype(np.float32)[labels] * texture
    else:
        volume = tissue_signals(options)[labels]
    volume = _partial_volume(volume, tissues.geometry, options, int(oversample))
    if options.modality == "ct":
        if options.ct_noise_hu > 0:
            volume = volume + rng.standard_normal(volume.shape, dtype=np.float32) * np.float32(options.ct_noise_hu)
        return tissues.with_array(volume.astype(np.float32, copy=False))
    magnitude = np.abs(volume)
    if options.bias_field > 0:
        magnitude *= bias_field(tissues.geometry, options.bias_field, rng)
    if options.noise > 0:
        sigma = np.float32(options.noise * MR_SCALE)
        real = magnitude + sigma * rng.standard_normal(volume.shape, dtype=np.float32)
        imaginary = sigma * rng.standard_normal(volume.shape, dtype=np.float32)
        magnitude = np.sqrt(real * real + imaginary * imaginary)  # Rician
    return tissues.with_array(magnitude.astype(np.float32, copy=False))


# --- tissue maps from 40-class label maps ----------------------------------------------------

_LAYERED: tuple[tuple[str, str, float], ...] = (
    # shell tissue suffix, core tissue suffix, shell thickness (mm)
    ("_cortex", "_medulla", 6.0),  # kidneys
    ("_cortex", "_marrow", 2.0),  # bones
    ("_wall", "_content", 3.5),  # stomach, small bowel, colon
)


def _layers() -> list[tuple[int, int, int, float]]:
    """(class label, shell tissue, core tissue, thickness) for every class that has layers."""
    out = []
    for cls in BASE.classes:
        for shell, core, mm in _LAYERED:
            if cls.name + shell in TISSUE_INDEX and cls.name + core in TISSUE_INDEX:
                out.append((cls.index, TISSUE_INDEX[cls.name + shell], TISSUE_INDEX[cls.name + core], mm))
    return out


def _axial_axis(geometry: Geometry) -> int:
    """The numpy axis closest to the patient's superior-inferior direction."""
    itk_axis = int(np.argmax(np.abs(geometry.direction_matrix[2, :])))
    return 2 - itk_axis


def _in_plane_sampling(spacing_zyx: tuple[float, float, float], axial: int) -> tuple[float, ...]:
    """Spacing that makes a 3-D distance transform act slice by slice (huge step across slices)."""
    return tuple(1e6 if a == axial else s for a, s in enumerate(spacing_zyx))


def _per_slice(function: Callable[[np.ndarray], np.ndarray], mask: np.ndarray, axial: int) -> np.ndarray:
    """Apply a 2-D mask operation to every plane across the ``axial`` numpy axis."""
    moved = np.moveaxis(mask, axial, 0)
    return np.moveaxis(np.stack([function(plane) for plane in moved]), 0, axial)


def _convex_hull_2d(plane: np.ndarray) -> np.ndarray:
    """Filled convex hull of a 2-D mask (the mask itself when it is too thin for a hull)."""
    from scipy.spatial import ConvexHull, QhullError

    points = np.argwhere(plane)
    if len(points) < 3:
        return plane.copy()
    low, high = points.min(axis=0), points.max(axis=0) + 1
    try:
        hull = ConvexHull(points)
    except QhullError:  # collinear points
        return plane.copy()
    rows, cols = np.mgrid[low[0]:high[0], low[1]:high[1]]
    inside = np.ones(rows.shape, dtype=bool)
    for a, b, c in hull.equations:
        inside &= a * rows + b * cols + c <= 1e-9
    out = plane.copy()
    out[low[0]:high[0], low[1]:high[1]] |= inside
    return out


def _shell(mask: np.ndarray, spacing_zyx: tuple[float, float, float], thickness_mm: float) -> np.ndarray:
    """The outer ``thickness_mm`` of a mask, at least one voxel; the volume's edge is not outside."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    box = tuple(
        slice(max(int(i.min()) - 1, 0), min(int(i.max()) + 2, n)) for i, n in zip(np.nonzero(mask), mask.shape)
    )
    sub = mask[box]
    depth = ndimage.distance_transform_edt(sub, sampling=spacing_zyx)
    surface = sub & ~ndimage.binary_erosion(sub, border_value=1)
    out[box] = sub & ((depth <= thickness_mm) | surface)
    return out


def tissues_from_labels(
    labels: Image,
    *,
    seed: int = 0,
    fat_mm: float | None = None,
    wall_mm: float | None = None,
    closing_mm: float = 20.0,
) -> Image:
    """A plausible tissue map for a plain 40-class label map (a real reference, say).

    Every labelled voxel keeps its class: each class gets its bulk tissue, kidneys a cortex
    shell (6 mm) around a medulla core, bones a cortex shell around marrow, stomach and bowel a
    wall around their content; the canal enclosed by the spine becomes spinal canal. The body
    is the labels closed by ``closing_mm``, with holes filled, made convex in each axial plane
    and grown by ``wall_mm + fat_mm``: the outer ``fat_mm`` is subcutaneous fat, then a
    ``wall_mm`` muscular wall, and unlabelled voxels deeper inside a mix of visceral fat with
    smooth patches of muscle. Outside the body is air. Axial planes are those of the voxel axis
    closest to superior-inferior; distances are in mm, so any orientation and anisotropic
    spacing work. Slices without labels take the body outline of the nearest labelled slice.

    Args:
        labels: 40-class label map (0 background).
        seed: draws the body habitus (fat and wall thickness when not given) and the visceral
            fat/muscle pattern.
        fat_mm: subcutaneous fat thickness; default drawn from 8-20 mm.
        wall_mm: abdominal wall muscle thickness; default drawn from 5-10 mm.
        closing_mm: radius joining neighbouring organs into one body outline.

    Returns:
        A ``uint8`` tissue map on the label map's grid.

    Raises:
        InputError: the label map is not integer labels 0..40.
    """
    array = np.asarray(labels.array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"label map must hold integer 40-class labels, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > BASE.num_classes):
        raise InputError(
            f"label map holds labels {int(array.min())}..{int(array.max())}; a 40-class map (0..40) is expected"
        )
    rng = np.random.default_rng(seed)
    fat = float(rng.uniform(8.0, 20.0)) if fat_mm is None else float(fat_mm)
    wall = float(rng.uniform(5.0, 10.0)) if wall_mm is None else float(wall_mm)
    muscle_share = float(rng.uniform(0.35, 0.6))
    spacing = labels.geometry.spacing_zyx
    axial = _axial_axis(labels.geometry)

    lut = np.zeros(BASE.num_classes + 1, dtype=np.uint8)
    for cls, tissue in DEFAULT_TISSUE_OF_CLASS.items():
        lut[cls] = tissue
    organs_tissue = lut[array.astype(np.intp)]
    for cls, shell, core, mm in _layers():
        mask = array == cls
        if mask.any():
            organs_tissue[mask] = core
            organs_tissue[_shell(mask, spacing, mm)] = shell

    organs = array > 0
    tissues = np.zeros(array.shape, dtype=np.uint8)  # air
    if not organs.any():
        return labels.with_array(tissues)

    grown = ndimage.distance_transform_edt(~organs, sampling=spacing) <= closing_mm
    closed = (ndimage.distance_transform_edt(grown, sampling=spacing) > closing_mm) | organs
    outline = _per_slice(lambda p: _convex_hull_2d(ndimage.binary_fill_holes(p)), closed, axial)
    filled = np.moveaxis(outline, axial, 0)  # a view: fill empty slices from the nearest labelled one
    labelled = np.flatnonzero(filled.reshape(len(filled), -1).any(axis=1))
    for s in range(len(filled)):
        if not filled[s].any():
            filled[s] = filled[labelled[np.argmin(np.abs(labelled - s))]]

    in_plane = _in_plane_sampling(spacing, axial)
    body = ndimage.distance_transform_edt(~outline, sampling=in_plane) <= fat + wall
    depth = ndimage.distance_transform_edt(body, sampling=in_plane)

    sigma = [4.0 / s for s in spacing]  # centimetre-sized patches of muscle in visceral fat
    pattern = ndimage.gaussian_filter(rng.standard_normal(array.shape, dtype=np.float32), sigma)
    interior = body & (depth > fat + wall) & ~organs
    threshold = np.quantile(pattern[interior], 1 - muscle_share) if interior.any() else np.inf
    tissues[interior] = TISSUE_INDEX["visceral_fat"]
    tissues[interior & (pattern > threshold)] = TISSUE_INDEX["muscle"]
    tissues[body & (depth > fat) & (depth <= fat + wall)] = TISSUE_INDEX["muscle"]
    tissues[body & (depth <= fat)] = TISSUE_INDEX["subcutaneous_fat"]
    tissues[body & (depth <= 2.0)] = TISSUE_INDEX["skin"]  # only on grids finer than 2 mm

    spine = array == BASE.index_of("spine")
    if spine.any():
        canal = _per_slice(ndimage.binary_fill_holes, spine, axial) & ~organs
        tissues[canal] = TISSUE_INDEX["spinal_canal"]
    tissues[organs] = organs_tissue[organs]
    return labels.with_array(tissues)
