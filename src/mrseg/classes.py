"""The class catalogue: every label index and name the package knows, in one place.

Nothing else in the package hard-codes a label number; code asks this module instead.

Example:
    >>> from mrseg.classes import catalogue, resolve_classes
    >>> catalogue("base").index_of("liver")
    5
    >>> resolve_classes(["liver", "1"], catalogue("base").foreground)
    {'spleen': 1, 'liver': 5}
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Iterable, Mapping, Sequence

from mrseg.errors import InputError


@dataclass(frozen=True)
class Coding:
    """A structure's SNOMED CT coding for DICOM-SEG."""

    code: str
    meaning: str
    """The segmented property type (code value, code meaning)."""
    category: str = "anatomical_structure"
    """``anatomical_structure`` (SCT 91723000) or ``tissue`` (SCT 85756007)."""
    regions: tuple[tuple[str, str], ...] = ()
    """(code value, meaning) of the anatomic regions that place a tissue type (the fat of the
    abdominopelvic cavity, the subcutaneous fat of the buttock and thigh)."""


@dataclass(frozen=True)
class SegmentClass:
    """One foreground class of a model: its label value, snake_case name and display colour (RGB)."""

    index: int
    name: str
    color: tuple[int, int, int] = (128, 128, 128)
    coding: Coding | None = None
    """The structure's SNOMED CT coding for DICOM-SEG (laterality apart: it comes from the name)."""

    @property
    def laterality(self) -> str | None:
        """``left`` or ``right`` for paired structures (the name's prefix), else None."""
        side = self.name.split("_", 1)[0]
        return side if side in ("left", "right") else None


