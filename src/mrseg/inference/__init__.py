"""Inference: preprocessing, sliding-window prediction over folds, export to labels."""

from mrseg.inference.segmenter import DEFAULT_ORIENTATION, Segmentation, Segmenter

__all__ = ["DEFAULT_ORIENTATION", "Segmentation", "Segmenter"]
