"""How sure the network is of each class: the mean softmax probability of the winning class over
the voxels each class wins, on the network's grid.

Quality control uses it to point a reviewer at organs the network hesitated over (``uncertain``
in :mod:`mrseg.cohort.qc`). It reads the fold-averaged logits slab by slab as the sliding window
yields them, a chunk of about a million voxels at a time in float32, so it adds no full-volume
array; the labels do not depend on it.

Example:
    >>> import torch
    >>> confidence = ClassConfidence(3)
    >>> confidence.add(torch.tensor([[[[4.0, 0.0]]], [[[0.0, 0.0]]], [[[0.0, 4.0]]]]))
    >>> {k: round(v, 3) for k, v in confidence.means().items()}
    {0: 0.965, 2: 0.965}
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_VOXELS = 1 << 20


class ClassConfidence:
    """Per class: how many voxels the argmax gives it, and the sum of their winning probability."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.sums = np.zeros(num_classes, np.float64)
        self.counts = np.zeros(num_classes, np.int64)

    def add(self, slab: Any) -> None:
        """Take one ``(num_classes, ...)`` slab of logits (a torch tensor, any float type)."""
        import torch

        flat = slab.reshape(self.num_classes, -1)
        for start in range(0, flat.shape[1], CHUNK_VOXELS):
            chunk = flat[:, start:start + CHUNK_VOXELS].float()
            top, label = torch.softmax(chunk, dim=0).max(dim=0)
            self.sums += torch.bincount(label, weights=top.double(), minlength=self.num_classes).numpy()
            self.counts += torch.bincount(label, minlength=self.num_classes).numpy()

    def means(self) -> dict[int, float]:
        """Class index → mean winning probability, for the classes that won any voxel."""
        return {int(c): float(self.sums[c] / self.counts[c]) for c in np.flatnonzero(self.counts)}


__all__ = ["ClassConfidence"]
