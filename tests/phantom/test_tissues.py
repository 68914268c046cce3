"""The tissue catalogue: organs removed from a tissue map."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.phantom.tissues import TISSUE_INDEX, to_classes, without_classes


def test_removing_a_class_removes_all_its_tissues_and_nothing_else():
    names = ["liver", "left_kidney_cortex", "left_kidney_medulla", "right_kidney_cortex", "muscle"]
    tissue_map = np.array([TISSUE_INDEX[n] for n in names], dtype=np.uint8)
    removed = without_classes(tissue_map, ["left_kidney"])
    assert removed.dtype == tissue_map.dtype
    assert [int(t) for t in removed] == [TISSUE_INDEX["liver"], TISSUE_INDEX["visceral_fat"],
                                         TISSUE_INDEX["visceral_fat"], TISSUE_INDEX["right_kidney_cortex"],
                                         TISSUE_INDEX["muscle"]]
    assert BASE.index_of("left_kidney") not in to_classes(removed)
    np.testing.assert_array_equal(without_classes(tissue_map, []), tissue_map)


def test_unknown_classes_and_fills_are_refused():
    tissue_map = np.zeros(3, np.uint8)
    with pytest.raises(InputError, match="unknown class 'kidney'"):
        without_classes(tissue_map, ["kidney"])
    with pytest.raises(InputError, match="fill must be a tissue"):
        without_classes(tissue_map, ["liver"], fill="concrete")
