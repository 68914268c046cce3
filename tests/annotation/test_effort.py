"""The effort of a correction, against a hand-made correction whose numbers are known."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.annotation.effort import measure_effort
from mrseg.io import Geometry, Image

GRID = Geometry((10, 12, 14), (1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
CLASSES = {"spleen": 1, "liver": 5, "aorta": 13}


def test_the_effort_of_a_hand_made_correction():
    draft = np.zeros(GRID.shape, np.uint8)
    draft[2:6, 2:6, 2:6] = 5          # liver, 64 voxels
    draft[8, 8, 8] = 13               # a stray aorta voxel the annotator removes
    corrected = draft.copy()
    corrected[2:6, 2:6, 6] = 5        # the liver grows by one x-slice: 16 voxels
    corrected[8, 8, 8] = 0
    corrected[0:2, 0:2, 0:2] = 1      # a spleen the model missed: 8 voxels
    effort = measure_effort(Image(draft, GRID), Image(corrected, GRID), CLASSES)
    assert effort["voxels_changed"] == 16 + 1 + 8
    assert effort["fraction_changed"] == pytest.approx(25 / (10 * 12 * 14))
    assert effort["dice"]["liver"] == pytest.approx(2 * 64 / (64 + 80))
    assert effort["dice"]["spleen"] == 0.0 and effort["dice"]["aorta"] == 0.0
    assert effort["hd95"]["liver"] == pytest.approx(1.0)  # one slice along x (the last numpy axis), 1 mm apart
    assert effort["classes_added"] == ["spleen"] and effort["classes_removed"] == ["aorta"]
    assert effort["dice_mean"] == pytest.approx((2 * 64 / 144) / 3)


def test_an_untouched_draft_costs_nothing():
    draft = np.zeros(GRID.shape, np.uint8)
    draft[2:6, 2:6, 2:6] = 5
    effort = measure_effort(Image(draft, GRID), Image(draft.copy(), GRID), CLASSES)
    assert (effort["voxels_changed"], effort["dice"], effort["dice_mean"]) == (0, {"liver": 1.0}, 1.0)
    assert effort["hd95"] == {"liver": 0.0} and effort["classes_added"] == effort["classes_removed"] == []
