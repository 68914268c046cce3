"""Label maps: how another label index (TotalSegmentator, AMOS22, CHAOS, yours) maps into the 40 classes.

A :class:`LabelMap` turns a label array from some source index into the 40-class index of
:data:`mrseg.classes.BASE`. The built-in maps are data, not code: the source label names are in
``evaluation/data/label_sources.json`` and the target of each name comes from one rule table
(:data:`NAME_RULES`) applied to those names, so no label number is hard-coded here.

Rules (in order, first match wins):

* ``vertebrae_S1`` → sacrum: TotalSegmentator v2 split S1 off the sacrum; TotalSegmentator v1,
  whose labels MRSegmentator was trained on, had no S1 class.
* ``vertebrae_C1`` … ``vertebrae_L5`` and ``vertebrae`` (total_mr) → spine.
* lung lobes (``lung_upper_lobe_left``, …) and ``lung_left``/``lung_right`` → left/right lung.
* ``autochthon_*`` → autochthonous muscle, ``iliopsoas_*`` → iliopsoas muscle,
  ``postcava`` (AMOS) → inferior vena cava, ``bladder`` (AMOS) → urinary bladder.
* ``<structure>_left``/``_right`` → ``left_<structure>``/``right_<structure>`` when that is a class.
* a name that is already a class name maps to itself.
* anything else (ribs, trachea, prostate, kidney cysts, …) is not one of the 40 classes and
  becomes background.

A map *defines* the 40-class labels that some source label maps to; metrics are computed only
for classes that both the prediction's and the reference's maps define (AMOS22 defines 14 of the
40, CHAOS 4), so a class a dataset never annotates is not scored as missed.

Example:
    >>> m = label_map("totalseg")
    >>> m.target_name(26)   # vertebrae_S1
    'sacrum'
    >>> len(label_map("amos22").defines)
    14
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mrseg.classes import BASE
from mrseg.errors import InputError

NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"vertebrae_S1", "sacrum"),
    (r"vertebrae(?:_[CTL]\d+)?", "spine"),
    (r"lung_(?:\w+_)?(left|right)", r"\1_lung"),
    (r"autochthon_(left|right)", r"\1_autochthonous_muscle"),
    (r"iliopsoas_(left|right)", r"\1_iliopsoas_muscle"),
    (r"postcava", "inferior_vena_cava"),
    (r"bladder", "urinary_bladder"),
    (r"(\w+)_(left|right)", r"\2_\1"),
)
"""(regular expression matched against the whole source name, target class name template)."""


def target_for_name(name: str) -> str | None:
    """The 40-class name a source class name maps to, or None when it is not one of the 40.

    Example:
        >>> target_for_name("kidney_left"), target_for_name("rib_left_3")
        ('left_kidney', None)
    """
    for pattern, template in NAME_RULES:
        match = re.fullmatch(pattern, name)
        if match:
            target = match.expand(template)
            if target in BASE.names:
                return target
    return name if name in BASE.names else None


@dataclass(frozen=True)
class LabelMap:
    """A mapping from a source label index into the 40-class index.

    Attributes:
        name: the map's name (``totalseg``, a JSON file's stem, ...).
        description: what the source index is.
        source_names: source label value → source class name.
        targets: source label value → 40-class label value (0: not one of the 40, background).
    """

    name: str
    description: str
    source_names: Mapping[int, str]
    targets: Mapping[int, int]

    def __post_init__(self) -> None:
        if set(self.source_names) != set(self.targets):
            raise InputError(f"label map {self.name!r}: source names and targets must cover the same labels")
        bad = sorted(k for k in self.targets if k <= 0)
        if bad:
            raise InputError(f"label map {self.name!r}: source labels must be >= 1 (0 is background), got {bad}")
        wrong = sorted({t for t in self.targets.values() if not 0 <= t <= BASE.num_classes})
        if wrong:
            raise InputError(f"label map {self.name!r}: targets must be 0..{BASE.num_classes}, got {wrong}")

    @property
    def defines(self) -> frozenset[int]:
        """The 40-class labels some source label maps to."""
        return frozenset(t for t in self.targets.values() if t > 0)

    def target_name(self, source_label: int) -> str | None:
        """The 40-class name of a source label, or None when it maps to background."""
        target = self.targets.get(int(source_label), 0)
        return BASE.name_of(target) if target else None

    def apply(self, labels: np.ndarray, *, source: str = "labels") -> np.ndarray:
        """Map a label array into the 40-class index (uint8, same shape).

        Args:
            labels: integer label array in this map's source index (integral floats accepted).
            source: the file or variable name, for error messages.

        Raises:
            InputError: non-integer or negative values, or values this map does not know
                (usually the wrong ``--ref-map``/``--pred-map``).
        """
        array = np.asarray(labels)
        if array.dtype.kind == "f":
            if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
                raise InputError(f"{source}: a label map must hold whole numbers, found fractional values")
            array = array.astype(np.int64)
        elif array.dtype.kind == "b":
            array = array.view(np.uint8)
        elif array.dtype.kind not in "iu":
            raise InputError(f"{source}: a label map must hold integers, got dtype {array.dtype}")
        if array.size == 0:
            return np.zeros(array.shape, np.uint8)
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise InputError(f"{source}: label values must be >= 0, found {low}")
        top = max(self.targets, default=0)
        if self._is_identity() and high <= top:
            return array.astype(np.uint8, copy=False)
        unknown = 255
        lut = np.full(max(high, top) + 1, unknown, dtype=np.uint8)
        lut[0] = 0
        for src, tgt in self.targets.items():
            lut[src] = tgt
        mapped = lut[array]
        if high > top or np.any(mapped == unknown):
            values = np.unique(array[mapped == unknown])
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
            raise InputError(
                f"{source}: label values {shown} are not in the {self.name!r} label map "
                f"({len(self.targets)} labels, 1..{top}); choose the map that matches this file "
                f"(built in: {', '.join(LABEL_MAP_NAMES)}) or give a JSON mapping"
            )
        return mapped

    def _is_identity(self) -> bool:
        return all(s == t for s, t in self.targets.items())


LABEL_MAP_NAMES: tuple[str, ...] = ("base", "totalseg", "totalseg_mr", "amos22", "chaos")
"""Names of the built-in label maps (``base`` is the 40-class index itself)."""


@lru_cache(maxsize=1)
def _sources() -> dict[str, Any]:
    source = resources.files("mrseg.evaluation").joinpath("data").joinpath("label_sources.json")
    text = source.read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _from_names(name: str, description: str, names: Mapping[int, str]) -> LabelMap:
    targets = {}
    for label, source_name in names.items():
        target = target_for_name(source_name)
        targets[label] = BASE.index_of(target) if target else 0
    return LabelMap(name, description, dict(names), targets)


@lru_cache(maxsize=None)
def label_map(name: str) -> LabelMap:
    """A built-in label map by name (one of :data:`LABEL_MAP_NAMES`).

    Raises:
        InputError: unknown name; the message lists the valid ones.
    """
    if name == "base":
        return LabelMap(
            "base",
            "the 40-class index of mrseg / MRSegmentator",
            {c.index: c.name for c in BASE.classes},
            {c.index: c.index for c in BASE.classes},
        )
    if name not in LABEL_MAP_NAMES:
        raise InputError(
            f"unknown label map {name!r}; built in: {', '.join(LABEL_MAP_NAMES)}, or give a path to a JSON mapping"
        )
    entry = _sources()[name]
    names = {int(k): str(v) for k, v in entry["labels"].items()}
    return _from_names(name, str(entry["description"]), names)


def load_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read a user label map from JSON.

    The file maps each source label value to a 40-class name, a 40-class label value, or
    ``null``/``0`` for labels that are not one of the 40 classes::

        {"name": "site_a", "labels": {"1": "liver", "2": "spleen", "3": null, "4": 14}}

    A flat object ``{"1": "liver", ...}`` works too.

    Raises:
        InputError: unreadable file, bad JSON, or unknown class names (with suggestions).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read the label map ({err.strerror or err}); check the path") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err}); see the label map format in the README") from err
    if not isinstance(data, dict):
        raise InputError(f"{path}: a label map must be a JSON object mapping label values to class names")
    entries = data.get("labels", data)
    if not isinstance(entries, dict) or not entries:
        raise InputError(f"{path}: 'labels' must be a non-empty object mapping label values to class names")
    names: dict[int, str] = {}
    targets: dict[int, int] = {}
    for key, value in entries.items():
        try:
            label = int(key)
        except ValueError:
            raise InputError(
                f"{path}: label {key!r} is not a whole number; keys must be label values like \"1\""
            ) from None
        if value is None or value == 0 or value == "background":
            names[label], targets[label] = f"label_{label}", 0
        elif isinstance(value, bool) or not isinstance(value, (int, str)):
            raise InputError(f"{path}: label {key}: expected a class name, a class number or null, got {value!r}")
        elif isinstance(value, int):
            if not 1 <= value <= BASE.num_classes:
                raise InputError(f"{path}: label {key}: class number {value} is outside 1..{BASE.num_classes}")
            names[label], targets[label] = BASE.name_of(value), value
        else:
            try:
                targets[label] = BASE.index_of(value)
            except InputError as err:
                raise InputError(f"{path}: label {key}: {err}") from None
            names[label] = value
    description = str(data.get("description", f"user label map from {path.name}")) if "labels" in data else (
        f"user label map from {path.name}"
    )
    name = str(data.get("name", path.stem)) if "labels" in data else path.stem
    return LabelMap(name, description, names, targets)


def resolve_label_map(spec: str | os.PathLike[str] | LabelMap) -> LabelMap:
    """A label map from a built-in name, a JSON file path, or a :class:`LabelMap` (returned as is)."""
    if isinstance(spec, LabelMap):
        return spec
    text = str(spec)
    if text in LABEL_MAP_NAMES:
        return label_map(text)
    if text.lower().endswith(".json") or Path(text).is_file():
        return load_label_map(text)
    return label_map(text)  # raises, listing the valid names