@dataclass(frozen=True)
class Catalogue:
    """The ordered foreground classes of one model (background 0 is implied)."""

    name: str
    classes: tuple[SegmentClass, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def num_classes(self) -> int:
        """Number of foreground classes (background excluded)."""
        return len(self.classes)

    @property
    def foreground(self) -> dict[str, int]:
        """Class name → label value in label order, as a model's dataset.json lists its foreground."""
        return {c.name: c.index for c in self.classes}

    def name_of(self, index: int) -> str:
        for c in self.classes:
            if c.index == index:
                return c.name
        raise KeyError(f"label {index} is not in the {self.name!r} catalogue (1..{self.num_classes})")

    def index_of(self, name: str) -> int:
        """Label value of a class name; unknown names raise with close suggestions."""
        for c in self.classes:
            if c.name == name:
                return c.index
        raise InputError(f"unknown class {name!r} for the {self.name!r} model{_did_you_mean(name, self.names)}")


def _make(name: str, entries: list[tuple[str, tuple[int, int, int]]],
          codes: Mapping[str, Coding] | None = None) -> Catalogue:
    """``codes``: structure (the name without left_/right_) → its SNOMED coding."""
    classes = []
    for i, (class_name, colour) in enumerate(entries):
        structure = class_name.split("_", 1)[1] if class_name.startswith(("left_", "right_")) else class_name
        classes.append(SegmentClass(i + 1, class_name, colour, (codes or {}).get(structure)))
    return Catalogue(name, tuple(classes))


# SNOMED CT codes as the DICOM segmentation harmonisation for TotalSegmentator-style classes uses
# them (the structure concept; left/right go into a laterality modifier, not into the code).
_TISSUE = "tissue"
BASE_CODES = {
    "spleen": Coding("78961009", "Spleen"), "kidney": Coding("64033007", "Kidney"),
    "gallbladder": Coding("28231008", "Gallbladder"), "liver": Coding("10200004", "Liver"),
    "stomach": Coding("69695003", "Stomach"), "pancreas": Coding("15776009", "Pancreas"),
    "adrenal_gland": Coding("23451007", "Adrenal gland"), "lung": Coding("39607008", "Lung"),
    "heart": Coding("80891009", "Heart"), "aorta": Coding("15825003", "Aorta"),
    "inferior_vena_cava": Coding("64131007", "Inferior vena cava"),
    "portal_vein_and_splenic_vein": Coding("110765007", "Portal vein and splenic vein"),
    "iliac_artery": Coding("73634005", "Common iliac artery"),
    "iliac_vena": Coding("46027005", "Common iliac vein"),
    "esophagus": Coding("32849002", "Esophagus"), "small_bowel": Coding("30315005", "Small intestine"),
    "duodenum": Coding("38848004", "Duodenum"), "colon": Coding("71854001", "Colon"),
    "urinary_bladder": Coding("89837001", "Urinary bladder"), "spine": Coding("421060004", "Spine"),
    "sacrum": Coding("54735007", "Sacrum"), "hip": Coding("29836001", "Hip"),
    "femur": Coding("71341001", "Femur"),
    "autochthonous_muscle": Coding("244849004", "Deep muscle of back"),
    "iliopsoas_muscle": Coding("68455001", "Iliopsoas muscle"),
    "gluteus_maximus": Coding("206007", "Gluteus maximus muscle"),
    "gluteus_medius": Coding("78333006", "Gluteus medius muscle"),
    "gluteus_minimus": Coding("75297007", "Gluteus minimus muscle"),
}

# Body composition. Fat types: Subcutaneous fatty tissue 67769002 (TotalSegmentator's and MOOSE's
# DICOM-SEG tables) and Fat 55603005 (DICOM CID 7151/7166), placed by DICOM anatomic regions:
# Abdominopelvic cavity 818987002 and Abdomen 818981001 (CID 7154), Buttock 46862004 and Thigh
# 68367000 (CID 4). Muscles: no SNOMED concept for the rectus abdominis, the abdominal obliques or
# the quadratus lumborum could be checked here (none is in DICOM's tables or the peer tools'), so
# they are DICOM's Abdominal wall muscle 1142228004 (CID 7154) with laterality, told apart by the
# part of the wall they make up, as TotalSegmentator's table tells vertebrae apart by spine region:
# Anterior abdominal wall 59380008 (SNOMED CT, as the eHDSI body-site value set lists it), Flank
# 58602004 and Lumbar region 52612000 (CID 4).
_ABDOMINAL_WALL_MUSCLE = ("1142228004", "Abdominal wall muscle")
BODY_COMP_CODES = {
    "subcutaneous_fat": Coding("67769002", "Subcutaneous fatty tissue", _TISSUE),
    "visceral_fat": Coding("55603005", "Fat", _TISSUE, (("818987002", "Abdominopelvic cavity"),)),
    "rectus_abdominis": Coding(*_ABDOMINAL_WALL_MUSCLE, regions=(("59380008", "Anterior abdominal wall structure"),)),
    "oblique_muscle": Coding(*_ABDOMINAL_WALL_MUSCLE, regions=(("58602004", "Flank"),)),
    "quadratus_lumborum": Coding(*_ABDOMINAL_WALL_MUSCLE, regions=(("52612000", "Lumbar region"),)),
    "abdominal_subcutaneous_fat": Coding("67769002", "Subcutaneous fatty tissue", _TISSUE,
                                         (("818981001", "Abdomen"),)),
    "gluteofemoral_fat": Coding("67769002", "Subcutaneous fatty tissue", _TISSUE,
                                (("46862004", "Buttock"), ("68367000", "Thigh"))),
}


# Display colours: one hue family per structure group (vessels red/blue, bones ivory, lungs pale
# blue); left/right pairs share a hue, the left one lighter, so a swap is visible in a preview.
BASE = _make(
    "base",
    [
        ("spleen", (157, 108, 162)), ("right_kidney", (185, 102, 83)), ("left_kidney", (222, 142, 118)),
        ("gallbladder", (139, 150, 98)), ("liver", (160, 60, 45)), ("stomach", (255, 206, 120)),
        ("pancreas", (235, 150, 60)), ("right_adrenal_gland", (200, 200, 60)), ("left_adrenal_gland", (232, 232, 112)),
        ("left_lung", (170, 210, 240)), ("right_lung", (120, 170, 220)), ("heart", (206, 60, 60)),
        ("aorta", (255, 0, 0)), ("inferior_vena_cava", (0, 80, 220)), ("portal_vein_and_splenic_vein", (0, 151, 206)),
        ("left_iliac_artery", (255, 90, 90)), ("right_iliac_artery", (200, 30, 60)),
        ("left_iliac_vena", (90, 130, 255)), ("right_iliac_vena", (40, 60, 200)), ("esophagus", (211, 171, 143)),
        ("small_bowel", (255, 180, 200)), ("duodenum", (255, 140, 165)), ("colon", (205, 135, 160)),
        ("urinary_bladder", (130, 220, 200)), ("spine", (241, 214, 145)), ("sacrum", (230, 220, 180)),
        ("left_hip", (255, 240, 200)), ("right_hip", (220, 200, 150)), ("left_femur", (250, 250, 225)),
        ("right_femur", (210, 210, 170)), ("left_autochthonous_muscle", (190, 80, 120)),
        ("right_autochthonous_muscle", (150, 50, 95)), ("left_iliopsoas_muscle", (110, 190, 90)),
        ("right_iliopsoas_muscle", (60, 140, 60)), ("left_gluteus_maximus", (190, 120, 220)),
        ("right_gluteus_maximus", (140, 80, 180)), ("left_gluteus_medius", (240, 160, 220)),
        ("right_gluteus_medius", (200, 110, 180)), ("left_gluteus_minimus", (160, 230, 160)),
        ("right_gluteus_minimus", (100, 180, 140)),
    ],
    BASE_CODES,
)
"""The 40 classes of the MRSegmentator base model."""

BODY_COMP = _make(
    "body_comp",
    [
        ("subcutaneous_fat", (255, 230, 100)), ("visceral_fat", (255, 170, 60)),
        ("left_rectus_abdominis", (200, 70, 70)), ("right_rectus_abdominis", (160, 40, 40)),
        ("left_oblique_muscle", (220, 110, 90)), ("right_oblique_muscle", (180, 80, 60)),
        ("left_quadratus_lumborum", (230, 130, 160)), ("right_quadratus_lumborum", (190, 90, 130)),
        ("abdominal_subcutaneous_fat", (250, 210, 140)), ("gluteofemoral_fat", (200, 220, 120)),
    ],
    BODY_COMP_CODES,
)
"""The 10 classes of the MRI body-composition model."""

CATALOGUES: dict[str, Catalogue] = {BASE.name: BASE, BODY_COMP.name: BODY_COMP}


def find_class(name: str) -> SegmentClass | None:
    """The catalogue entry (colour, SNOMED code) of a class name in any catalogue, or None.

    The side may also come last, as TotalSegmentator names classes (``kidney_left`` finds
    ``left_kidney``), so a model folder whose dataset.json names its labels that way still gets
    the catalogue's codes and colours.
    """
    structure, _, side = name.rpartition("_")
    candidates = (name, f"{side}_{structure}") if side in ("left", "right") and structure else (name,)
    for candidate in candidates:
        for cat in CATALOGUES.values():
            for entry in cat.classes:
                if entry.name == candidate:
                    return entry
    return None


def class_colors(names: Mapping[int, str]) -> dict[int, tuple[int, int, int]]:
    """Display colours for label value → class name: the catalogue's colour where a catalogue
    knows the name, otherwise a distinct colour from a golden-ratio walk around the hue circle."""
    colours = {}
    for value, name in names.items():
        entry = find_class(name)
        if entry is not None:
            colours[value] = entry.color
        else:
            red, green, blue = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.55, 0.95)
            colours[value] = (round(red * 255), round(green * 255), round(blue * 255))
    return colours


