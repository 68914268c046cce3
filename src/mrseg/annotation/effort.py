"""What an annotator changed between the draft and the correction: the effort of one case.

Voxels changed, and per class the Dice and HD95 between draft and correction
(:func:`mrseg.evaluation.metrics.compare_labels`, in mm), with the classes the annotator added
(absent from the draft) or removed (absent from the correction). The mean Dice over the classes
present in either is the draft's quality the learning curve follows.

Example:
    >>> import numpy as np
    >>> from mrseg.io import Geometry, Image
    >>> grid = Geometry((4, 4, 4), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    >>> draft = np.zeros((4, 4, 4), np.uint8); draft[1:3, 1:3, 1:3] = 5
    >>> corrected = draft.copy(); corrected[1, 1, 1] = 0; corrected[0, 0, 0] = 1
    >>> effort = measure_effort(Image(draft, grid), Image(corrected, grid), {"spleen": 1, "liver": 5})
    >>> effort["voxels_changed"], effort["classes_added"], round(effort["dice"]["liver"], 3)
    (2, ['spleen'], 0.933)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mrseg.evaluation.metrics import compare_labels
from mrseg.io.image import Image


def measure_effort(draft: Image, corrected: Image, classes: Mapping[str, int]) -> dict[str, Any]:
    """The effort of one correction (see the module docstring); JSON-ready.

    Args:
        draft: the draft label map.
        corrected: the correction, on the same grid.
        classes: class name → label value.
    """
    before, after = draft.array, corrected.array
    changed = int(np.count_nonzero(before != after))
    present_before = set(np.unique(before).tolist()) - {0}
    present_after = set(np.unique(after).tolist()) - {0}
    names = {value: name for name, value in classes.items()}
    evaluated = sorted((present_before | present_after) & set(names))
    metrics = compare_labels(before, after, labels=evaluated, spacing=draft.geometry.spacing_zyx) if evaluated else {}
    dice = {names[v]: m.dice for v, m in metrics.items() if m.dice is not None}
    hd95 = {names[v]: m.hd95 for v, m in metrics.items() if m.hd95 is not None}
    return {
        "voxels_changed": changed,
        "fraction_changed": changed / before.size,
        "dice": dice,
        "hd95": hd95,
        "dice_mean": float(np.mean(list(dice.values()))) if dice else None,
        "classes_added": sorted(names[v] for v in present_after - present_before if v in names),
        "classes_removed": sorted(names[v] for v in present_before - present_after if v in names),
    }


__all__ = ["measure_effort"]
