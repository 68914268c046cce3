"""Per-class confidence: checked against softmax over a whole volume at once, and on a real run
(the labels do not change when it is measured)."""

from __future__ import annotations

import numpy as np
import torch

from mrseg.inference import Segmenter
from mrseg.inference.confidence import ClassConfidence
from parity import phantom_image


def test_slab_by_slab_confidence_equals_the_whole_volume_softmax(monkeypatch):
    monkeypatch.setattr("mrseg.inference.confidence.CHUNK_VOXELS", 100)  # several chunks per slab
    logits = torch.randn(5, 12, 9, 7, generator=torch.Generator().manual_seed(3)) * 3
    confidence = ClassConfidence(5)
    for lo in range(0, 12, 4):
        confidence.add(logits[:, lo:lo + 4].to(torch.float16))
    probabilities = torch.softmax(logits.to(torch.float16).float(), dim=0)
    top, label = probabilities.max(dim=0)
    expected = {c: float(top[label == c].double().mean()) for c in range(5) if (label == c).any()}
    assert confidence.means().keys() == expected.keys()
    for c, value in expected.items():
        assert abs(confidence.means()[c] - value) < 1e-6
    assert confidence.counts.sum() == 12 * 9 * 7


def test_a_run_with_confidence_gives_the_same_labels_and_a_probability_per_label(model_dir):
    image = phantom_image("RAS", seed=4)
    plain = Segmenter(model_dir(), folds=[0], precision="fp32").run(image)
    measured = Segmenter(model_dir(), folds=[0], precision="fp32", confidence=True).run(image)
    assert np.array_equal(plain.labels.array, measured.labels.array)
    assert plain.confidence == {} and "confidence" not in plain.timings
    present = set(np.unique(measured.labels.array).tolist())
    assert set(measured.confidence) >= present - {0}
    assert all(0 < p <= 1 for p in measured.confidence.values()) and measured.timings["confidence"] >= 0
