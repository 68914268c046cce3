"""Domain randomisation: training cases whose contrast, grid, artefacts and field of view vary.

A model trained on label maps whose appearance is drawn at random, rather than on one scanner's
look, has to learn shapes and neighbourhoods, which transfer to real scans of any contrast (the
SynthSeg approach). :func:`random_case` draws everything one training case needs from one seed:

* contrast: MR with a random intensity per tissue (paired organs alike), MR physics sequences
  at 1.5 or 3 T, or CT (native, portal-venous or, for ``arterial_share`` of the enhanced CT, the
  arterial phase of a CT angiography), the contrast agent's enhancement scaled at random;
* the acquisition grid: in-plane spacing, slice spacing and slice thickness, axis orientation
  (axial, sagittal, coronal, flipped or oblique); nnU-Net's preprocessing later resamples it to
  the model's spacing, exactly as it does a real scan;
* artefacts: bias field amplitude, noise level, and an intensity gamma (MR);
* the fluids, for ``fluid_share`` of the cases: how concentrated the gallbladder's bile is and
  whether the stomach holds water or a meal (they change its MR and CT appearance, not its label);
* spectral fat suppression, for ``fat_suppression_share`` of the MR cases whose sequence allows
  it (a T2-SPIR or fat-suppressed T1 look: fat dark);
* fatty organs, for ``fatty_organ_share`` of the cases: the liver's and pancreas's fat fraction
  (steatosis: the liver darkens on opposed phase, shows on a Dixon fat image, and loses HU);
* the field of view: the generated subject's region, then often a random crop around an
  anatomy voxel or, for ``centred_crop_share`` of the crops, around one of the abdominal organs
  of ``crop_centres`` (a small abdominal field of view whose top is spleen and liver dome, not
  lung), and sometimes a thin slab of a few centimetres, like a breath-hold abdominal MR;
* mesenteric clutter, for ``clutter_share`` of the cases: blobs of unlabelled soft tissue in
  the visceral fat (vessels, lymph nodes), so that the fat beside an organ is not always even;
* the perirenal space, for ``perirenal_share`` of the cases: the fat around and above each
  kidney as a tissue of its own, so that a grey compartment around a kidney is not the kidney;
* a perirenal compartment, for ``perirenal_room_share`` of the generated subjects: the organs
  painted after the kidneys but the spleen keep out of the fat round the left kidney raised by a
  height drawn from ``perirenal_room_mm``, so a rounded body of fat as wide as the kidney sits
  above its pole (of the greyer perirenal fat where the case also has a perirenal space), as in
  patients with much retroperitoneal fat, where every network had labelled that body kidney;
* arms, for ``arms_share`` of the generated subjects: both arms lying at the trunk's sides
  (bone, muscle, fat and skin that are no class), as in a patient scanned with the arms down,
  where every demo network had labelled a real CT's arms as hip muscles and lost its liver;
* a scanner table, for ``table_share`` of the generated subjects: two curved shells under the
  back (no class), where a network trained without one labelled the tissue at a real CT's table gluteus;
* air round the body, for ``air_margin_share`` of the generated subjects: the field of view widened
  on each side (right, left, front, back) by its own draw from ``air_margin_mm``, as a CT's
  reconstruction circle or an MR's field of view is wider than the body; the default grid keeps
  the body wall near its edges, and the demo network lost a real CT's liver in a 500 mm field of
  view that it found once the scan was cropped to the body;
* aortic ectasia, for ``ectasia_share`` of the cases (of the modalities ``ectasia_modalities``):
  the aorta widened all round along its whole length, as in older subjects, so that a wide aorta
  is drawn at its own width;
* extraperitoneal fat, for ``extraperitoneal_share`` of the cases: a layer of fat between the
  body wall's muscle and the liver, spleen, gallbladder, stomach and colon, so that the bright
  band round a real liver is not liver;
* the subject's size, for ``subject_scale_share`` of the cases: every length of the subject (or
  template) times a factor drawn from ``subject_scale``, so that smaller and larger people than
  the phantom's one build are seen at the model's grid (the acquisition grid keeps its spacing);
* a layered aortic lumen, for ``layered_aorta_share`` of the generated subjects (of the
  modalities ``layered_aorta_modalities``): a diseased descending aorta whose bright lumen is a
  cap along one wall beside grey thrombus or false lumen, as in a dissection;
* a smooth random deformation of the anatomy, generated or template, for ``deformation_share``
  of the cases: the SD of the displacement drawn from ``deformation_mm`` (as SynthSeg deforms
  its label maps), so that the organs' places relative to each other vary more than the
  phantom's own draws make them;
* the aortic thrombus's CT number, for ``thrombus_share`` of the cases: drawn from
  ``thrombus_hu`` instead of the catalogue's 50 HU, as real thrombus varies (it shows only where
  a generated subject has aortic disease, and only in CT);
* the organs' sizes, for ``organ_scale_share`` of the generated subjects: the liver, the spleen
  and each kidney smaller or larger for the body, each by its own factor from ``organ_scale``,
  so that the network cannot read an organ's extent from the size of the body and its other
  organs (a real patient's build and organs do not scale together);
* the anatomy: a generated subject, or one of the given 40-class label maps used as a template;
  sometimes with an organ removed (postoperative anatomy: its place holds fat, its label is 0),
  so that the model learns to see an organ rather than to label the place where it usually lies.

:class:`RandomizationRanges` holds the ranges; every draw is recorded in the case's metadata
(``metadata["randomization"]``), so a case can be remade from its sidecar.

Example:
    >>> case = random_case(seed=3)
    >>> sorted(case.metadata["randomization"])[:3]
    ['bias_field', 'crop', 'ct_noise_hu']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image
from mrseg.phantom.anatomy import AIR_MARGIN_MAX_MM, FOVS, ORGAN_SCALE_LIMITS, SCALABLE_ORGANS
from mrseg.phantom.cases import OBLIQUE, SCALE_LIMITS, PhantomCase, make_case
from mrseg.phantom.synthesis import FAT_SUPPRESSIBLE, MODALITIES, SEQUENCES
from mrseg.phantom.tissues import DEFORMATION_WAVELENGTH_MM

FIELDS_OF_VIEW = ("thorax", "abdomen", "abdomen", "pelvis", "trunk")  # the abdomen twice as often
# the CT phases this draw chooses between; the arterial phase came later and is drawn apart
# (``arterial_share``), so that every earlier seed still gives the case it gave
_FIRST_CT_PHASES = ("native", "contrast")
ORIENTATIONS = ("LPS", "RAS", "LAS", "PIL", "ASL", "RSP", OBLIQUE)  # axial, sagittal, coronal, tilted


@dataclass(frozen=True)
class RandomizationRanges:
    """The ranges :func:`random_case` draws from (uniform unless said otherwise).

    Attributes:
        random_contrast_share: share of cases with a random intensity per tissue (MR).
        ct_share: share of CT cases; the rest are MR physics sequences.
        in_plane_spacing: mm, the grid's first two axes.
        slice_spacing: mm, the grid's third axis (the slice direction).
        slice_thickness: slice thickness as a multiple of the slice spacing (through-plane blur).
        axial_share: share of axial LPS grids; the others draw from ``ORIENTATIONS``.
        bias_field: MR bias field peak log-amplitude.
        noise: MR noise sigma relative to the brightest tissue.
        ct_noise_hu: CT noise sigma in HU.
        arterial_share: share of the contrast-enhanced CT cases in the arterial phase (CT
            angiography) instead of the portal-venous phase.
        ct_enhancement: multiplier of the contrast agent's enhancement in enhanced CT
            (:class:`~mrseg.phantom.synthesis.SynthesisOptions`'s ``enhancement``).
        fields_of_view: the generated subjects' fields of view, drawn evenly (list one twice to
            draw it twice as often).
        gamma_log_sd: MR intensity gamma ``exp(N(0, sd))`` on the normalised image.
        template_share: share of cases made from a label-map template, where templates are given.
        crop_share: share of cases cropped to a random box around a foreground voxel.
        crop_fraction: each axis of a crop keeps this fraction of the field of view.
        slab_share: share of the cropped cases that become a slab along the slice axis.
        slab_mm: thickness of such a slab.
        centred_crop_share: share of the crops centred on an organ of ``crop_centres`` (drawn
            evenly) instead of on any anatomy voxel; a crop whose organ is absent (removed, out
            of the field of view) falls back to any anatomy voxel.
        crop_centres: the classes such crops are centred on.
        removal_share: share of cases with one organ removed, drawn from ``removable``.
        removable: the classes that may be removed.
        fluid_share: share of cases whose gallbladder bile and gastric content have a random
            make-up (SynthesisOptions' ``bile`` and ``gastric_content``, each uniform in [0, 1]:
            dilute to concentrated bile, water to a meal); the others keep the catalogue's. 0 by
            default, so that cases drawn before it existed are drawn again unchanged.
        fat_suppression_share: share of the MR physics cases in a sequence that allows it
            (``FAT_SUPPRESSIBLE``: t1_in, t2_haste, t2_tse) acquired with spectral fat
            suppression, as in a T2-SPIR or a fat-suppressed T1 scan; 0 by default, likewise.
        fat_suppression: the share of the fat signal such a case suppresses.
        fat_suppressed_sequences: the sequences fat suppression is drawn for, a subset of
            ``FAT_SUPPRESSIBLE`` (all of them by default; ``("t2_haste", "t2_tse")`` draws
            T2-SPIR-like cases without fat-suppressed T1).
        fatty_organ_share: share of cases whose liver and pancreas hold a fat fraction drawn
            from ``liver_fat_fraction`` and ``pancreas_fat_fraction`` (steatosis, common in
            the cohorts this tool serves) instead of the catalogue's 4 % and 6 %; 0 by default,
            likewise.
        liver_fat_fraction: the range of such a liver's fat fraction.
        pancreas_fat_fraction: the range of such a pancreas's fat fraction.
        clutter_share: share of cases whose visceral fat holds blobs of unlabelled soft tissue
            (:func:`~mrseg.phantom.tissues.mesenteric_clutter`); 0 by default, likewise.
        clutter_fraction: the range of the share of the visceral fat such a case fills.
        perirenal_share: share of cases whose kidneys lie in a perirenal space of its own tissue
            (:func:`~mrseg.phantom.tissues.perirenal_fat`); 0 by default, likewise.
        perirenal_margin_mm: the range of how far that space reaches around a kidney, mm.
        perirenal_rise_mm: the range of how far it reaches above a kidney, mm.
        perirenal_room_share: share of the generated subjects' cases whose later organs keep out
            of a compartment of perirenal fat above the left kidney (``make_case``'s
            ``perirenal_room``); where such a case also has a perirenal space, the space rises
            at least as far, so the compartment is of its greyer fat; 0 by default.
        perirenal_room_mm: the range of how far that compartment reaches above the kidney, mm.
        arms_share: share of the generated subjects' cases with arms lying at the trunk's sides
            (``make_case``'s ``arms``): bone, muscle and fat beside the body that are no class, as
            in a patient scanned with the arms down.
        table_share: share of the generated subjects' cases lying on a scanner table (``make_case``'s
            ``table``): two curved shells under the back that are no class.
        air_margin_share: share of the generated subjects' cases whose field of view is widened
            into air (``make_case``'s ``air_margin``), each side by its own draw.
        air_margin_mm: the range of each side's margin, mm.
        ectasia_share: share of cases whose aorta is widened along its whole length
            (:func:`~mrseg.phantom.tissues.aortic_ectasia`); 0 by default, likewise.
        ectasia_mm: the range of how far its wall moves out, mm (2-8 mm: 22-39 mm across in the
            thorax for the phantom's 18-23 mm).
        ectasia_modalities: the modalities ectasia is drawn for (both by default; ``("ct",)``
            keeps every MR case as it is without ectasia and draws each CT case as with both).
        thrombus_share: share of cases whose aortic thrombus takes a CT number from
            ``thrombus_hu`` (:attr:`~mrseg.phantom.synthesis.SynthesisOptions.thrombus_hu`); 0 by
            default, likewise.
        thrombus_hu: the range of that CT number, HU.
        extraperitoneal_share: share of cases whose organs lie off the body wall by a layer of
            extraperitoneal fat (:func:`~mrseg.phantom.tissues.extraperitoneal_fat`); 0 by
            default, likewise.
        extraperitoneal_mm: the range of that layer's thickness, mm.
        subject_scale_share: share of cases whose subject (generated or template) is drawn at
            another size (``make_case``'s ``scale``); 0 by default, likewise.
        subject_scale: the range of that size factor on every length, within [0.5, 2].
        layered_aorta_share: share of the cases of a generated subject whose descending aorta is
            diseased with a layered lumen (``make_case``'s ``layered_aorta``; without it 15 % of
            subjects have one); 0 by default, likewise.
        layered_aorta_modalities: the modalities it is drawn for (both by default).
        deformation_share: share of cases whose anatomy is deformed smoothly at random
            (``make_case``'s ``deformation_mm``); 0 by default, likewise.
        deformation_mm: the range of the displacement's SD, mm (at most 20).
        organ_scale_share: share of the cases of a generated subject whose liver, spleen and
            kidneys each take a size factor of their own (``make_case``'s ``organ_scales``); 0
            by default, likewise.
        organ_scale: the range of those factors on every length of the organ, within
            :data:`~mrseg.phantom.anatomy.ORGAN_SCALE_LIMITS`.
        scaled_organs: which of those organs take a factor in such a case (default all of
            :data:`~mrseg.phantom.anatomy.SCALABLE_ORGANS`); a factor is drawn for each of them
            either way, so the others' draws do not depend on this choice.
    """

    random_contrast_share: float = 0.45
    ct_share: float = 0.2
    in_plane_spacing: tuple[float, float] = (1.5, 4.0)
    slice_spacing: tuple[float, float] = (2.5, 8.0)
    slice_thickness: tuple[float, float] = (1.0, 1.5)
    axial_share: float = 0.5
    bias_field: tuple[float, float] = (0.0, 0.6)
    noise: tuple[float, float] = (0.005, 0.06)
    ct_noise_hu: tuple[float, float] = (4.0, 25.0)
    arterial_share: float = 0.0
    ct_enhancement: tuple[float, float] = (1.0, 1.0)
    fields_of_view: tuple[str, ...] = FIELDS_OF_VIEW
    gamma_log_sd: float = 0.25
    template_share: float = 0.3
    crop_share: float = 0.5
    crop_fraction: tuple[float, float] = (0.35, 1.0)
    slab_share: float = 0.4
    slab_mm: tuple[float, float] = (40.0, 120.0)
    centred_crop_share: float = 0.0
    crop_centres: tuple[str, ...] = ("liver", "spleen", "right_kidney", "left_kidney", "pancreas", "stomach")
    removal_share: float = 0.15
    removable: tuple[str, ...] = ("spleen", "right_kidney", "left_kidney", "gallbladder", "liver")
    fluid_share: float = 0.0
    fat_suppression_share: float = 0.0
    fat_suppression: tuple[float, float] = (0.85, 0.98)
    fat_suppressed_sequences: tuple[str, ...] = FAT_SUPPRESSIBLE
    fatty_organ_share: float = 0.0
    liver_fat_fraction: tuple[float, float] = (0.0, 0.35)
    pancreas_fat_fraction: tuple[float, float] = (0.0, 0.3)
    clutter_share: float = 0.0
    clutter_fraction: tuple[float, float] = (0.1, 0.5)
    perirenal_share: float = 0.0
    perirenal_margin_mm: tuple[float, float] = (2.0, 12.0)
    perirenal_rise_mm: tuple[float, float] = (10.0, 40.0)
    perirenal_room_share: float = 0.0
    perirenal_room_mm: tuple[float, float] = (20.0, 50.0)
    arms_share: float = 0.0
    table_share: float = 0.0
    air_margin_share: float = 0.0
    air_margin_mm: tuple[float, float] = (0.0, 150.0)
    ectasia_share: float = 0.0
    ectasia_mm: tuple[float, float] = (2.0, 8.0)
    ectasia_modalities: tuple[str, ...] = MODALITIES
    thrombus_share: float = 0.0
    thrombus_hu: tuple[float, float] = (40.0, 140.0)
    extraperitoneal_share: float = 0.0
    extraperitoneal_mm: tuple[float, float] = (2.0, 10.0)
    subject_scale_share: float = 0.0
    subject_scale: tuple[float, float] = (0.85, 1.05)
    layered_aorta_share: float = 0.0
    layered_aorta_modalities: tuple[str, ...] = MODALITIES
    deformation_share: float = 0.0
    deformation_mm: tuple[float, float] = (3.0, 10.0)
    organ_scale_share: float = 0.0
    organ_scale: tuple[float, float] = (0.8, 1.05)
    scaled_organs: tuple[str, ...] = SCALABLE_ORGANS

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RandomizationRanges:
        """The ranges a case's sidecar records under ``"ranges"`` (JSON lists back to tuples), so
        that ``random_case(sidecar["seed"], ranges=...)`` draws that case again."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        return cls(**fields)

    def __post_init__(self) -> None:
        for name in ("random_contrast_share", "ct_share", "axial_share", "template_share", "crop_share",
                     "slab_share", "centred_crop_share", "removal_share", "arterial_share", "fluid_share",
                     "fat_suppression_share", "fatty_organ_share", "clutter_share", "perirenal_share",
                     "perirenal_room_share", "arms_share", "table_share", "air_margin_share", "ectasia_share",
                     "thrombus_share", "extraperitoneal_share", "subject_scale_share", "layered_aorta_share",
                     "deformation_share", "organ_scale_share"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise InputError(f"{name} is a share and must lie in [0, 1], got {value!r}")
        if self.random_contrast_share + self.ct_share > 1:
            raise InputError(f"random_contrast_share + ct_share must be at most 1, got "
                             f"{self.random_contrast_share} + {self.ct_share}")
        for name in ("in_plane_spacing", "slice_spacing", "slice_thickness", "bias_field", "noise", "ct_noise_hu",
                     "crop_fraction", "slab_mm", "ct_enhancement", "fat_suppression", "liver_fat_fraction",
                     "pancreas_fat_fraction", "clutter_fraction", "perirenal_margin_mm", "perirenal_rise_mm",
                     "perirenal_room_mm", "air_margin_mm",
                     "ectasia_mm", "thrombus_hu", "extraperitoneal_mm", "subject_scale", "deformation_mm",
                     "organ_scale"):
            low, high = getattr(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
                raise InputError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)!r}")
        for name in ("in_plane_spacing", "slice_spacing", "slice_thickness", "slab_mm"):
            if getattr(self, name)[0] <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("fat_suppression", "liver_fat_fraction", "pancreas_fat_fraction", "clutter_fraction"):
            if getattr(self, name)[1] > 1:
                raise InputError(f"{name} is a fraction, at most 1, got {getattr(self, name)!r}")
        if not SCALE_LIMITS[0] <= self.subject_scale[0] <= self.subject_scale[1] <= SCALE_LIMITS[1]:
            raise InputError(f"subject_scale is a size factor within [0.5, 2], got {self.subject_scale!r}")
        if not ORGAN_SCALE_LIMITS[0] <= self.organ_scale[0] <= self.organ_scale[1] <= ORGAN_SCALE_LIMITS[1]:
            lo, hi = ORGAN_SCALE_LIMITS
            raise InputError(f"organ_scale is a size factor within [{lo:g}, {hi:g}], got {self.organ_scale!r}")
        unknown = [name for name in self.scaled_organs if name not in SCALABLE_ORGANS]
        if unknown or not self.scaled_organs:
            raise InputError(f"scaled_organs: {', '.join(unknown) or 'none given'}; choose one or more of "
                             f"{', '.join(SCALABLE_ORGANS)}")
        if self.deformation_mm[1] > DEFORMATION_WAVELENGTH_MM / 4:
            raise InputError(f"deformation_mm is the displacement's SD, at most {DEFORMATION_WAVELENGTH_MM / 4:g} mm, "
                             f"got {self.deformation_mm!r}")
        if self.air_margin_mm[1] > AIR_MARGIN_MAX_MM:
            raise InputError(f"air_margin_mm reaches at most {AIR_MARGIN_MAX_MM:g} mm a side, "
                             f"got {self.air_margin_mm!r}")
        if self.crop_fraction[1] > 1:
            raise InputError(f"crop_fraction is a fraction of the field of view, at most 1, got {self.crop_fraction!r}")
        if not (math.isfinite(self.gamma_log_sd) and self.gamma_log_sd >= 0):
            raise InputError(f"gamma_log_sd must be >= 0, got {self.gamma_log_sd!r}")
        for name in (*self.removable, *self.crop_centres):
            BASE.index_of(name)  # an unknown class raises, with suggestions
        if self.centred_crop_share > 0 and not self.crop_centres:
            raise InputError("centred_crop_share > 0 needs at least one class in crop_centres")
        unsuppressible = sorted(set(self.fat_suppressed_sequences) - set(FAT_SUPPRESSIBLE))
        if unsuppressible:
            raise InputError(f"fat_suppressed_sequences may only hold {', '.join(FAT_SUPPRESSIBLE)}, "
                             f"got {', '.join(unsuppressible)}")
        for name in ("ectasia_modalities", "layered_aorta_modalities"):
            modalities = getattr(self, name)
            if not modalities or not set(modalities) <= set(MODALITIES):
                raise InputError(f"{name} must name at least one of {', '.join(MODALITIES)}, got {modalities!r}")
        if self.removal_share > 0 and not self.removable:
            raise InputError("removal_share > 0 needs at least one removable class")
        if not self.fields_of_view or not set(self.fields_of_view) <= set(FOVS):
            raise InputError(f"fields_of_view must name at least one of {', '.join(FOVS)}, got {self.fields_of_view!r}")


def draw_recipe(rng: np.random.Generator, ranges: RandomizationRanges, *, templates: int = 0) -> dict[str, Any]:
    """One case's draws (JSON-able): contrast, grid, artefacts, field of view, anatomy source."""
    roll = rng.random()
    if roll < ranges.random_contrast_share:
        modality, sequence, random_contrast = "mr", str(rng.choice(SEQUENCES["mr"])), True
    elif roll < ranges.random_contrast_share + ranges.ct_share:
        modality, sequence, random_contrast = "ct", str(rng.choice(_FIRST_CT_PHASES)), False
    else:
        modality, sequence, random_contrast = "mr", str(rng.choice(SEQUENCES["mr"])), False
    in_plane = float(rng.uniform(*ranges.in_plane_spacing))
    slice_spacing = float(rng.uniform(*ranges.slice_spacing))
    orientation = "LPS" if rng.random() < ranges.axial_share else str(rng.choice(ORIENTATIONS))
    template = int(rng.integers(templates)) if templates and rng.random() < ranges.template_share else None
    crop = None
    if rng.random() < ranges.crop_share:
        crop = {"fraction": [float(f) for f in rng.uniform(*ranges.crop_fraction, size=3)],
                "slab_mm": float(rng.uniform(*ranges.slab_mm)) if rng.random() < ranges.slab_share else None}
    return {
        "modality": modality,
        "sequence": sequence,
        "random_contrast": random_contrast,
        "field_strength": float(rng.choice((1.5, 3.0))),
        "spacing": [in_plane, in_plane, slice_spacing],
        "slice_thickness": slice_spacing * float(rng.uniform(*ranges.slice_thickness)),
        "orientation": orientation,
        "fov": str(rng.choice(ranges.fields_of_view)),
        "template": template,
        "bias_field": float(rng.uniform(*ranges.bias_field)),
        "noise": float(rng.uniform(*ranges.noise)),
        "ct_noise_hu": float(rng.uniform(*ranges.ct_noise_hu)),
        "gamma": float(math.exp(rng.normal(0.0, ranges.gamma_log_sd))) if modality == "mr" else 1.0,
        "crop": crop,
    }


def case_recipe(seed: int, ranges: RandomizationRanges | None = None, *, templates: int = 0) -> dict[str, Any]:
    """The draws :func:`random_case` makes for ``seed`` before it builds the case: everything
    its sidecar records under ``"randomization"`` but the crop box, which needs the anatomy.
    Cheap: nothing is synthesised."""
    return _recipe_and_crop_stream(seed, ranges or RandomizationRanges(), templates=templates)[0]


def _recipe_and_crop_stream(seed: int, ranges: RandomizationRanges, *,
                            templates: int) -> tuple[dict[str, Any], np.random.Generator]:
    """The recipe, and the stream the crop box goes on drawing from."""
    rng = np.random.default_rng([seed, 0x5EED])  # a stream apart from make_case's own seed
    recipe = draw_recipe(rng, ranges, templates=templates)
    # each later draw has a stream of its own: adding one left every earlier draw as it was
    edits = np.random.default_rng([seed, 0x5EED, 1])
    recipe["removed"] = [str(edits.choice(ranges.removable))] if edits.random() < ranges.removal_share else []
    if recipe["modality"] == "ct":  # the phase and the enhancement
        phase = np.random.default_rng([seed, 0x5EED, 3])
        arterial, enhancement = phase.random() < ranges.arterial_share, float(phase.uniform(*ranges.ct_enhancement))
        if recipe["sequence"] == "contrast" and arterial:
            recipe["sequence"] = "arterial"
        recipe["enhancement"] = enhancement
    if recipe["crop"] is not None:
        centring = np.random.default_rng([seed, 0x5EED, 2])
        centred = centring.random() < ranges.centred_crop_share
        recipe["crop"]["centre"] = str(centring.choice(ranges.crop_centres)) if centred else None
    fluids = np.random.default_rng([seed, 0x5EED, 4])  # the fluids' make-up
    if fluids.random() < ranges.fluid_share:
        recipe["bile"], recipe["gastric_content"] = (float(c) for c in fluids.uniform(0.0, 1.0, 2))
    suppression = np.random.default_rng([seed, 0x5EED, 5])  # fat suppression
    suppressed = suppression.random() < ranges.fat_suppression_share
    share = float(suppression.uniform(*ranges.fat_suppression))
    if suppressed and recipe["sequence"] in ranges.fat_suppressed_sequences and not recipe["random_contrast"] \
            and recipe["modality"] == "mr":
        recipe["fat_suppression"] = share
    fatty = np.random.default_rng([seed, 0x5EED, 6])  # the liver's and pancreas's fat
    if fatty.random() < ranges.fatty_organ_share:
        recipe["liver_fat_fraction"] = float(fatty.uniform(*ranges.liver_fat_fraction))
        recipe["pancreas_fat_fraction"] = float(fatty.uniform(*ranges.pancreas_fat_fraction))
    cluttered = np.random.default_rng([seed, 0x5EED, 7])  # the visceral fat's clutter
    if cluttered.random() < ranges.clutter_share:
        recipe["clutter"] = float(cluttered.uniform(*ranges.clutter_fraction))
    perirenal = np.random.default_rng([seed, 0x5EED, 8])  # the kidneys' own fat
    if perirenal.random() < ranges.perirenal_share:
        recipe["perirenal"] = [float(perirenal.uniform(*ranges.perirenal_margin_mm)),
                               float(perirenal.uniform(*ranges.perirenal_rise_mm))]
    ectatic = np.random.default_rng([seed, 0x5EED, 9])  # the aorta's width
    if ectatic.random() < ranges.ectasia_share and recipe["modality"] in ranges.ectasia_modalities:
        recipe["ectasia"] = float(ectatic.uniform(*ranges.ectasia_mm))
    thrombus = np.random.default_rng([seed, 0x5EED, 10])  # the aortic thrombus's CT number
    if thrombus.random() < ranges.thrombus_share and recipe["modality"] == "ct":
        recipe["thrombus_hu"] = float(thrombus.uniform(*ranges.thrombus_hu))
    extraperitoneal = np.random.default_rng([seed, 0x5EED, 11])  # the fat between the wall and the organs
    if extraperitoneal.random() < ranges.extraperitoneal_share:
        recipe["extraperitoneal"] = float(extraperitoneal.uniform(*ranges.extraperitoneal_mm))
    sized = np.random.default_rng([seed, 0x5EED, 12])  # the subject's size
    if sized.random() < ranges.subject_scale_share:
        recipe["subject_scale"] = float(sized.uniform(*ranges.subject_scale))
    layered = np.random.default_rng([seed, 0x5EED, 13])  # a generated subject's layered aortic lumen
    if layered.random() < ranges.layered_aorta_share and recipe["modality"] in ranges.layered_aorta_modalities \
            and recipe["template"] is None:
        recipe["layered_aorta"] = True
    deformed = np.random.default_rng([seed, 0x5EED, 14])  # the anatomy's smooth deformation
    if deformed.random() < ranges.deformation_share:
        recipe["deformation_mm"] = float(deformed.uniform(*ranges.deformation_mm))
    sizes = np.random.default_rng([seed, 0x5EED, 15])  # a generated subject's organs for its body
    if sizes.random() < ranges.organ_scale_share and recipe["template"] is None:
        factors = {name: float(sizes.uniform(*ranges.organ_scale)) for name in SCALABLE_ORGANS}
        recipe["organ_scales"] = {name: factor for name, factor in factors.items() if name in ranges.scaled_organs}
    roomy = np.random.default_rng([seed, 0x5EED, 16])  # a generated subject's fat compartment above the left kidney
    if roomy.random() < ranges.perirenal_room_share and recipe["template"] is None:
        recipe["perirenal_room"] = float(roomy.uniform(*ranges.perirenal_room_mm))
        if "perirenal" in recipe:
            recipe["perirenal"][1] = max(recipe["perirenal"][1], recipe["perirenal_room"])
    armed = np.random.default_rng([seed, 0x5EED, 17])  # a generated subject's arms at its sides
    if armed.random() < ranges.arms_share and recipe["template"] is None:
        recipe["arms"] = True
    tabled = np.random.default_rng([seed, 0x5EED, 18])  # a generated subject on the scanner's table
    if tabled.random() < ranges.table_share and recipe["template"] is None:
        recipe["table"] = True
    aired = np.random.default_rng([seed, 0x5EED, 19])  # air round a generated subject: right, left, front, back
    if aired.random() < ranges.air_margin_share and recipe["template"] is None:
        recipe["air_margin"] = [float(m) for m in aired.uniform(*ranges.air_margin_mm, size=4)]
    return recipe, rng


def _synthesis_options(recipe: dict[str, Any]) -> dict[str, Any]:
    """The :class:`~mrseg.phantom.synthesis.SynthesisOptions` fields a recipe sets."""
    options = {"field_strength": recipe["field_strength"], "slice_thickness": recipe["slice_thickness"]}
    options.update({name: recipe[name] for name in ("bile", "gastric_content", "fat_suppression",
                                                     "liver_fat_fraction", "pancreas_fat_fraction", "thrombus_hu")
                    if name in recipe})
    if recipe["modality"] == "mr":
        options.update(bias_field=recipe["bias_field"], noise=recipe["noise"])
    else:
        options.update(ct_noise_hu=recipe["ct_noise_hu"], enhancement=recipe["enhancement"])
    return options


# Draws made for generated subjects only, each in the recipe only when drawn and passed to make_case under
# its own name (make_case refuses them with a template, and reads the air margins' list as any sequence).
_GENERATED_SUBJECT_DRAWS = ("organ_scales", "perirenal_room", "arms", "table", "air_margin")


def random_case(
    seed: int,
    *,
    ranges: RandomizationRanges | None = None,
    templates: Sequence[Image] = (),
    template_names: Sequence[str] = (),
) -> PhantomCase:
    """A training case with randomised contrast, grid, artefacts and field of view.

    Args:
        seed: every draw (recipe, anatomy, synthesis, crop) follows from it.
        ranges: what to draw from; default :class:`RandomizationRanges`'s.
        templates: 40-class label maps to use as anatomy for ``ranges.template_share`` of the
            cases (none: every case is a generated subject).
        template_names: where each template came from, for the sidecar.

    Returns:
        The case, its labels on the image's grid, ``metadata["randomization"]`` its draws.
    """
    ranges = ranges or RandomizationRanges()
    recipe, rng = _recipe_and_crop_stream(seed, ranges, templates=len(templates))
    common = {"seed": seed, "modality": recipe["modality"], "sequence": recipe["sequence"],
              "random_contrast": recipe["random_contrast"], "spacing": tuple(recipe["spacing"]),
              "orientation": recipe["orientation"], "remove": recipe["removed"], "clutter": recipe.get("clutter", 0.0),
              "perirenal": tuple(recipe["perirenal"]) if "perirenal" in recipe else None,
              "ectasia": recipe.get("ectasia", 0.0), "extraperitoneal": recipe.get("extraperitoneal", 0.0),
              "scale": recipe.get("subject_scale", 1.0), "layered_aorta": recipe.get("layered_aorta", False),
              "deformation_mm": recipe.get("deformation_mm", 0.0),
              **_synthesis_options(recipe)}
    common.update({key: recipe[key] for key in _GENERATED_SUBJECT_DRAWS if key in recipe})
    if recipe["template"] is not None:
        index = recipe["template"]
        source = template_names[index] if index < len(template_names) else f"template {index}"
        case = make_case(from_labels=templates[index], source=source, **common)
    else:
        case = make_case(fov=recipe["fov"], **common)
    image, labels = case.image, case.labels
    if recipe["crop"] is not None:
        centre = recipe["crop"]["centre"]
        box = crop_box(labels, rng, fraction=recipe["crop"]["fraction"], slab_mm=recipe["crop"]["slab_mm"],
                       around=BASE.index_of(centre) if centre else None)
        image, labels = crop(image, box), crop(labels, box)
        recipe["crop"]["box_zyx"] = [[s.start, s.stop] for s in box]
    if recipe["gamma"] != 1.0:
        image = apply_gamma(image, recipe["gamma"])
    metadata = dict(case.metadata, randomization=recipe, ranges=asdict(ranges))
    return PhantomCase(image, labels, metadata)


def crop_box(
    labels: Image,
    rng: np.random.Generator,
    *,
    fraction: Sequence[float],
    slab_mm: float | None = None,
    around: int | None = None,
) -> tuple[slice, slice, slice]:
    """A box (numpy order) around a random foreground voxel of ``labels``.

    Each axis keeps ``fraction`` of its extent (ITK order x, y, z, like spacing); with
    ``slab_mm`` the slice axis (numpy axis 0) keeps that thickness instead. The box lies inside
    the grid and contains the chosen voxel, so every crop shows some anatomy. With ``around`` (a
    label) the voxel is drawn from that label's voxels where it has any.
    """
    shape = np.asarray(labels.geometry.shape)
    extent = np.ceil(shape * np.asarray(fraction, dtype=float)[::-1]).astype(int)
    if slab_mm is not None:
        extent[0] = math.ceil(slab_mm / labels.geometry.spacing_zyx[0])
    extent = np.clip(extent, 1, shape)
    array = np.asarray(labels.array)
    foreground = np.flatnonzero(array == around) if around is not None else np.empty(0, dtype=np.intp)
    if not foreground.size:
        foreground = np.flatnonzero(array > 0)
    flat = int(rng.choice(foreground)) if foreground.size else int(rng.integers(int(shape.prod())))
    centre = np.asarray(np.unravel_index(flat, tuple(shape)))
    start = np.clip(centre - rng.integers(0, extent), 0, shape - extent)
    return tuple(slice(int(a), int(a + n)) for a, n in zip(start, extent))  # type: ignore[return-value]


def crop(image: Image, box: tuple[slice, slice, slice]) -> Image:
    """The part of ``image`` inside ``box`` (numpy order), at its place in the world."""
    start_xyz = np.array([s.start or 0 for s in box][::-1], dtype=float)
    origin = image.geometry.affine_lps @ np.append(start_xyz, 1.0)
    array = np.ascontiguousarray(image.array[box])
    return Image(array, Geometry(
        shape=tuple(int(n) for n in array.shape),  # type: ignore[arg-type]
        spacing=image.geometry.spacing,
        origin=tuple(float(o) for o in origin[:3]),  # type: ignore[arg-type]
        direction=image.geometry.direction,
    ))


def apply_gamma(image: Image, gamma: float) -> Image:
    """``peak * (image / peak) ** gamma`` with ``peak`` the 99.9th percentile: MR contrast bent, range kept."""
    if not (math.isfinite(gamma) and gamma > 0):
        raise InputError(f"gamma must be a positive number, got {gamma!r}")
    array = np.asarray(image.array, dtype=np.float32)
    peak = float(np.percentile(array, 99.9)) if array.size else 0.0
    if peak <= 0:
        return image
    scaled = np.clip(array / np.float32(peak), 0.0, None) ** np.float32(gamma)
    return image.with_array((scaled * np.float32(peak)).astype(np.float32))
