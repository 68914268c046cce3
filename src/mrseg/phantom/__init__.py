"""Synthetic anatomy: 40-class phantoms and MR/CT images synthesised from label maps."""

from mrseg.phantom.anatomy import FOVS, Anatomy, default_grid, generate_anatomy
from mrseg.phantom.cases import PhantomCase, make_case, write_case

__all__ = ["FOVS", "Anatomy", "PhantomCase", "default_grid", "generate_anatomy", "make_case", "write_case"]
