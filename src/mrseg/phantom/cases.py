"""Whole synthetic cases: anatomy (or a given label map) + geometry + image + sidecar, on disk.

This is what ``mrseg phantom`` runs: draw a subject (or take a label map), place it on a grid
of any orientation and spacing, synthesise the image, and write image, 40-class labels and a
JSON sidecar with everything needed to reproduce the case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrseg.errors import InputError
from mrseg.io.files import write_bytes_atomic, write_image
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import direction_from_code, rotation_matrix

OBLIQUE = "oblique"
SCALE_LIMITS = (0.5, 2.0)
"""The smallest and the largest subject size factor (``make_case``'s ``scale``)."""


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A synthetic image, its 40-class labels on the same grid, and how it was made."""

    image: Image
    labels: Image
    metadata: dict[str, Any] = field(default_factory=dict)


def grid_covering(
    box: Geometry,
    *,
    spacing: tuple[float, float, float],
    orientation: str = "LPS",
    rng: np.random.Generator | None = None,
) -> Geometry:
    """A grid with the given spacing and orientation that covers the world box of ``box``.

    ``orientation`` is a code like ``"RAS"`` or ``"PIL"``, or ``"oblique"`` for an axial-like
    grid tilted by up to 25° about random axes (drawn from ``rng``).
    """
    if orientation.lower() == OBLIQUE:
        generator = rng if rng is not None else np.random.default_rng(0)
        angles = tuple(float(a) for a in generator.uniform(-25, 25, size=3))
        direction = rotation_matrix(angles)  # type: ignore[arg-type]
    else:
        direction = np.asarray(direction_from_code(orientation)).reshape(3, 3)
    shape_xyz = np.asarray(box.shape[::-1])
    corners = np.array([[i, j, k, 1.0] for i in (0, shape_xyz[0] - 1) for j in (0, shape_xyz[1] - 1)
                        for k in (0, shape_xyz[2] - 1)])
    world = (box.affine_lps @ corners.T)[:3].T
    local = world @ direction  # coordinates along the new axes
    low, high = local.min(axis=0), local.max(axis=0)
    spacing_arr = np.asarray(spacing, dtype=float)
    size = np.maximum(np.ceil((high - low) / spacing_arr).astype(int) + 1, 1)
    origin = direction @ low
    return Geometry(
        shape=tuple(int(s) for s in size[::-1]),  # type: ignore[arg-type]
        spacing=tuple(float(s) for s in spacing_arr),  # type: ignore[arg-type]
        origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in direction.ravel()),  # type: ignore[arg-type]
    )


def make_case(
    *,
    seed: int,
    modality: str = "mr",
    sequence: str | None = None,
    fov: str = "abdomen",
    spacing: tuple[float, float, float] | None = None,
    orientation: str | None = None,
    random_contrast: bool = False,
    from_labels: Image | None = None,
    source: str | None = None,
    remove: Sequence[str] = (),
    clutter: float = 0.0,
    perirenal: tuple[float, float] | None = None,
    perirenal_room: float = 0.0,
    arms: bool = False,
    table: bool = False,
    air_margin: float | Sequence[float] = 0.0,
    ectasia: float = 0.0,
    extraperitoneal: float = 0.0,
    scale: float = 1.0,
    layered_aorta: bool = False,
    deformation_mm: float = 0.0,
    organ_scales: Mapping[str, float] | None = None,
    **synthesis: Any,
) -> PhantomCase:
    """Make one synthetic case.

    Args:
        seed: all randomness (anatomy, geometry, contrast, noise) follows from it.
        modality: ``"mr"`` or ``"ct"``.
        sequence: an MR sequence (``t1_in``, ``t1_opp``, ``dixon_water``, ``dixon_fat``,
            ``t2_haste``, ``t2_tse``) or CT phase (``native``, ``contrast``); default the first.
        fov: ``thorax``, ``abdomen``, ``pelvis`` or ``trunk`` (ignored with ``from_labels``).
        spacing: voxel size (x, y, z) in mm of the output grid; default 2 mm for a generated
            subject, the label map's own grid for ``from_labels``.
        orientation: axis code of the output grid, or ``"oblique"``; default ``"LPS"`` for a
            generated subject, the label map's own grid for ``from_labels``.
        random_contrast: random intensity per tissue (training mode) instead of physics.
        from_labels: a 40-class label map to synthesise from instead of a generated subject.
        source: where ``from_labels`` came from, for the sidecar.
        remove: classes to leave out of the anatomy, their place filled with fat (postoperative
            anatomy, see :func:`~mrseg.phantom.tissues.without_classes`).
        clutter: the share of the visceral fat filled with unlabelled soft tissue (vessels, lymph
            nodes; see :func:`~mrseg.phantom.tissues.mesenteric_clutter`); 0 (default) leaves it even.
        perirenal: ``(margin_mm, rise_mm)``: each kidney's perirenal space (around it by the
            margin, above it by the rise) holds its own tissue, ``perirenal_fat`` (see
            :func:`~mrseg.phantom.tissues.perirenal_fat`); None (default): plain visceral fat.
        perirenal_room: mm above the left kidney that a generated subject's later organs leave to
            its perirenal fat (``generate_anatomy``'s ``perirenal_room_mm``): a fat compartment
            as wide as the kidney above its upper pole; 0 (default): none. Not for ``from_labels``.
        arms: give a generated subject arms at the trunk's sides (``generate_anatomy``'s ``arms``;
            background in the labels), the field of view widened to hold them.
        table: lay a generated subject on a scanner table (``generate_anatomy``'s ``table``), the field
            of view deepened to hold it.
        air_margin: mm of air beyond a generated subject's field of view on its right, left, front
            and back (one number for all four, or four): a scan's field of view wider than the body
            (see :func:`~mrseg.phantom.anatomy.default_grid`); 0 (default): the body wall near the
            grid's edges.
        ectasia: mm by which the aorta is widened all round along its whole length (see
            :func:`~mrseg.phantom.tissues.aortic_ectasia`); 0 (default) leaves it as drawn.
        extraperitoneal: mm of extraperitoneal fat keeping the liver, spleen, gallbladder, stomach
            and colon off the body wall's muscle (see
            :func:`~mrseg.phantom.tissues.extraperitoneal_fat`); 0 (default): they reach it.
        scale: the subject's size, as a factor on every length (a smaller or a larger person):
            the anatomy is laid out on a grid of ``spacing / scale`` and then given ``spacing``
            about the grid's centre, so the acquisition grid keeps its spacing; 1 (default)
            leaves the subject or label map at its own size.
        layered_aorta: a generated subject's descending aorta diseased, its open lumen a cap along
            one wall beside grey thrombus or false lumen, as in a dissection (see
            :data:`~mrseg.phantom.anatomy.AORTIC_LAYERED_LUMEN_SHARE`); False (default): as the
            seed draws it. Not for ``from_labels``.
        deformation_mm: a smooth random deformation of the anatomy, generated or template, as
            SynthSeg deforms its label maps: the SD of the displacement, mm, at control points
            80 mm apart (see :func:`~mrseg.phantom.tissues.smoothly_deformed`); 0 (default):
            none.
        organ_scales: a generated subject's liver, spleen or kidneys smaller or larger for its
            body, as a factor on every length of each organ named (see
            :func:`~mrseg.phantom.anatomy.generate_anatomy`); None (default): as the seed draws
            them. Not for ``from_labels``.
        **synthesis: further :class:`~mrseg.phantom.synthesis.SynthesisOptions` fields.
    """
    from mrseg.io.resample import resample_labels
    from mrseg.phantom.anatomy import FOVS, air_margins, default_grid, generate_anatomy
    from mrseg.phantom.synthesis import SEQUENCES, SynthesisOptions, synthesize, tissues_from_labels
    from mrseg.phantom.tissues import (
        aortic_ectasia,
        extraperitoneal_fat,
        mesenteric_clutter,
        perirenal_fat,
        smoothly_deformed,
        to_classes,
        without_classes,
    )

    if modality not in SEQUENCES:
        raise InputError(f"modality must be one of {', '.join(SEQUENCES)}, got {modality!r}")
    sequence = sequence or SEQUENCES[modality][0]
    if sequence not in SEQUENCES[modality]:
        raise InputError(f"{modality} sequence must be one of {', '.join(SEQUENCES[modality])}, got {sequence!r}")
    if not (np.isfinite(scale) and SCALE_LIMITS[0] <= scale <= SCALE_LIMITS[1]):
        raise InputError(f"scale is a factor on the subject's size between 0.5 and 2, got {scale!r}")
    margins = air_margins(air_margin)
    # what only a generated subject has: each refused with a label map, whose anatomy is given
    generated_only = (
        (organ_scales, "organ_scales resizes a generated subject's organs; a label map's organs are given, leave "
                       "organ_scales out"),
        (perirenal_room, "perirenal_room makes room in a generated subject's anatomy; a label map's organs are "
                         "given, leave perirenal_room out"),
        (table, "the table is drawn under a generated subject; a label map's anatomy is given, leave table off"),
        (arms, "arms are drawn for a generated subject; a label map's anatomy is given, leave arms off"),
        (any(margins), "air_margin widens a generated subject's field of view; a label map's grid is given, leave "
                       "air_margin out"),
        (layered_aorta, "layered_aorta draws a generated subject's aortic disease; a label map's aorta is given, "
                        "leave layered_aorta off"),
    )
    for value, message in generated_only:
        if value and from_labels is not None:
            raise InputError(f"{message} with from_labels")
    rng = np.random.default_rng(seed)
    metadata: dict[str, Any] = {"seed": seed, "modality": modality, "sequence": sequence}

    if from_labels is None:
        if fov not in FOVS:
            raise InputError(f"fov must be one of {', '.join(FOVS)}, got {fov!r}")
        spacing = spacing or (2.0, 2.0, 2.0)
        laid_out = _divided(spacing, scale)
        field_of_view = default_grid(fov, spacing=laid_out, arms=arms, table=table, air_margin=margins)
        grid = grid_covering(field_of_view, spacing=laid_out, orientation=orientation or "LPS", rng=rng)
        anatomy = generate_anatomy(seed=seed, fov=fov, grid=grid, layered_aorta=layered_aorta,
                                   organ_scales=organ_scales, perirenal_room_mm=perirenal_room, arms=arms,
                                   table=table)
        tissues = anatomy.tissues
        metadata.update(fov=fov, anatomy=anatomy.parameters, source="phantom")
        if layered_aorta:
            metadata.update(layered_aorta=True)
        if organ_scales:
            metadata.update(organ_scales=dict(organ_scales))
        if perirenal_room:
            metadata.update(perirenal_room_mm=perirenal_room)
        if arms:
            metadata.update(arms=True)
        if table:
            metadata.update(table=True)
        if any(margins):
            metadata.update(air_margin_mm=list(margins))
    else:
        tissues = tissues_from_labels(from_labels, seed=seed)
        if spacing is not None or orientation is not None or scale != 1.0:
            from mrseg.io.orientation import orientation_code

            grid = grid_covering(
                from_labels.geometry,
                spacing=_divided(spacing or from_labels.geometry.spacing, scale),
                orientation=orientation or orientation_code(from_labels.geometry),
                rng=rng,
            )
            tissues = resample_labels(tissues, grid)
        metadata.update(source=source or "labels")
    if scale != 1.0:  # first: every later step works in the scaled subject's millimetres
        tissues = Image(tissues.array, scaled_about_centre(tissues.geometry, scale))
        metadata.update(scale=scale)
    if deformation_mm:  # before every tissue edit: the edits see the deformed anatomy
        tissues = tissues.with_array(smoothly_deformed(np.asarray(tissues.array), tissues.geometry.spacing_zyx,
                                                       displacement_mm=deformation_mm, seed=seed))
        metadata.update(deformation_mm=deformation_mm)
    if ectasia:  # before the removal: a removed aorta takes its widened wall with it
        tissues = tissues.with_array(aortic_ectasia(np.asarray(tissues.array), tissues.geometry.spacing_zyx,
                                                    widen_mm=ectasia))
        metadata.update(ectasia_mm=ectasia)
    if extraperitoneal:  # before the clutter: the layer is plain fat
        tissues = tissues.with_array(extraperitoneal_fat(np.asarray(tissues.array), tissues.geometry.spacing_zyx,
                                                         margin_mm=extraperitoneal))
        metadata.update(extraperitoneal_mm=extraperitoneal)
    if perirenal is not None:  # before the clutter and the removal: a removed kidney leaves its space behind
        margin_mm, rise_mm = perirenal
        superior = [float(c) for c in tissues.geometry.direction_matrix[2, ::-1]]  # the head's way, numpy order
        tissues = tissues.with_array(perirenal_fat(np.asarray(tissues.array), tissues.geometry.spacing_zyx,
                                                   superior, margin_mm=margin_mm, rise_mm=rise_mm))
        metadata.update(perirenal={"margin_mm": margin_mm, "rise_mm": rise_mm})
    if clutter:  # before the removal: an emptied organ's bed stays even fat, not soft tissue in its shape
        tissues = tissues.with_array(mesenteric_clutter(np.asarray(tissues.array), tissues.geometry.spacing_zyx,
                                                        fraction=clutter, seed=seed))
        metadata.update(clutter=clutter)
    if remove:
        tissues = tissues.with_array(without_classes(np.asarray(tissues.array), remove))
        metadata.update(removed=list(remove))

    options = SynthesisOptions(modality=modality, sequence=sequence, random_contrast=random_contrast, **synthesis)
    image = synthesize(tissues, options, seed=seed)
    labels = tissues.with_array(to_classes(tissues.array))
    g = image.geometry
    metadata.update(
        synthesis={k: v for k, v in asdict(options).items()},
        geometry={"shape_zyx": list(g.shape), "spacing": list(g.spacing), "origin": list(g.origin),
                  "direction": list(g.direction), "orientation": orientation or "as input"},
    )
    return PhantomCase(image, labels, metadata)


def scaled_about_centre(geometry: Geometry, factor: float) -> Geometry:
    """``geometry`` with its spacing multiplied by ``factor`` and its centre where it was: what
    its voxels show becomes ``factor`` times as large in the world."""
    shape_xyz = np.asarray(geometry.shape[::-1], dtype=float)
    centre = (geometry.affine_lps @ np.append((shape_xyz - 1) / 2, 1.0))[:3]
    spacing = np.asarray(geometry.spacing, dtype=float) * factor
    origin = centre - geometry.direction_matrix @ (spacing * (shape_xyz - 1) / 2)
    return Geometry(shape=geometry.shape, spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
                    origin=tuple(float(o) for o in origin), direction=geometry.direction)  # type: ignore[arg-type]


def _divided(spacing: Sequence[float], factor: float) -> tuple[float, float, float]:
    return tuple(float(s) / factor for s in spacing)  # type: ignore[return-value]


def write_case(case: PhantomCase, out_dir: str | os.PathLike[str], name: str) -> dict[str, Path]:
    """Write ``NAME.nii.gz`` (image), ``NAME_labels.nii.gz`` and ``NAME.json``; returns the paths."""
    from mrseg._version import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "image": write_image(case.image, out / f"{name}.nii.gz"),
        "labels": write_image(case.labels, out / f"{name}_labels.nii.gz"),
    }
    sidecar = out / f"{name}.json"
    write_bytes_atomic(sidecar, json.dumps({"mrseg_version": __version__, **case.metadata}, indent=2, default=float))
    paths["sidecar"] = sidecar
    return paths
