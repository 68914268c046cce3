"""The class catalogue: every label index and name the package knows, in one place.

Nothing else in the package hard-codes a label number; code asks this module instead.

Example:
    >>> from mrseg.classes import catalogue
    >>> catalogue("base").index_of("liver")
    5
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import get_close_matches

from mrseg.errors import InputError


@dataclass(frozen=True)
class SegmentClass:
    """One foreground class of a model: its label value and its snake_case name."""

    index: int
    name: str


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
        hints = get_close_matches(name, self.names, n=3)
        hint = f"; did you mean {', '.join(hints)}?" if hints else ""
        raise InputError(f"unknown class {name!r} for the {self.name!r} model{hint}")


def _make(name: str, names: list[str]) -> Catalogue:
    return Catalogue(name, tuple(SegmentClass(i + 1, n) for i, n in enumerate(names)))


BASE = _make(
    "base",
    [
        "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "pancreas",
        "right_adrenal_gland", "left_adrenal_gland", "left_lung", "right_lung", "heart", "aorta",
        "inferior_vena_cava", "portal_vein_and_splenic_vein", "left_iliac_artery",
        "right_iliac_artery", "left_iliac_vena", "right_iliac_vena", "esophagus", "small_bowel",
        "duodenum", "colon", "urinary_bladder", "spine", "sacrum", "left_hip", "right_hip",
        "left_femur", "right_femur", "left_autochthonous_muscle", "right_autochthonous_muscle",
        "left_iliopsoas_muscle", "right_iliopsoas_muscle", "left_gluteus_maximus",
        "right_gluteus_maximus", "left_gluteus_medius", "right_gluteus_medius",
        "left_gluteus_minimus", "right_gluteus_minimus",
    ],
)
"""The 40 classes of the MRSegmentator base model."""

BODY_COMP = _make(
    "body_comp",
    [
        "subcutaneous_fat", "visceral_fat", "left_rectus_abdominis", "right_rectus_abdominis",
        "left_oblique_muscle", "right_oblique_muscle", "left_quadratus_lumborum",
        "right_quadratus_lumborum", "abdominal_subcutaneous_fat", "gluteofemoral_fat",
    ],
)
"""The 10 classes of the MRI body-composition model."""

CATALOGUES: dict[str, Catalogue] = {BASE.name: BASE, BODY_COMP.name: BODY_COMP}


def catalogue(name: str) -> Catalogue:
    """Look up a catalogue by model name ('base' or 'body_comp')."""
    try:
        return CATALOGUES[name]
    except KeyError:
        raise InputError(f"unknown catalogue {name!r}; valid: {', '.join(CATALOGUES)}") from None