def catalogue(name: str) -> Catalogue:
    """Look up a catalogue by model name ('base' or 'body_comp')."""
    try:
        return CATALOGUES[name]
    except KeyError:
        raise InputError(f"unknown catalogue {name!r}; valid: {', '.join(CATALOGUES)}") from None


def _did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean a, b?"`` with up to three of ``names`` close to ``name``, or ``""``."""
    hints = get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def resolve_classes(
    requested: Sequence[str], foreground: Mapping[str, int], *, option: str = "--classes"
) -> dict[str, int]:
    """Class names or label numbers → ``{name: value}`` in the model's label order.

    The one place a user's choice of classes is read, for ``mrseg segment --classes`` and
    ``mrseg evaluate --classes`` alike. Repeats are dropped; background (0) is not a
    class to choose.

    Args:
        requested: names (``liver``) or label values (``5``) of the model's classes.
        foreground: the model's classes, name → label value (a dataset.json's labels without
            background, or :attr:`Catalogue.foreground`).
        option: the command-line option or argument the names came from, named in the error.

    Returns:
        The chosen classes, name → label value, ordered by label value.

    Raises:
        InputError: a name or number the model does not have; the message names ``option`` and
            the closest names, or all the model's classes when none is close.

    Example:
        >>> resolve_classes(["liver", "1", "liver"], {"spleen": 1, "liver": 5})
        {'spleen': 1, 'liver': 5}
    """
    by_value = {value: name for name, value in foreground.items()}
    chosen: set[str] = set()
    for item in requested:
        if item in foreground:
            chosen.add(item)
        elif item.isdecimal() and int(item) in by_value:  # isdigit() passes '²', which int() refuses
            chosen.add(by_value[int(item)])
        else:
            hint = _did_you_mean(item, foreground) or f"; the model's classes: {', '.join(foreground)}"
            raise InputError(f"unknown class {item!r} in {option}{hint}")
    return {name: value for name, value in sorted(foreground.items(), key=lambda kv: kv[1]) if name in chosen}

