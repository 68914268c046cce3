"""The phantom's tissue catalogue: every tissue label, its 40-class label and its physics.

A phantom is drawn as a *tissue map*: finer than the 40 classes (kidney cortex and medulla,
bone cortex and marrow, bowel wall, content and gas, fat, generic muscle, ...). Each tissue
maps to one 40-class label: sub-tissues of a class map to that class (kidney cortex → kidney),
tissues that are not one of the classes (fat, generic muscle, skin, air) map to 0.

Physical properties are typical literature values at 1.5 T (proton density relative to water,
T1 and T2 in ms, fat fraction) and CT attenuation in HU: native, portal-venous and arterial
(a CT angiography or late arterial phase: bright arteries and heart, unenhanced veins, renal
cortex brighter than medulla). They give realistic contrast, not quantitative accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.errors import InputError


@dataclass(frozen=True)
class Tissue:
    """One tissue of the phantom.

    Attributes:
        index: tissue label in the tissue map (0 is air outside the body).
        name: snake_case name.
        class_name: the 40-class name it belongs to, or None (label 0).
        pd: proton density relative to water (0..1).
        t1: longitudinal relaxation time of the water component, ms.
        t2: transverse relaxation time, ms.
        fat_fraction: fraction of the signal from fat protons (0..1).
        hu: CT attenuation without contrast, HU.
        hu_contrast: CT attenuation in the portal-venous phase, HU.
        hu_arterial: CT attenuation in the arterial phase (CT angiography), HU.
    """

    index: int
    name: str
    class_name: str | None
    pd: float
    t1: float
    t2: float
    fat_fraction: float
    hu: float
    hu_contrast: float
    hu_arterial: float

    @property
    def class_index(self) -> int:
        return 0 if self.class_name is None else BASE.index_of(self.class_name)


# name, class, PD, T1, T2, fat fraction, HU, HU with contrast
_ROWS: list[tuple[str, str | None, float, float, float, float, float, float]] = [
    ("air", None, 0.0, 1000, 1, 0.0, -1000, -1000),
    ("subcutaneous_fat", None, 0.9, 260, 80, 0.92, -105, -100),
    ("visceral_fat", None, 0.9, 260, 80, 0.90, -95, -90),
    ("muscle", None, 0.7, 870, 47, 0.03, 50, 60),
    ("skin", None, 0.7, 700, 40, 0.05, 40, 50),
    ("spleen", "spleen", 0.8, 1060, 60, 0.0, 50, 120),
    ("right_kidney_cortex", "right_kidney", 0.8, 970, 70, 0.0, 35, 180),
    ("right_kidney_medulla", "right_kidney", 0.85, 1400, 85, 0.0, 30, 120),
    ("left_kidney_cortex", "left_kidney", 0.8, 970, 70, 0.0, 35, 180),
    ("left_kidney_medulla", "left_kidney", 0.85, 1400, 85, 0.0, 30, 120),
    ("gallbladder", "gallbladder", 0.95, 2000, 400, 0.0, 10, 10),
    ("liver", "liver", 0.75, 580, 45, 0.04, 60, 110),
    ("stomach_wall", "stomach", 0.75, 900, 60, 0.0, 40, 90),
    ("stomach_content", "stomach", 0.95, 3000, 1000, 0.0, 10, 10),
    ("pancreas", "pancreas", 0.75, 725, 43, 0.06, 45, 100),
    ("right_adrenal_gland", "right_adrenal_gland", 0.75, 800, 55, 0.05, 30, 60),
    ("left_adrenal_gland", "left_adrenal_gland", 0.75, 800, 55, 0.05, 30, 60),
    ("left_lung", "left_lung", 0.1, 1200, 30, 0.0, -850, -840),
    ("right_lung", "right_lung", 0.1, 1200, 30, 0.0, -850, -840),
    ("heart", "heart", 0.85, 1200, 120, 0.0, 45, 170),
    ("aorta", "aorta", 0.85, 1440, 200, 0.0, 40, 180),
    ("inferior_vena_cava", "inferior_vena_cava", 0.85, 1440, 200, 0.0, 40, 170),
    ("portal_vein_and_splenic_vein", "portal_vein_and_splenic_vein", 0.85, 1440, 200, 0.0, 40, 180),
    ("left_iliac_artery", "left_iliac_artery", 0.85, 1440, 200, 0.0, 40, 180),
    ("right_iliac_artery", "right_iliac_artery", 0.85, 1440, 200, 0.0, 40, 180),
    ("left_iliac_vena", "left_iliac_vena", 0.85, 1440, 200, 0.0, 40, 160),
    ("right_iliac_vena", "right_iliac_vena", 0.85, 1440, 200, 0.0, 40, 160),
    ("esophagus", "esophagus", 0.75, 900, 50, 0.0, 40, 70),
    ("small_bowel_wall", "small_bowel", 0.75, 900, 60, 0.0, 40, 100),
    ("small_bowel_content", "small_bowel", 0.95, 2500, 600, 0.0, 15, 15),
    ("duodenum", "duodenum", 0.8, 900, 70, 0.0, 35, 90),
    ("colon_wall", "colon", 0.75, 900, 60, 0.0, 40, 90),
    ("colon_content", "colon", 0.7, 1000, 100, 0.1, 20, 20),
    ("bowel_gas", None, 0.0, 1000, 1, 0.0, -950, -950),
    ("urinary_bladder", "urinary_bladder", 1.0, 3000, 1500, 0.0, 8, 10),
    ("spine_cortex", "spine", 0.05, 1000, 1, 0.0, 900, 900),
    ("spine_marrow", "spine", 0.85, 450, 70, 0.45, 250, 260),
    ("sacrum_cortex", "sacrum", 0.05, 1000, 1, 0.0, 900, 900),
    ("sacrum_marrow", "sacrum", 0.85, 400, 75, 0.55, 220, 230),
    ("left_hip_cortex", "left_hip", 0.05, 1000, 1, 0.0, 900, 900),
    ("left_hip_marrow", "left_hip", 0.85, 380, 80, 0.6, 200, 210),
    ("right_hip_cortex", "right_hip", 0.05, 1000, 1, 0.0, 900, 900),
    ("right_hip_marrow", "right_hip", 0.85, 380, 80, 0.6, 200, 210),
    ("left_femur_cortex", "left_femur", 0.05, 1000, 1, 0.0, 1100, 1100),
    ("left_femur_marrow", "left_femur", 0.9, 300, 80, 0.8, 100, 110),
    ("right_femur_cortex", "right_femur", 0.05, 1000, 1, 0.0, 1100, 1100),
    ("right_femur_marrow", "right_femur", 0.9, 300, 80, 0.8, 100, 110),
    ("spinal_canal", None, 1.0, 3500, 1800, 0.0, 10, 10),
    ("left_autochthonous_muscle", "left_autochthonous_muscle", 0.7, 870, 45, 0.05, 50, 60),
    ("right_autochthonous_muscle", "right_autochthonous_muscle", 0.7, 870, 45, 0.05, 50, 60),
    ("left_iliopsoas_muscle", "left_iliopsoas_muscle", 0.7, 870, 45, 0.03, 50, 60),
    ("right_iliopsoas_muscle", "right_iliopsoas_muscle", 0.7, 870, 45, 0.03, 50, 60),
    ("left_gluteus_maximus", "left_gluteus_maximus", 0.7, 870, 45, 0.06, 50, 60),
    ("right_gluteus_maximus", "right_gluteus_maximus", 0.7, 870, 45, 0.06, 50, 60),
    ("left_gluteus_medius", "left_gluteus_medius", 0.7, 870, 45, 0.05, 50, 60),
    ("right_gluteus_medius", "right_gluteus_medius", 0.7, 870, 45, 0.05, 50, 60),
    ("left_gluteus_minimus", "left_gluteus_minimus", 0.7, 870, 45, 0.05, 50, 60),
    ("right_gluteus_minimus", "right_gluteus_minimus", 0.7, 870, 45, 0.05, 50, 60),
    # the mediastinum's unlabelled vessels and airways, and the vessels inside the lungs (part of
    # the lung classes, as in the reference label maps)
    ("pulmonary_artery", None, 0.85, 1440, 200, 0.0, 40, 150),
    ("pulmonary_vein", None, 0.85, 1440, 200, 0.0, 40, 160),
    ("superior_vena_cava", None, 0.85, 1440, 200, 0.0, 40, 150),
    ("supra_aortic_artery", None, 0.85, 1440, 200, 0.0, 40, 180),
    ("airway", None, 0.0, 1000, 1, 0.0, -950, -950),
    ("left_lung_vessels", "left_lung", 0.8, 1300, 120, 0.0, 40, 150),
    ("right_lung_vessels", "right_lung", 0.8, 1300, 120, 0.0, 40, 150),
    # the heart's wall around its blood pool ("heart", listed first: the bulk a plain class map gets);
    # appended, so every earlier tissue keeps its label
    ("heart_myocardium", "heart", 0.8, 1030, 50, 0.0, 45, 110),
    # thrombus lining a diseased aorta (part of the aorta class; it does not enhance)
    ("aortic_thrombus", "aorta", 0.8, 950, 60, 0.0, 50, 55),
    # the mesentery's unlabelled soft tissue in the visceral fat (small vessels, lymph nodes, collapsed
    # loops, fibrous strands), fat and water sharing its voxels: grey on fat and water images, dark on
    # opposed phase; see mesenteric_clutter
    ("mesentery", None, 0.85, 500, 65, 0.45, -30, -10),
    # the fat inside each renal fascia, around the kidney and above it up to the adrenal, crossed by
    # septa and vessels: greyer than the visceral fat on a fat image; see perirenal_fat
    ("perirenal_fat", None, 0.88, 330, 75, 0.7, -75, -70),
    # the rib cage and the sternum (not one of the classes): a thin cortex round fatty marrow, and the
    # costal cartilages that join the ribs to the sternum (bright on CT only where they calcify)
    ("rib_cortex", None, 0.05, 1000, 1, 0.0, 800, 800),
    ("rib_marrow", None, 0.85, 420, 75, 0.55, 220, 230),
    ("costal_cartilage", None, 0.7, 1050, 35, 0.0, 110, 115),
]

# Arterial phase (CT angiography, about 25 s after injection), HU; a tissue not listed keeps
# its native value (fat, air, bone, fluid, unenhanced veins below the heart).
_ARTERIAL_HU: dict[str, float] = {
    "muscle": 55, "skin": 45, "spleen": 130, "right_kidney_cortex": 210, "right_kidney_medulla": 70,
    "left_kidney_cortex": 210, "left_kidney_medulla": 70, "liver": 75, "stomach_wall": 100, "pancreas": 120,
    "right_adrenal_gland": 80, "left_adrenal_gland": 80, "heart": 350, "heart_myocardium": 120, "aorta": 350,
    "portal_vein_and_splenic_vein": 120, "left_iliac_artery": 340, "right_iliac_artery": 340,
    "esophagus": 60, "small_bowel_wall": 110, "duodenum": 100, "colon_wall": 90,
    "left_autochthonous_muscle": 55, "right_autochthonous_muscle": 55, "left_iliopsoas_muscle": 55,
    "right_iliopsoas_muscle": 55, "left_gluteus_maximus": 55, "right_gluteus_maximus": 55,
    "left_gluteus_medius": 55, "right_gluteus_medius": 55, "left_gluteus_minimus": 55,
    "right_gluteus_minimus": 55,
    # the right heart and the pulmonary arteries fill first; the SVC carries undiluted agent from an arm vein
    "pulmonary_artery": 360, "pulmonary_vein": 320, "superior_vena_cava": 500, "supra_aortic_artery": 340,
    "left_lung_vessels": 300, "right_lung_vessels": 300,
}

if _unknown := set(_ARTERIAL_HU) - {row[0] for row in _ROWS}:  # a misspelt name would keep native HU silently
    raise ValueError(f"_ARTERIAL_HU names no tissue of the catalogue: {sorted(_unknown)}")

# row[6] is the native HU, the arterial value of every tissue _ARTERIAL_HU leaves out
TISSUES: tuple[Tissue, ...] = tuple(Tissue(i, *row, _ARTERIAL_HU.get(row[0], row[6])) for i, row in enumerate(_ROWS))
"""All tissues, indexed by their tissue label."""

TISSUE_INDEX: dict[str, int] = {t.name: t.index for t in TISSUES}
"""Tissue name → tissue label."""

DEFAULT_TISSUE_OF_CLASS: dict[int, int] = {}
"""40-class label → the tissue used when synthesising an image from a plain 40-class map."""
for _t in TISSUES:
    if _t.class_name is not None and _t.class_index not in DEFAULT_TISSUE_OF_CLASS:
        # the first tissue listed for a class is its bulk tissue (cortex before medulla etc.),
        # except bones, whose bulk is marrow
        DEFAULT_TISSUE_OF_CLASS[_t.class_index] = _t.index
for _t in TISSUES:
    if _t.name.endswith("_marrow") and _t.class_name is not None:
        DEFAULT_TISSUE_OF_CLASS[_t.class_index] = _t.index


def tissue_to_class_lut() -> np.ndarray:
    """Lookup table ``lut[tissue] = 40-class label`` (uint8)."""
    return np.array([t.class_index for t in TISSUES], dtype=np.uint8)


def tissue_property(name: str) -> np.ndarray:
    """One property (``"pd"``, ``"t1"``, ``"hu"``, ...) of every tissue, indexed by tissue label."""
    return np.array([float(getattr(t, name)) for t in TISSUES], dtype=np.float64)


def to_classes(tissue_map: np.ndarray) -> np.ndarray:
    """The 40-class label map of a tissue map."""
    return tissue_to_class_lut()[tissue_map]


def without_classes(tissue_map: np.ndarray, class_names: Iterable[str], *, fill: str = "visceral_fat") -> np.ndarray:
    """The tissue map with every tissue of ``class_names`` replaced by ``fill``: organs removed.

    Postoperative anatomy (nephrectomy, splenectomy, cholecystectomy): the organ's place holds
    fat, and its label becomes 0. A model trained with such cases has to see an organ to label
    it, rather than label the place where the organ usually lies.
    """
    if fill not in TISSUE_INDEX:
        raise InputError(f"fill must be a tissue of the catalogue, got {fill!r}")
    removed = {BASE.index_of(name) for name in class_names}
    lut = np.arange(len(TISSUES), dtype=tissue_map.dtype)
    for tissue in TISSUES:
        if tissue.class_name is not None and tissue.class_index in removed:
            lut[tissue.index] = TISSUE_INDEX[fill]
    return lut[tissue_map]


def mesenteric_clutter(
    tissue_map: np.ndarray,
    spacing_zyx: tuple[float, float, float],
    *,
    fraction: float,
    seed: int,
    blob_mm: float = 5.0,
) -> np.ndarray:
    """The tissue map with ``fraction`` of its visceral fat turned into unlabelled soft tissue.

    Real visceral fat is not one bright, even tissue: vessels, lymph nodes, collapsed loops and
    strands fill it, darker than fat on a fat image and dark on opposed phase where fat and water
    share voxels. A phantom whose fat is even teaches a model that anything soft beside an organ
    is that organ. Here a random field smoothed by a Gaussian (standard deviation ``blob_mm``)
    picks blobs of the visceral fat: the ``fraction`` with the highest values becomes
    ``mesentery`` (fat and soft tissue mixed), and the highest third of those ``muscle`` (soft
    tissue, the blobs' cores). Both are label 0, so
    the 40-class labels do not change.

    Args:
        tissue_map: integer tissue labels (numpy order).
        spacing_zyx: voxel size in mm, numpy order.
        fraction: the share of the visceral fat to fill, 0..1.
        seed: seed of the random field.
        blob_mm: standard deviation of the field's smoothing, mm.

    Returns:
        A new tissue map (same dtype and shape).

    Raises:
        InputError: ``fraction`` outside [0, 1] or ``blob_mm`` not positive.
    """
    if not (0 <= fraction <= 1):
        raise InputError(f"fraction is the share of the visceral fat to fill, in [0, 1], got {fraction!r}")
    if not blob_mm > 0:
        raise InputError(f"blob_mm must be a positive size in mm, got {blob_mm!r}")
    fat = tissue_map == TISSUE_INDEX["visceral_fat"]
    out = tissue_map.copy()
    if fraction == 0 or not fat.any():
        return out
    rng = np.random.default_rng(seed)
    sigma = [blob_mm / s for s in spacing_zyx]
    field = ndimage.gaussian_filter(rng.standard_normal(tissue_map.shape, dtype=np.float32), sigma)
    mixed, core = np.quantile(field[fat], [1 - fraction, 1 - fraction / 3])
    out[fat & (field >= mixed)] = TISSUE_INDEX["mesentery"]
    out[fat & (field >= core)] = TISSUE_INDEX["muscle"]
    return out


ECTASIA_CLAIMS = ("visceral_fat", "mesentery", "left_lung", "right_lung", "left_lung_vessels", "right_lung_vessels")
"""What a widened aorta pushes aside (:func:`aortic_ectasia`): fat and lung, never an organ, bone,
muscle or another vessel."""


def aortic_ectasia(tissue_map: np.ndarray, spacing_zyx: Sequence[float], *, widen_mm: float) -> np.ndarray:
    """The tissue map with the aorta widened by ``widen_mm`` all round, along its whole length.

    In older subjects the aorta is often wide along its whole course (ectasia: 25–40 mm across in
    the thorax, where the phantom draws 18–23 mm), with or without thrombus; a model that only
    saw slim aortas draws a wide one at the width it knows. Each voxel within ``widen_mm`` of the
    aorta that holds one of :data:`ECTASIA_CLAIMS` takes the tissue of the aorta's nearest voxel
    (open lumen, or thrombus where it lines the wall), so the aorta class grows and the lungs and
    fat around it shrink; labels follow the tissues as everywhere.

    Args:
        tissue_map: integer tissue labels (numpy order).
        spacing_zyx: voxel size in mm, numpy order.
        widen_mm: how far the aorta's wall moves out, mm (>= 0).

    Returns:
        A new tissue map (same dtype and shape).

    Raises:
        InputError: a negative ``widen_mm``.
    """
    if not widen_mm >= 0:
        raise InputError(f"widen_mm is a size in mm and must be >= 0, got {widen_mm!r}")
    aorta = np.isin(tissue_map, [t.index for t in TISSUES if t.class_name == "aorta"])  # lumen and thrombus
    out = tissue_map.copy()
    if widen_mm == 0 or not aorta.any():
        return out
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    box = _box_around(aorta, widen_mm, spacing)
    distance, nearest = ndimage.distance_transform_edt(~aorta[box], sampling=spacing, return_indices=True)
    claimable = np.isin(tissue_map[box], [TISSUE_INDEX[name] for name in ECTASIA_CLAIMS])
    grow = claimable & (distance <= widen_mm)
    region = out[box]
    region[grow] = tissue_map[box][tuple(index[grow] for index in nearest)]
    return out


def perirenal_fat(
    tissue_map: np.ndarray,
    spacing_zyx: Sequence[float],
    superior_zyx: Sequence[float],
    *,
    margin_mm: float,
    rise_mm: float,
) -> np.ndarray:
    """The tissue map with the visceral fat of each kidney's perirenal space made ``perirenal_fat``.

    The renal fascia wraps each kidney in its own fat, which reaches above the upper pole to the
    adrenal. On many scans that fat looks unlike the rest (greyer on a fat image, crossed by
    septa), and a model that never saw it labels the whole grey compartment as kidney, tall above
    the real upper pole. Here the space is each kidney swept ``rise_mm`` towards the head, grown
    by ``margin_mm``; only its visceral fat changes (organs, the adrenal among them, stay), and
    the tissue is label 0, so the 40-class labels do not change.

    Args:
        tissue_map: integer tissue labels (numpy order).
        spacing_zyx: voxel size in mm, numpy order.
        superior_zyx: the patient's head direction in the array's axes, numpy order (a unit
            vector; for a geometry ``g``, ``g.direction_matrix[2, ::-1]``).
        margin_mm: how far the space reaches around the kidney, mm (>= 0).
        rise_mm: how far it reaches above the kidney, mm (>= 0).

    Returns:
        A new tissue map (same dtype and shape).

    Raises:
        InputError: a negative size, or ``superior_zyx`` not a unit vector.
    """
    if not (margin_mm >= 0 and rise_mm >= 0):
        raise InputError(f"margin_mm and rise_mm are sizes in mm and must be >= 0, got {margin_mm!r}, {rise_mm!r}")
    up = np.asarray(superior_zyx, dtype=np.float64)
    if up.shape != (3,) or not np.isclose(np.linalg.norm(up), 1.0, atol=1e-3):
        raise InputError(f"superior_zyx must be a unit vector (z, y, x), got {tuple(superior_zyx)!r}")
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    out = tissue_map.copy()
    fat = TISSUE_INDEX["visceral_fat"]
    for side in ("left_kidney", "right_kidney"):
        kidney = np.isin(tissue_map, [t.index for t in TISSUES if t.class_name == side])
        if not kidney.any():
            continue
        box = _box_around(kidney, margin_mm + rise_mm, spacing)
        swept = np.zeros(kidney[box].shape, dtype=bool)
        steps = int(np.ceil(rise_mm / spacing.min())) + 1
        # steps finer than the coarser axes round to the same voxel offset: shift by each once
        offsets = {tuple(np.rint(t * up / spacing).astype(int)) for t in np.linspace(0.0, rise_mm, steps)}
        for offset in offsets:
            swept |= _shifted(kidney[box], np.array(offset))
        space = ndimage.distance_transform_edt(~swept, sampling=spacing) <= margin_mm
        region = out[box]
        region[space & (region == fat)] = TISSUE_INDEX["perirenal_fat"]
    return out


BODY_WALL_TISSUES = ("muscle", "rib_cortex", "rib_marrow", "costal_cartilage")
"""The body wall's unlabelled tissues next to the organs: its muscle and, in the chest wall, the
ribs and their cartilages."""
EXTRAPERITONEAL_CLASSES = ("liver", "spleen", "gallbladder", "stomach", "colon")
"""The organs :func:`extraperitoneal_fat` keeps off the body wall: those that lie against it."""


def extraperitoneal_fat(tissue_map: np.ndarray, spacing_zyx: Sequence[float], *, margin_mm: float) -> np.ndarray:
    """The tissue map with the organs that lie against the body wall kept ``margin_mm`` off it.

    Between the muscle of the abdominal wall (and the diaphragm) and the organs inside lies a
    layer of extraperitoneal fat, thin in a lean subject and a centimetre or more in an obese
    one; on a T1-weighted or Dixon scan it is a bright band round the liver and spleen. The
    generated subject's organs fill the cavity up to the muscle. (Tried as a cure for the demo
    model's over-drawn real-MR liver, it did not cure it: see "Extraperitoneal fat" in
    docs/demo_model_experiments.md.) Here every voxel of the organs of
    :data:`EXTRAPERITONEAL_CLASSES` (and the bowel gas among them) that lies within ``margin_mm``
    of the wall (:data:`BODY_WALL_TISSUES`) becomes visceral fat; their labels shrink with them.

    Args:
        tissue_map: integer tissue labels (numpy order).
        spacing_zyx: voxel size in mm, numpy order.
        margin_mm: the layer's thickness, mm (>= 0; 0 changes nothing).

    Returns:
        A new tissue map (same dtype and shape).

    Raises:
        InputError: a negative or non-finite thickness.
    """
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise InputError(f"margin_mm is a thickness in mm and must be >= 0, got {margin_mm!r}")
    out = tissue_map.copy()
    organs = np.isin(tissue_map, [t.index for t in TISSUES if t.class_name in EXTRAPERITONEAL_CLASSES])
    if margin_mm == 0 or not organs.any():
        return out
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    box = _box_around(organs, margin_mm, spacing)
    region = out[box]
    wall = np.isin(region, [TISSUE_INDEX[name] for name in BODY_WALL_TISSUES])
    if not wall.any():
        return out
    # the gas inside the stomach and colon goes with them (the small bowel's stays)
    gas = (region == TISSUE_INDEX["bowel_gas"]) & ndimage.binary_dilation(organs[box], iterations=2)
    near_wall = ndimage.distance_transform_edt(~wall, sampling=spacing) <= margin_mm
    region[near_wall & (organs[box] | gas)] = TISSUE_INDEX["visceral_fat"]
    return out


DEFORMATION_WAVELENGTH_MM = 80.0
"""Spacing of the control points of :func:`smoothly_deformed`'s random field: structures this
far apart move on their own; nearer ones move together."""


def smoothly_deformed(tissue_map: np.ndarray, spacing_zyx: Sequence[float], *, displacement_mm: float,
                      seed: int, wavelength_mm: float = DEFORMATION_WAVELENGTH_MM) -> np.ndarray:
    """The tissue map under a smooth random deformation (as SynthSeg deforms its label maps).

    The phantom draws its organs at nearly the same places relative to each other in every
    subject, so a network trained on it labels by place: an organ where it usually lies. A random
    displacement field, drawn on control points ``wavelength_mm`` apart (each component normal
    with SD ``displacement_mm``) and interpolated cubically between them, moves the structures
    against each other by up to a few times ``displacement_mm``; each voxel takes the tissue found
    at its displaced point (nearest neighbour: tissues stay tissues, labels follow them).

    Args:
        tissue_map: integer tissue labels (numpy order).
        spacing_zyx: voxel size in mm, numpy order.
        displacement_mm: SD of each component of the displacement at the control points, mm
            (>= 0; at most a quarter of ``wavelength_mm``, so that the map never folds over).
        seed: the field follows from it.
        wavelength_mm: spacing of the control points, mm (> 0).

    Returns:
        A new tissue map (same dtype and shape).

    Raises:
        InputError: a negative ``displacement_mm``, or one larger than a quarter of ``wavelength_mm``.
    """
    if not (wavelength_mm > 0 and 0 <= displacement_mm <= wavelength_mm / 4):
        raise InputError(f"displacement_mm is an SD in mm between 0 and a quarter of the wavelength "
                         f"({wavelength_mm / 4:g} mm), got {displacement_mm!r}")
    if displacement_mm == 0:
        return tissue_map.copy()
    shape = np.array(tissue_map.shape)
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    controls = np.maximum(2, np.ceil(shape * spacing / wavelength_mm).astype(int) + 1)
    rng = np.random.default_rng([seed, 0xDEF0])
    # cubic-spline interpolation from the control points (spanning the map from its first to its
    # last voxel) to every voxel, one axis at a time: weights[a] is (voxels, controls) along axis a
    weights = [_spline_weights(int(c), int(n)) for c, n in zip(controls, shape)]
    points = []
    for axis in range(3):
        coarse = rng.normal(0.0, displacement_mm / spacing[axis], tuple(controls))  # voxels along the axis
        field = np.einsum("ia,jb,kc,abc->ijk", *weights, coarse, optimize=True).astype(np.float32)
        field += np.arange(shape[axis], dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        points.append(field)
    return ndimage.map_coordinates(tissue_map, points, order=0, mode="nearest").astype(tissue_map.dtype)


def _spline_weights(controls: int, voxels: int) -> np.ndarray:
    """(voxels, controls) weights of cubic-spline interpolation from ``controls`` evenly spaced
    values to ``voxels`` evenly spaced points over the same span."""
    where = np.linspace(0, controls - 1, voxels)
    return np.stack([ndimage.map_coordinates(np.eye(controls)[j], [where], order=3, mode="nearest")
                     for j in range(controls)], axis=1)


def _box_around(mask: np.ndarray, reach_mm: float, spacing: np.ndarray) -> tuple[slice, ...]:
    """The box of ``mask``'s voxels grown by ``reach_mm`` (and a voxel) on every side, clipped at the
    array's start, so that work near a structure costs no more on a large map than on a small one."""
    reach = np.ceil(reach_mm / spacing).astype(int) + 1
    return tuple(slice(max(int(i.min()) - r, 0), int(i.max()) + r + 1) for i, r in zip(np.nonzero(mask), reach))


def _shifted(mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``mask`` moved by ``offset`` voxels (numpy order), what leaves the array dropped."""
    out = np.zeros_like(mask)
    source = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, mask.shape))
    target = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, mask.shape))
    out[target] = mask[source]
    return out
