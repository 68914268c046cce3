"""Reports on segmentations: per-class statistics."""
