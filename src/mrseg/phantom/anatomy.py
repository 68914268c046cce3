"""A seeded, analytic adult trunk, rasterised as a tissue map on any voxel grid.

The anatomy is defined in a *subject frame*: millimetres, LPS axes (+x towards the patient's
left, +y posterior, +z superior), origin on the midline at the top of the first sacral vertebra
(the sacral promontory), the trunk's cross-section centred on ``y = 0``. Every structure is a
smooth analytic shape in that frame (ellipsoids, super-elliptic cross-sections stacked along z,
tubes along cubic splines with radius profiles, smooth random fields for the bowel). A subject
draws its sizes, positions, habitus and a pose (shift, roll about the long axis and a
height/width/depth scaling) from one seeded random generator.

Rasterisation evaluates each shape at the *world* position of the voxel centres
(``geometry.affine_lps`` composed with the pose), and only inside the voxel box that holds the
shape's bounding box, so any grid works: oblique, anisotropic, flipped or covering only part of
the body. Shapes are painted in a fixed priority order into one ``uint8`` tissue map, so a voxel
has exactly one tissue; most soft organs are painted only into still unclaimed visceral fat,
which makes the first painted organ win where two would touch. Structures that are not one of
the 40 classes are drawn too, with label 0, where a model must learn to tell them from a class:
the mediastinum's pulmonary trunk and arteries, pulmonary veins, SVC, the arch's branches and the
airways around the aorta; the pulmonary vessel tree inside the lungs carries the lung's label.

Example:
    >>> anatomy = generate_anatomy(seed=0, fov="abdomen", spacing=(4.0, 4.0, 4.0))
    >>> from mrseg.classes import BASE
    >>> bool((anatomy.labels.array == BASE.index_of("liver")).any())
    True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, cast

import numpy as np
import numpy.typing as npt
from scipy.interpolate import CubicSpline, PchipInterpolator

from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import rotation_matrix
from mrseg.phantom.tissues import TISSUE_INDEX, TISSUES, to_classes

logger = logging.getLogger(__name__)

FOVS: tuple[str, ...] = ("thorax", "abdomen", "pelvis", "trunk")
"""Named fields of view for :func:`default_grid`."""

# Subject-frame extents (x, y, z ranges in mm) of each field of view of the default-size subject.
_FOV_EXTENT: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "thorax": ((-170.0, 170.0), (-130.0, 130.0), (170.0, 485.0)),
    "abdomen": ((-170.0, 170.0), (-130.0, 130.0), (20.0, 300.0)),
    "pelvis": ((-170.0, 170.0), (-130.0, 130.0), (-220.0, 60.0)),
    "trunk": ((-170.0, 170.0), (-130.0, 130.0), (-220.0, 485.0)),
}

# The pose scales the subject about this point (mid-trunk), so size changes spread to both ends.
_POSE_CENTRE = np.array([0.0, 0.0, 125.0])

Array = np.ndarray
Clip = Callable[[Array, Array, Array], Array]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One synthetic subject rasterised on a grid.

    Attributes:
        tissues: ``uint8`` tissue map (labels of :mod:`mrseg.phantom.tissues`) on the grid.
        parameters: the subject's drawn parameters (sizes, habitus, pose), JSON-serialisable floats.
    """

    tissues: Image
    parameters: dict[str, float] = field(default_factory=dict)

    @property
    def labels(self) -> Image:
        """The 40-class ``uint8`` label map on the same grid."""
        return self.tissues.with_array(to_classes(self.tissues.array))


def default_grid(fov: str, *, spacing: tuple[float, float, float] = (2.0, 2.0, 2.0), arms: bool = False,
                 table: bool = False, air_margin: float | Sequence[float] = 0.0) -> Geometry:
    """An axis-aligned LPS grid covering one field of view of the default-size subject.

    World coordinates are those of the default-size subject: origin on the midline at the top of
    the sacrum, the lung apices near z = 460 mm and the femoral heads near z = -90 mm; drawn
    subjects are shifted by up to about 1 cm and scaled by a few percent about z = 125 mm.

    Args:
        fov: one of :data:`FOVS` ("thorax", "abdomen", "pelvis", "trunk").
        spacing: voxel size in mm, ITK order ``(x, y, z)``.
        arms: widen the grid to :data:`ARM_FOV_HALF_WIDTH_MM` each side, for a subject with arms.
        table: reach :data:`TABLE_FOV_BACK_MM` behind the midline, for a subject on a table.
        air_margin: mm of air added beyond the field of view's right, left, front and back
            sides (after ``arms`` and ``table``), one number for all four or four numbers in that
            order, each 0 to :data:`AIR_MARGIN_MAX_MM`: a scan's reconstruction circle wider than
            the body, which the default grid (the body wall near its edges) lacks.

    Returns:
        The grid geometry; its voxel centres span the field of view.

    Raises:
        InputError: for an unknown ``fov``, a non-positive spacing or a margin out of range.

    Example:
        >>> default_grid("trunk", spacing=(2.0, 2.0, 2.0)).shape
        (352, 130, 170)
    """
    if fov not in _FOV_EXTENT:
        raise InputError(f"unknown field of view {fov!r}; valid: {', '.join(FOVS)}")
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    if spacing_arr.shape != (3,) or not np.all(spacing_arr > 0):
        raise InputError(f"spacing must be three positive numbers (x, y, z) in mm, got {spacing}")
    extent = np.asarray(_FOV_EXTENT[fov], dtype=np.float64)  # (3 axes, lo/hi)
    if arms:
        extent[0] = (-ARM_FOV_HALF_WIDTH_MM, ARM_FOV_HALF_WIDTH_MM)
    if table:
        extent[1, 1] = TABLE_FOV_BACK_MM
    right, left, front, back = air_margins(air_margin)
    extent[:2] += ((-right, left), (-front, back))  # LPS: x grows to the left, y to the back
    size = np.maximum(1, np.round((extent[:, 1] - extent[:, 0]) / spacing_arr)).astype(int)
    centre = extent.mean(axis=1)
    origin = centre - (size - 1) * spacing_arr / 2.0
    return Geometry(
        shape=(int(size[2]), int(size[1]), int(size[0])),
        spacing=(float(spacing_arr[0]), float(spacing_arr[1]), float(spacing_arr[2])),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    )


AIR_MARGIN_MAX_MM = 300.0
"""The widest air margin :func:`default_grid` adds on one side of a field of view."""


def air_margins(air_margin: float | Sequence[float]) -> tuple[float, float, float, float]:
    """``air_margin`` (one number, or right, left, front, back) as four numbers in mm, checked.

    Raises:
        InputError: unless it is one or four numbers, each 0 to :data:`AIR_MARGIN_MAX_MM`.
    """
    try:
        values = np.atleast_1d(np.asarray(air_margin, dtype=np.float64))
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape == (1,):
        values = np.repeat(values, 4)
    if values.shape != (4,) or not np.all((values >= 0) & (values <= AIR_MARGIN_MAX_MM)):
        raise InputError(f"air_margin is one number or four (right, left, front, back), each 0-"
                         f"{AIR_MARGIN_MAX_MM:g} mm, got {air_margin!r}")
    right, left, front, back = (float(v) for v in values)
    return right, left, front, back


def generate_anatomy(
    *,
    seed: int,
    fov: str = "trunk",
    grid: Geometry | None = None,
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    layered_aorta: bool = False,
    organ_scales: Mapping[str, float] | None = None,
    perirenal_room_mm: float = 0.0,
    arms: bool = False,
    table: bool = False,
) -> Anatomy:
    """Draw one subject from ``seed`` and rasterise its tissue map.

    Args:
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same subject on
            every grid.
        fov: field of view of the default grid (see :data:`FOVS`); unused when ``grid`` is given.
        grid: the voxel grid to rasterise on (any orientation, spacing and extent); defaults to
            ``default_grid(fov, spacing=spacing)``.
        spacing: voxel size in mm (x, y, z) of the default grid; ignored when ``grid`` is given.
        layered_aorta: give the subject a diseased descending aorta whose open lumen is layered
            (see :data:`AORTIC_LAYERED_LUMEN_SHARE`) whatever its own two draws for that say;
            every draw is made as usual, so the rest of the subject is the seed's.
        organ_scales: a factor on every length of some of the organs of :data:`SCALABLE_ORGANS`
            (class name to factor, within :data:`ORGAN_SCALE_LIMITS`), on top of the size the
            seed draws for them: organs smaller or larger for this body than the phantom's
            build makes them. The liver keeps its dome under the diaphragm and its side at the
            wall; the spleen and each kidney shrink or grow about their centre. No draw changes.
        perirenal_room_mm: how far above the left kidney the organs painted after it (stomach,
            pancreas, bowel; the spleen keeps its whole shape beside it) keep out of its
            perirenal fat: the fat round the kidney raised by this many mm, so the renal fascia
            holds a compartment as wide as the kidney above its upper pole, as in patients with
            much retroperitoneal fat (the right kidney's upper pole meets the liver's bare area;
            it keeps only its ring); 0 (default) keeps only the fat round each kidney. No draw
            changes.
        arms: give the subject arms lying at the trunk's sides (skin, fat, muscle, the humerus,
            radius and ulna; background in the labels), from the shoulders down past the hips,
            drawn from their own stream of the seed (:data:`ARMS_STREAM`), so no other draw
            changes; the default grid then widens to hold them (:data:`ARM_FOV_HALF_WIDTH_MM`).
        table: lay the subject on a scanner table: two thin curved shells under its back, a
            mattress's gap below it, in unlabelled bone-like tissue (bright on CT, dark on MR),
            from their own stream (:data:`TABLE_STREAM`); the default grid then reaches
            :data:`TABLE_FOV_BACK_MM` behind the midline.

    Returns:
        The tissue map and the subject's parameters (the organ factors as ``NAME_size_factor``).

    Raises:
        InputError: for an unknown ``fov``, a bad spacing or a seed that is not a non-negative integer.

    Example:
        >>> a = generate_anatomy(seed=3, fov="pelvis", spacing=(4.0, 4.0, 4.0))
        >>> a.tissues.array.dtype
        dtype('uint8')
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r} of type {type(seed).__name__}")
    if grid is None:
        grid = default_grid(fov, spacing=spacing, arms=arms, table=table)
    elif fov not in _FOV_EXTENT:
        raise InputError(f"unknown field of view {fov!r}; valid: {', '.join(FOVS)}")
    organ_scales = dict(organ_scales or {})
    check_organ_scales(organ_scales)
    if not (math.isfinite(perirenal_room_mm) and perirenal_room_mm >= 0):
        raise InputError(f"perirenal_room_mm is a distance in mm, >= 0, got {perirenal_room_mm!r}")
    subject = _draw_subject(np.random.default_rng(int(seed)), layered_aorta=layered_aorta, organ_scales=organ_scales)
    if arms:
        drawn, arm_parameters = _draw_arms(np.random.default_rng([int(seed), ARMS_STREAM]), subject)
        subject = replace(subject, arms=drawn, parameters={**subject.parameters, **arm_parameters})
    if table:
        laid, table_parameters = _draw_table(np.random.default_rng([int(seed), TABLE_STREAM]), subject)
        subject = replace(subject, table=laid, parameters={**subject.parameters, **table_parameters})
    canvas = _Canvas(grid, subject.to_subject)
    _paint_subject(canvas, subject, perirenal_room_mm=perirenal_room_mm)
    logger.debug("phantom anatomy seed %d rasterised on a %s grid", seed, "x".join(map(str, grid.shape)))
    return Anatomy(Image(canvas.tissue, grid), dict(subject.parameters))


# --------------------------------------------------------------------------------------------
# Rasterisation: voxel boxes in subject coordinates, and painting with priorities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Box:
    """A voxel box of the grid and the subject-frame coordinates of its voxel centres.

    ``x``, ``y`` and ``z`` broadcast to ``shape`` but keep length-1 axes where a coordinate does
    not depend on that voxel axis (an axis-aligned grid gives ``z`` of shape ``(nk, 1, 1)``),
    which keeps shapes that vary only along z cheap.
    """

    index: tuple[slice, slice, slice]
    start: tuple[int, int, int]  # numpy (k, j, i) of the box's first voxel
    shape: tuple[int, int, int]
    x: Array
    y: Array
    z: Array


def _take(array: Array, local: tuple[slice, slice, slice]) -> Array:
    """Slice a broadcastable coordinate array, leaving its length-1 (broadcast) axes alone."""
    return array[tuple(s if n > 1 else slice(None) for s, n in zip(local, array.shape))]


class _Canvas:
    """The tissue map being painted and the voxel → subject-frame mapping."""

    def __init__(self, geometry: Geometry, to_subject: Array) -> None:
        self.shape = geometry.shape
        self.tissue = np.zeros(geometry.shape, dtype=np.uint8)
        self._to_subject = to_subject @ geometry.affine_lps  # voxel (i, j, k, 1) → subject
        self._to_voxel = np.linalg.inv(self._to_subject)
        self._luts: dict[tuple[str, ...], Array] = {}

    def _voxel_range(self, lo: Array, hi: Array) -> tuple[Array, Array] | None:
        corners = np.array([[a, b, c, 1.0] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        vox = (self._to_voxel @ corners.T)[:3]
        size = np.array(self.shape[::-1])
        first = np.clip(np.floor(vox.min(axis=1)).astype(int), 0, size)
        stop = np.clip(np.ceil(vox.max(axis=1)).astype(int) + 1, 0, size)
        if np.any(stop <= first):
            return None
        return first, stop  # ITK order (i, j, k)

    def box(self, lo: Array, hi: Array) -> _Box | None:
        """The voxel box holding the subject-frame bounding box ``[lo, hi]``, or None if outside."""
        found = self._voxel_range(np.asarray(lo, float), np.asarray(hi, float))
        if found is None:
            return None
        first, stop = found
        ramps = [
            np.arange(first[a], stop[a], dtype=np.float32).reshape([-1 if b == 2 - a else 1 for b in range(3)])
            for a in range(3)
        ]
        coords = []
        for row in self._to_subject[:3]:
            acc: Array = np.full((1, 1, 1), row[3], dtype=np.float32)
            for a in range(3):
                if abs(row[a]) > 1e-9:
                    acc = acc + np.float32(row[a]) * ramps[a]
            coords.append(acc)
        index = (slice(first[2], stop[2]), slice(first[1], stop[1]), slice(first[0], stop[0]))
        shape = (int(stop[2] - first[2]), int(stop[1] - first[1]), int(stop[0] - first[0]))
        start = (int(first[2]), int(first[1]), int(first[0]))
        return _Box(index, start, shape, coords[0], coords[1], coords[2])

    def sub(self, box: _Box, lo: Array, hi: Array) -> tuple[slice, slice, slice] | None:
        """Slices, relative to ``box``, of the part of ``box`` holding ``[lo, hi]``."""
        found = self._voxel_range(lo, hi)
        if found is None:
            return None
        first, stop = found
        out = []
        for a_np in range(3):
            a = 2 - a_np
            s0 = max(int(first[a]) - box.start[a_np], 0)
            s1 = min(int(stop[a]) - box.start[a_np], box.shape[a_np])
            if s1 <= s0:
                return None
            out.append(slice(s0, s1))
        return out[0], out[1], out[2]

    def _lut(self, only_into: tuple[str, ...]) -> Array:
        if only_into not in self._luts:
            lut = np.zeros(len(TISSUES), dtype=bool)
            lut[[TISSUE_INDEX[name] for name in only_into]] = True
            self._luts[only_into] = lut
        return self._luts[only_into]

    def paint(self, box: _Box, mask: Array, tissue: str, only_into: tuple[str, ...] | None = None) -> None:
        """Set ``tissue`` where ``mask`` holds (and the current tissue is one of ``only_into``)."""
        view = self.tissue[box.index]
        full = np.broadcast_to(mask, view.shape)
        if only_into is not None:
            full = full & self._lut(only_into)[view]
        view[full] = TISSUE_INDEX[tissue]


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


class _Shape(Protocol):
    def bounds(self) -> tuple[Array, Array]: ...

    def inside(self, x: Array, y: Array, z: Array) -> Array: ...


def _rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> Array:
    """``Rz @ Ry @ Rx`` from angles in degrees; columns are the rotated local axes."""
    return rotation_matrix((rx, ry, rz))


def _local(x: Array, y: Array, z: Array, centre: Array, rotation: Array) -> list[Array]:
    """Coordinates in a shape's local frame: ``rotation.T @ (p - centre)``, keeping broadcasts."""
    d = (x - np.float32(centre[0]), y - np.float32(centre[1]), z - np.float32(centre[2]))
    out = []
    for a in range(3):
        acc: Array | None = None
        for b in range(3):
            coef = float(rotation[b, a])
            if abs(coef) < 1e-7:
                continue
            term = d[b] if coef == 1.0 else d[b] * np.float32(coef)
            acc = term if acc is None else acc + term
        out.append(acc if acc is not None else np.zeros((1, 1, 1), np.float32))
    return out


@dataclass(frozen=True, eq=False)
class _Ellipsoid:
    """A rotated ellipsoid (``exponent`` 2) or super-ellipsoid (larger exponents are boxier)."""

    centre: Array
    radii: Array
    rotation: Array = field(default_factory=lambda: np.eye(3))
    exponent: float = 2.0

    def bounds(self) -> tuple[Array, Array]:
        if self.exponent == 2.0:
            half = np.sqrt((self.rotation**2) @ (self.radii**2))
        else:
            half = np.abs(self.rotation) @ self.radii
        return self.centre - half, self.centre + half

    def inside(self, x: Array, y: Array, z: Array) -> Array:
        u = _local(x, y, z, self.centre, self.rotation)
        total: Array | None = None
        for a in range(3):
            t = u[a] * np.float32(1.0 / self.radii[a])
            t = t * t if self.exponent == 2.0 else np.abs(t) ** np.float32(self.exponent)
            total = t if total is None else total + t
        assert total is not None
        return total <= 1.0

    def grown(self, mm: float) -> _Ellipsoid:
        return _Ellipsoid(self.centre, np.maximum(self.radii + mm, 0.5), self.rotation, self.exponent)


_TABLE_STEP = 1.0  # mm between the samples of z profiles


@dataclass(frozen=True, eq=False)
class _ZStack:
    """A stack of (super-)elliptic axial cross-sections whose centre, radii and angle vary with z.

    The cross-section at height ``z`` is centred on ``(xc, yc)``, has half-width ``a`` along its
    (rotated by ``theta``) first axis and half-depth ``b_ant`` / ``b_post`` before / behind the
    centre along the second axis. Profiles are tabulated every millimetre.
    """

    z0: float
    xc: Array
    yc: Array
    a: Array
    b_ant: Array
    b_post: Array
    theta: Array
    exponent: int = 2

    @property
    def z1(self) -> float:
        return self.z0 + (len(self.a) - 1) * _TABLE_STEP

    def bounds(self) -> tuple[Array, Array]:
        r = np.maximum(self.a, np.maximum(self.b_ant, self.b_post))
        if np.any(self.theta != 0):
            xr = yr = r * np.sqrt(2.0) if self.exponent > 2 else r
        else:
            xr, yr = self.a, np.maximum(self.b_ant, self.b_post)
        lo = np.array([np.min(self.xc - xr), np.min(self.yc - yr), self.z0])
        hi = np.array([np.max(self.xc + xr), np.max(self.yc + yr), self.z1])
        return lo, hi

    def _at(self, table: Array, z: Array) -> Array | np.float32:
        if table[0] == table[-1] and np.all(table == table[0]):
            return np.float32(table[0])
        zt = np.arange(len(table)) * _TABLE_STEP + self.z0
        return np.interp(z, zt, table).astype(np.float32)

    def centre(self, z: Array) -> tuple[Array | np.float32, Array | np.float32]:
        """The cross-sections' centre (x, y) at heights ``z``."""
        return self._at(self.xc, z), self._at(self.yc, z)

    def _power(self, u: Array) -> Array:
        if self.exponent == 2:
            return u * u
        au = np.abs(u)
        return au * au * au if self.exponent == 3 else au**self.exponent

    def inside(self, x: Array, y: Array, z: Array) -> Array:
        dx = x - self._at(self.xc, z)
        dy = y - self._at(self.yc, z)
        if np.any(self.theta != 0):
            th = self._at(self.theta, z)
            c, s = np.cos(th), np.sin(th)
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        ia = 1.0 / self._at(self.a, z)
        ib_ant = 1.0 / self._at(self.b_ant, z)
        ib_post = 1.0 / self._at(self.b_post, z)
        pdy = self._power(dy)
        ant = np.where(dy < 0, pdy, np.float32(0))
        total = self._power(dx) * self._power(ia) + ant * self._power(ib_ant) + (pdy - ant) * self._power(ib_post)
        return (total <= 1.0) & (z >= self.z0) & (z <= self.z1)

    def grown(self, mm: float | Array, *, posterior: float | Array | None = None) -> _ZStack:
        """Radii grown by ``mm`` (``posterior``: a different amount behind the centre)."""
        back = mm if posterior is None else posterior
        return _ZStack(self.z0, self.xc, self.yc, np.maximum(self.a + mm, 0.5), np.maximum(self.b_ant + mm, 0.5),
                       np.maximum(self.b_post + back, 0.5), self.theta, self.exponent)


def _zstack(knots: Sequence[Sequence[float]], *, exponent: int = 2) -> _ZStack:
    """A z-stack from knots ``(z, xc, yc, a, b[, b_post[, theta_deg]])`` (z increasing), PCHIP."""
    k = np.asarray([list(row) + [np.nan] * (7 - len(row)) for row in knots], dtype=np.float64)
    k[:, 5] = np.where(np.isnan(k[:, 5]), k[:, 4], k[:, 5])
    k[:, 6] = np.where(np.isnan(k[:, 6]), 0.0, k[:, 6])
    order = np.argsort(k[:, 0])
    k = k[order]
    z = np.arange(k[0, 0], k[-1, 0] + 1e-6, _TABLE_STEP)
    cols = [PchipInterpolator(k[:, 0], k[:, c])(z) for c in range(1, 7)]
    return _ZStack(float(k[0, 0]), cols[0], cols[1], np.maximum(cols[2], 0.5), np.maximum(cols[3], 0.5),
                   np.maximum(cols[4], 0.5), np.deg2rad(cols[5]), exponent)


@dataclass(frozen=True, eq=False)
class _Warp:
    """A smooth low-frequency displacement of the evaluation coordinates (sum of sines)."""

    waves: Array  # (n, 3) wave vectors, rad/mm
    phases: Array  # (n, 3)
    amplitude: Array  # (n, 3) mm

    @property
    def reach(self) -> float:
        return float(np.abs(self.amplitude).sum(axis=0).max())

    def apply(self, x: Array, y: Array, z: Array) -> tuple[Array, Array, Array]:
        out = [x, y, z]
        for w, ph, amp in zip(self.waves, self.phases, self.amplitude):
            arg = x * np.float32(w[0]) + y * np.float32(w[1]) + z * np.float32(w[2])
            for c in range(3):
                out[c] = out[c] + np.float32(amp[c]) * np.sin(arg + np.float32(ph[c]))
        return out[0], out[1], out[2]


def _warp(rng: np.random.Generator, amplitude: float, wavelength: float, n: int = 2) -> _Warp:
    dirs = rng.normal(size=(n, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return _Warp(dirs * (2 * np.pi / wavelength), rng.uniform(0, 2 * np.pi, (n, 3)),
                 rng.uniform(-amplitude, amplitude, (n, 3)) / np.sqrt(n))


@dataclass(frozen=True, eq=False)
class _Warped:
    """A shape seen through a smooth displacement of the coordinates it is evaluated at."""

    shape: _Shape
    warp: _Warp

    def bounds(self) -> tuple[Array, Array]:
        lo, hi = self.shape.bounds()
        return lo - self.warp.reach, hi + self.warp.reach

    def inside(self, x: Array, y: Array, z: Array) -> Array:
        return self.shape.inside(*self.warp.apply(x, y, z))


@dataclass(frozen=True, eq=False)
class _Union:
    """Inside any of several shapes."""

    shapes: tuple[_Shape, ...]

    def bounds(self) -> tuple[Array, Array]:
        b = [s.bounds() for s in self.shapes]
        return np.min([lo for lo, _ in b], axis=0), np.max([hi for _, hi in b], axis=0)

    def inside(self, x: Array, y: Array, z: Array) -> Array:
        out = self.shapes[0].inside(x, y, z)
        for s in self.shapes[1:]:
            out = out | s.inside(x, y, z)
        return out


@dataclass(frozen=True, eq=False)
class _Tube:
    """A tube along a sampled centreline (points every few mm) with radius and gas profiles.

    Rasterised as the union of round cones between consecutive samples. ``gas`` is the fraction
    of the lumen diameter, from the anterior side, holding gas (supine: gas rises anteriorly).
    """

    points: Array  # (n, 3)
    radii: Array  # (n,)
    gas: Array  # (n,)

    def bounds(self) -> tuple[Array, Array]:
        r = self.radii[:, None]
        return (self.points - r).min(axis=0), (self.points + r).max(axis=0)


def _tube(control: npt.ArrayLike, radii: npt.ArrayLike, *, step: float = 6.0, gas: npt.ArrayLike | None = None,
          haustra: tuple[float, float, float] | None = None) -> _Tube:
    """Sample a cubic spline through ``control`` points every ~``step`` mm of arc length.

    ``radii`` (and ``gas``) are given at the control points and interpolated monotonically;
    ``haustra`` = (relative amplitude, period mm, phase) modulates the radius along the tube.
    """
    p = np.asarray(control, dtype=np.float64)
    chord = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    spline = CubicSpline(chord, p, bc_type="natural")
    dense_t = np.linspace(0.0, chord[-1], max(int(chord[-1]), 2) * 2)
    dense = spline(dense_t)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    n = max(int(np.ceil(arc[-1] / step)), 1) + 1
    s = np.linspace(0.0, arc[-1], n)
    t = np.interp(s, arc, dense_t)
    pts = spline(t)
    r = PchipInterpolator(chord, np.asarray(radii, float))(t)
    if haustra is not None:
        amp, period, phase = haustra
        r = r * (1.0 + amp * np.sin(2 * np.pi * s / period + phase))
    g = np.zeros(n) if gas is None else np.clip(PchipInterpolator(chord, np.asarray(gas, float))(t), 0, 1)
    return _Tube(pts, np.maximum(r, 0.5), g)


# --------------------------------------------------------------------------------------------
# Painting helpers
# --------------------------------------------------------------------------------------------

_SOFT = ("visceral_fat",)
_SOFT_OR_MUSCLE = ("visceral_fat", "muscle")


def _fill(canvas: _Canvas, shape: _Shape, tissue: str, *, only_into: tuple[str, ...] | None = None,
          clips: Sequence[Clip] = ()) -> None:
    lo, hi = shape.bounds()
    box = canvas.box(lo, hi)
    if box is None:
        return
    mask = shape.inside(box.x, box.y, box.z)
    for clip in clips:
        mask = mask & clip(box.x, box.y, box.z)
    canvas.paint(box, mask, tissue, only_into)


def _fill_bone(canvas: _Canvas, shape: _Ellipsoid, bone: str, *, cortex_mm: float = 2.0) -> None:
    """An ellipsoidal bone part: cortex shell over marrow; overwrites anything."""
    _fill(canvas, shape, f"{bone}_cortex")
    _fill(canvas, shape.grown(-cortex_mm), f"{bone}_marrow", only_into=(f"{bone}_cortex",))


def _tube_field(canvas: _Canvas, tube: _Tube) -> tuple[_Box, Array, Array, Array] | None:
    """Signed distance-like field ``q`` (< 0 inside) of a tube on its box, with the centre y and
    the gas threshold of the nearest cone."""
    lo, hi = tube.bounds()
    box = canvas.box(lo, hi)
    if box is None:
        return None
    q = np.full(box.shape, np.inf, dtype=np.float32)
    yc = np.zeros(box.shape, dtype=np.float32)
    thr = np.zeros(box.shape, dtype=np.float32)
    pts, rad, gas = tube.points, tube.radii, tube.gas
    for s in range(len(pts) - 1):
        a, b = pts[s], pts[s + 1]
        rmax = max(rad[s], rad[s + 1])
        local = canvas.sub(box, np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
        if local is None:
            continue
        x, y, z = _take(box.x, local), _take(box.y, local), _take(box.z, local)
        d = (b - a).astype(np.float32)
        length2 = float(d @ d) or 1e-6
        px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) * np.float32(1.0 / length2), 0.0, 1.0)
        ex, ey, ez = px - t * d[0], py - t * d[1], pz - t * d[2]
        r = np.float32(rad[s]) + t * np.float32(rad[s + 1] - rad[s])
        qq = np.sqrt(ex * ex + ey * ey + ez * ez) - r
        qv = q[local]
        better = qq < qv
        np.copyto(qv, qq, where=better)
        np.copyto(yc[local], np.float32(a[1]) + t * d[1], where=better)
        g = np.float32(gas[s]) + t * np.float32(gas[s + 1] - gas[s])
        np.copyto(thr[local], r * (2 * g - 1), where=better)
    return box, q, yc, thr


def _fill_tube(canvas: _Canvas, tube: _Tube, tissue: str, *, only_into: tuple[str, ...] | None = _SOFT,
               wall: float = 0.0, lumen: str | None = None, gas: str | None = None,
               clips: Sequence[Clip] = ()) -> None:
    """Paint a tube; with ``lumen``, ``tissue`` is a wall of ``wall`` mm around the lumen tissue."""
    result = _tube_field(canvas, tube)
    if result is None:
        return
    box, q, yc, thr = result
    outer = q <= 0
    for clip in clips:
        outer = outer & clip(box.x, box.y, box.z)
    canvas.paint(box, outer, tissue, only_into)
    if lumen is None:
        return
    inner = outer & (q <= -wall)
    canvas.paint(box, inner, lumen, (tissue,))
    if gas is not None:
        canvas.paint(box, inner & ((box.y - yc) < thr), gas, (lumen,))


# --------------------------------------------------------------------------------------------
# The subject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Diaphragm:
    """The diaphragm's upper surface: two paraboloid domes, steeper posteriorly."""

    right: tuple[float, float, float]
    left: tuple[float, float, float]
    cx: float = 0.008
    cy_post: float = 0.010
    cy_ant: float = 0.003

    def height(self, x: Array, y: Array) -> Array:
        out: Array | None = None
        for x0, y0, z0 in (self.right, self.left):
            dy = y - np.float32(y0)
            cy = np.where(dy > 0, np.float32(self.cy_post), np.float32(self.cy_ant))
            dome = np.float32(z0) - np.float32(self.cx) * (x - np.float32(x0)) ** 2 - cy * dy * dy
            out = dome if out is None else np.maximum(out, dome)
        assert out is not None
        return out

    def below(self, margin: float) -> Clip:
        return lambda x, y, z: z < self.height(x, y) - np.float32(margin)

    def above(self, margin: float) -> Clip:
        return lambda x, y, z: z > self.height(x, y) + np.float32(margin)


@dataclass(frozen=True, eq=False)
class _Pelvis:
    """One side's hip bone and proximal femur."""

    wing: _Ellipsoid
    acetabulum: _Ellipsoid
    symphysis: _Ellipsoid
    rami: tuple[_Tube, ...]
    head: _Ellipsoid
    neck: _Tube
    shaft: _Tube
    trochanters: tuple[_Ellipsoid, ...]


@dataclass(frozen=True, eq=False)
class _Bowel:
    """The smooth random fields whose level sets draw the small-bowel loops and their gas."""

    waves: Array  # (n, 3) wave vectors, rad/mm
    phases: Array  # (n,)
    gas_waves: Array
    gas_phases: Array
    gas: float  # 0..1, amount of gas


@dataclass(frozen=True, eq=False)
class _AorticDisease:
    """A diseased stretch of the aorta: its open lumen, inside the thrombus that fills the stretch's
    heights (mm); the lumen is the tube, kept only where ``lumen_side`` keeps when it is given."""

    lumen: _Tube
    heights: tuple[float, float]
    lumen_side: Clip | None = None


@dataclass(frozen=True)
class _RibCage:
    """The rib cage's drawn sizes (mm): see :func:`_paint_rib_cage`."""

    height: float  # of each rib, along the body's axis
    thickness: float  # of each rib and the sternum, out from the cavity's wall
    drop: float  # how much lower a rib's front end lies than its back end (the first rib's less)
    sternum_half_width: float


@dataclass(frozen=True, eq=False)
class _Arm:
    """One arm hanging at the trunk's side: a muscle core in its own fat and skin, and its bones."""

    core: _ZStack
    fat: Array  # subcutaneous fat thickness (mm) along the core's z table
    bones: tuple[_ZStack, ...]  # the humerus, then the radius and the ulna (their cortex's outer surface)


ARMS_STREAM = 7_919
"""Where the arms' random stream branches off a subject's seed (``default_rng([seed, ARMS_STREAM])``),
so that drawing arms changes no other draw of the seed."""

ARM_FOV_HALF_WIDTH_MM = 320.0
"""Half the width (x) of the default grid of a subject with arms: the trunk and both arms."""

_BONE_CORTEX_MM = 3.0  # of the humerus, radius and ulna, round their fatty marrow


def _draw_arms(rng: np.random.Generator, subject: _Subject) -> tuple[tuple[_Arm, _Arm], dict[str, float]]:
    """Two arms at the trunk's sides, from the shoulders down past the hips (as in a patient lying
    with the arms beside the body): upper arm, elbow near the waist, forearm, and a flat hand;
    a gap of skin-on-skin to a few cm from the trunk. Drawn from their own stream ``rng``."""
    d = _Draw(rng)
    body, trunk_z = subject.body, np.arange(len(subject.body.a)) * _TABLE_STEP + subject.body.z0
    shoulder = body.z1 - d.u("arm_shoulder_drop_mm", 25.0, 45.0)
    elbow = shoulder - d.u("arm_upper_length_mm", 280.0, 330.0)
    wrist = elbow - d.u("arm_forearm_length_mm", 230.0, 270.0)
    hand = max(wrist - d.u("arm_hand_length_mm", 60.0, 90.0), subject.crotch_z - 100.0)
    upper, forearm = d.u("arm_upper_radius_mm", 32.0, 42.0), d.u("arm_forearm_radius_mm", 26.0, 34.0)
    fat_share = d.u("arm_fat_share", 0.4, 0.7)

    def along_trunk(z: Array | float, values: Array) -> Array:  # a trunk profile at z (held beyond its ends)
        return np.interp(np.clip(z, subject.crotch_z, body.z1), trunk_z, values)

    def arm_fat(z: Array | float) -> Array:  # a share of the trunk's subcutaneous fat at that height
        return np.maximum(3.0, fat_share * along_trunk(z, subject.fat))

    # (z, half-width, half-depth) of the muscle core from the hand up to the rounded shoulder
    joint = 0.5 * (forearm + upper)
    profile = [(hand, 30.0, 8.0), (wrist, 17.0, 11.0), (0.5 * (wrist + elbow), forearm, 0.85 * forearm),
               (elbow, joint, 0.9 * joint), (0.5 * (elbow + shoulder), upper, 0.95 * upper),
               (shoulder - 20.0, upper, upper), (shoulder + 15.0, 0.5 * upper, 0.5 * upper)]
    arms = []
    for side, name in _SIDES:
        gap = d.u(f"{name}_arm_gap_mm", 0.0, 30.0)
        y_shift = d.u(f"{name}_arm_y_mm", -25.0, 15.0)
        # each knot's centre: the trunk's skin, the gap, then the arm's own skin, fat and half-width
        knots = [(z, side * float(along_trunk(z, body.a + subject.fat) + 2 * subject.skin + gap + a + arm_fat(z)),
                  y_shift, a, b) for z, a, b in profile]
        core = _zstack(knots)
        core_z = np.arange(len(core.a)) * _TABLE_STEP + core.z0
        fat = arm_fat(core_z)
        xc = lambda z: float(np.interp(z, core_z, core.xc))  # noqa: E731
        humerus_r = d.u(f"{name}_humerus_radius_mm", 10.0, 13.0)
        humerus = _zstack([(elbow + 10.0, xc(elbow + 10.0), y_shift, 1.4 * humerus_r, humerus_r),
                           (shoulder - 20.0, xc(shoulder - 20.0), y_shift, humerus_r, humerus_r)])
        bones = [humerus]
        for dy in (-8.0, 8.0):  # the radius in front, the ulna behind
            r = d.u(f"{name}_forearm_bone_radius_mm_{'front' if dy < 0 else 'back'}", 6.0, 8.0)
            bones.append(_zstack([(wrist + 5.0, xc(wrist + 5.0), y_shift + dy, r, r),
                                  (elbow - 5.0, xc(elbow - 5.0), y_shift + dy, r, r)]))
        arms.append(_Arm(core, fat, tuple(bones)))
    return (arms[0], arms[1]), d.parameters


@dataclass(frozen=True)
class _Table:
    """The scanner's table under the subject's back: two thin curved shells (a cradle, its edges
    raised) a few cm apart, the upper one a mattress's gap below the back; as long as any grid."""

    top_y: float  # the upper shell's upper surface on the midline (subject frame, +y posterior)
    radius: float  # of the cradle's curve
    half_width: float
    thickness: float  # of each shell
    depth: float  # between the two shells' upper surfaces


TABLE_STREAM = 104_729
"""Where the table's random stream branches off a subject's seed (``default_rng([seed, TABLE_STREAM])``)."""

TABLE_FOV_BACK_MM = 260.0
"""How far behind the midline (y) the default grid of a subject on a table reaches, to hold the table."""


def _draw_table(rng: np.random.Generator, subject: _Subject) -> tuple[_Table, dict[str, float]]:
    """The table under the back: the back's lowest point (the body's largest posterior reach)
    plus a mattress's gap."""
    d = _Draw(rng)
    body = subject.body
    back = float(np.max(body.yc + body.b_post + 0.8 * subject.fat)) + subject.skin
    table = _Table(top_y=back + d.u("table_gap_mm", 5.0, 40.0), radius=d.u("table_radius_mm", 800.0, 2000.0),
                   half_width=d.u("table_half_width_mm", 220.0, 260.0), thickness=d.u("table_thickness_mm", 4.0, 8.0),
                   depth=d.u("table_depth_mm", 30.0, 60.0))
    return table, d.parameters


@dataclass(frozen=True, eq=False)
class _Subject:
    """Everything drawn for one subject, ready to paint (all in the subject frame)."""

    to_subject: Array  # 4x4 world (LPS) → subject frame
    parameters: dict[str, float]
    body: _ZStack  # the muscle core inside the subcutaneous fat
    fat: Array  # subcutaneous fat thickness (mm) along the body's z table
    skin: float
    cavity: _ZStack  # thoracic, abdominal and pelvic cavity (filled with visceral fat)
    crotch_z: float
    thighs: tuple[_ZStack, _ZStack]
    diaphragm: _Diaphragm
    spine: dict[str, Array]  # vertebral body centres and cross-section profiles along z
    sacrum: _ZStack
    sacral_canal: _ZStack
    pelvis: dict[str, _Pelvis]  # "left", "right"
    muscles: dict[str, _ZStack]  # tissue name → shape
    organs: dict[str, _Shape]
    tubes: dict[str, _Tube]
    lungs: dict[str, _ZStack]  # tissue name → shape
    lung_vessels: dict[str, list[_Tube]]  # lung tissue name → its vessel tree
    liver_floor: tuple[float, float]  # height (mm) of the liver's lower edge at x = -60, y = -20, and its x slope
    bowel: _Bowel
    aortic_disease: _AorticDisease | None = None
    ribs: _RibCage | None = None
    arms: tuple[_Arm, _Arm] | None = None
    table: _Table | None = None


class _Draw:
    """Draws named parameters from the generator and records them."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.parameters: dict[str, float] = {}

    def u(self, name: str, lo: float, hi: float) -> float:
        value = float(self.rng.uniform(lo, hi))
        self.parameters[name] = round(value, 6)
        return value

    def jitter(self, points: Sequence[Sequence[float]], sd: float) -> Array:
        p = np.asarray(points, dtype=np.float64)
        return p + self.rng.normal(0.0, sd, p.shape)


def _pose_matrix(scale: Array, roll_deg: float, shift: Array) -> Array:
    """4x4 world → subject matrix of the pose ``world = c + shift + R S (p - c)``."""
    a = _rotation(rz=roll_deg) @ np.diag(scale)
    inv = np.linalg.inv(a)
    m = np.eye(4)
    m[:3, :3] = inv
    m[:3, 3] = _POSE_CENTRE - inv @ (_POSE_CENTRE + shift)
    return m


def _mirror(points: Sequence[Sequence[float]], side: float) -> Array:
    p = np.array(points, dtype=np.float64)
    p[:, 0] *= side
    return p


def _side_knots(knots: Sequence[Sequence[float]], side: float) -> list[list[float]]:
    """Mirror z-stack knots ``(z, x, y, a, b[, b_post[, theta]])`` to one side (x and theta flip)."""
    out = []
    for row in knots:
        r = list(row)
        r[1] *= side
        if len(r) > 6:
            r[6] *= side
        out.append(r)
    return out


_SIDES = ((1.0, "left"), (-1.0, "right"))  # patient left is +x in LPS
HEART_WALL_MM = 8.0
"""The myocardium's thickness around the heart's blood pool (left ventricle 8–11 mm, right 3–5 mm)."""
AORTIC_DISEASE_SHARE = 0.3
"""Share of subjects whose descending aorta has a dilated stretch lined by thrombus (an aneurysm
with mural thrombus, or a dissection's thrombosed false lumen): in a CT angiography its lumen is
a bright crescent or disc inside a grey vessel that is still the aorta."""
# the stretch lies in the descending aorta: below the aortic root (z 305), above the bifurcation
_AORTIC_DISEASE_Z = (80.0, 300.0)
AORTIC_LAYERED_LUMEN_SHARE = 0.5
"""Share of diseased aortas whose open lumen is not a disc inside the thrombus but a segment of the
vessel's section cut off by a straight border, along one wall: a dissection's true lumen
beside its grey false lumen, or contrast layered over unenhanced blood. In a CT angiography the
aorta is then a bright cap on a grey disc of the same vessel."""
AORTIC_LAYER_SHARE_OF_DIAMETER = (0.15, 0.5)
"""Range of how much of the vessel's diameter, across the border, a layered lumen takes at the
stretch's middle."""
DESCENDING_AORTA_TURN_DEG = (-40.0, 15.0)
"""Range of the angle (degrees) by which each subject's descending thoracic aorta is turned about
the axis of the vertebral bodies, from its young adult's place at their left front (negative:
towards and past the midline, in front of the spine). With age the aorta lengthens and unfolds,
and its lower thoracic part comes to lie in front of the vertebral bodies or to their right."""
# the turn fades in below the arch and out into the abdominal aorta: heights (mm) where it is
# nothing, full, full, nothing
_AORTA_TURN_Z = (100.0, 170.0, 290.0, 350.0)
RIB_HEIGHT_MM = (10.0, 14.0)
"""Range of each subject's rib height (mm, along the body's axis); the ribs lie one thoracic
vertebra (24.5 mm) apart, so the intercostal spaces are the rest."""
# the angle (degrees round the cavity's centre from the back) where each rib, 1st to 12th, ends;
# where the ribs begin beside the spine; where they turn to costal cartilage
_RIB_ENDS_DEG = (172.0, 172.0, 172.0, 172.0, 172.0, 172.0, 172.0, 160.0, 150.0, 140.0, 115.0, 85.0)
_RIB_START_DEG = 22.0
_RIB_CARTILAGE_DEG = 142.0
_FIRST_THORACIC = 5  # the spine's body centres run from L5 up: index 5 is T12
_UPPER_RIB_DROP = 0.55  # the first rib's drop, of the others' (the third's and below)
_RIB_GAP_MM = 0.5  # between the body cavity and the ribs' inner surface
_RIB_CORTEX_MM = 1.5  # round the marrow of the ribs and the sternum
SCALABLE_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney")
"""The organs whose size ``generate_anatomy``'s ``organ_scales`` can change, each on its own."""
ORGAN_SCALE_LIMITS = (0.5, 1.5)
"""The smallest and the largest factor ``organ_scales`` takes."""
AORTIC_ARCH_SHIFT_MM = (-5.0, 20.0)
"""Range of how far (mm) each subject's ascending aorta and arch lie towards the left of their
mean place (negative: towards the right), the root in the heart and the descending aorta staying
put: between people the ascending aorta lies anywhere from right of the trachea to in front of
it, and the arch spans from about 1.5 to 4 cm across from the ascending to the descending aorta.
The arch's branches move with it."""
# heights (mm) over which the ascending aorta takes on the arch's shift, from none at the root to all
_ARCH_SHIFT_Z = (320.0, 380.0)
# centreline length (mm) over which the shift fades out beyond the arch's top and along a branch
_ARCH_SHIFT_FADE_MM = 60.0
_ARCH_BRANCHES = ("brachiocephalic_trunk", "left_common_carotid_artery", "left_subclavian_artery")
# SD (x, y, z) of the centres of the kidneys, spleen and gallbladder about their mean places: their
# height varies by about a vertebral level between subjects and breath holds
_ORGAN_SPREAD_MM = np.array([3.0, 3.0, 10.0])

# Visceral fat enlarges the abdominal cavity (and with it the trunk) by this profile along z.
_VISCERAL_Z = [-240, -30, 20, 60, 100, 150, 200, 250, 300, 480]
_VISCERAL_PROFILE = [0.0, 0.0, 0.3, 0.8, 1.0, 1.0, 0.8, 0.3, 0.0, 0.0]

# The muscle core (inside the subcutaneous fat): z, x, y, half-width, half-depth ant/post.
_CORE = [
    (480, 0, 0, 110, 72, 95), (440, 0, 0, 126, 82, 100), (380, 0, 0, 138, 92, 104),
    (300, 0, 0, 142, 98, 104), (230, 0, 0, 138, 98, 100), (160, 0, 0, 133, 96, 97),
    (90, 0, 0, 128, 93, 96), (40, 0, 0, 134, 90, 98), (0, 0, 0, 142, 88, 102),
    (-50, 0, 0, 148, 86, 110), (-100, 0, 0, 150, 84, 108), (-150, 0, 0, 150, 82, 100),
    (-175, 0, 0, 150, 80, 95),
]
# The body cavity, from the lung apices to the pelvic floor.
_CAVITY = [
    (470, 0, 0, 96, 56, 75), (440, 0, 0, 112, 66, 80), (380, 0, 0, 124, 78, 84),
    (300, 0, 0, 128, 84, 84), (230, 0, 0, 126, 85, 82), (160, 0, 0, 119, 84, 80),
    (90, 0, 0, 115, 80, 76), (40, 0, 0, 112, 77, 64), (0, 0, 0, 100, 75, 48),
    (-40, 0, -5, 72, 68, 62), (-80, 0, -5, 58, 68, 62), (-110, 0, -5, 40, 56, 50), (-122, 0, -5, 4, 4, 4),
]
_FAT_Z = [-240, -150, -60, 40, 120, 200, 280, 480]
_FAT_PROFILE = [0.8, 1.0, 1.15, 1.2, 1.15, 0.9, 0.6, 0.5]  # relative subcutaneous fat thickness

# Left-side muscle knots (z, x, y, a, b[, b_post, theta_deg]) before the muscularity scale.
_MUSCLES: dict[str, list[tuple[float, ...]]] = {
    "autochthonous_muscle": [
        (-75, 16, 86, 6, 6), (-40, 22, 88, 14, 12), (0, 30, 84, 22, 16), (50, 36, 75, 28, 20),
        (100, 38, 72, 30, 22), (160, 36, 76, 26, 20), (220, 32, 84, 21, 16), (300, 30, 90, 18, 14),
        (380, 28, 90, 17, 13), (440, 26, 86, 15, 12), (500, 24, 82, 14, 11)],
    "iliopsoas_muscle": [
        (-158, 96, 6, 4, 4), (-140, 92, -6, 11, 9), (-110, 84, -30, 16, 14), (-75, 84, -38, 20, 15),
        (-45, 80, -22, 24, 17, 17, 30), (-10, 74, -2, 30, 18, 18, 45), (20, 64, 8, 27, 19, 19, 30),
        (50, 55, 15, 22, 19), (85, 45, 21, 18, 16), (120, 36, 27, 14, 13), (160, 28, 34, 10, 9), (188, 22, 40, 4, 4)],
    "gluteus_maximus": [
        (35, 45, 98, 6, 4, 4, 20), (0, 66, 94, 36, 17, 17, 25), (-40, 82, 86, 57, 25, 25, 30),
        (-90, 94, 74, 65, 30, 30, 40), (-130, 104, 58, 55, 26, 26, 50), (-170, 118, 40, 32, 16, 16, 60),
        (-200, 128, 28, 6, 4, 4, 60)],
    "gluteus_medius": [
        (62, 118, 25, 6, 4, 4, -60), (40, 124, 30, 40, 12, 12, -62), (0, 134, 22, 45, 16, 16, -65),
        (-45, 138, 15, 32, 16, 16, -70), (-90, 140, 10, 18, 12, 12, -75), (-112, 140, 8, 4, 3, 3, -75)],
    "gluteus_minimus": [
        (35, 110, 12, 5, 3, 3, -60), (15, 114, 10, 32, 7, 7, -62), (-30, 118, 0, 28, 8, 8, -65),
        (-75, 122, -4, 18, 7, 7, -70), (-100, 124, -2, 4, 3, 3, -70)],
}
_LUNG = [(458, 35, 38, 3, 3), (445, 45, 30, 20, 22), (420, 55, 20, 38, 45), (380, 68, 12, 52, 70),
         (330, 75, 8, 58, 85), (280, 80, 12, 60, 88), (240, 85, 30, 52, 65), (205, 88, 55, 35, 35),
         (185, 85, 68, 12, 12)]


def _scaled_knots(knots: Sequence[Sequence[float]], scale: float) -> list[list[float]]:
    """Knots with their cross-section radii (a, b, b_post) scaled; tapered end knots kept."""
    out = []
    for row in knots:
        r = list(row)
        if r[3] > 6:
            r[3:6] = [v * scale for v in r[3:6]]
        out.append(r)
    return out


def check_organ_scales(organ_scales: Mapping[str, float]) -> None:
    """Raise :class:`InputError` unless every key is one of :data:`SCALABLE_ORGANS` and every
    factor lies within :data:`ORGAN_SCALE_LIMITS`."""
    lo, hi = ORGAN_SCALE_LIMITS
    for name, factor in organ_scales.items():
        if name not in SCALABLE_ORGANS:
            raise InputError(f"organ_scales: {name!r} cannot be scaled; scalable: {', '.join(SCALABLE_ORGANS)}")
        if isinstance(factor, bool) or not (isinstance(factor, (int, float)) and np.isfinite(factor)
                                            and lo <= factor <= hi):
            raise InputError(f"organ_scales: {name}'s factor must lie within [{lo:g}, {hi:g}], got {factor!r}")


def _draw_subject(rng: np.random.Generator, *, layered_aorta: bool, organ_scales: Mapping[str, float]) -> _Subject:
    """Draw every parameter and shape of one subject; the order of draws is fixed. With
    ``layered_aorta`` its aorta is diseased with a layered lumen, whatever those draws say;
    ``organ_scales`` multiplies the sizes drawn for the organs it names (no draw changes)."""
    d = _Draw(rng)
    for name, factor in organ_scales.items():
        d.parameters[f"{name}_size_factor"] = round(float(factor), 6)
    # ---- pose and habitus
    height = d.u("height_scale", 0.94, 1.06)
    width = d.u("width_scale", 0.93, 1.07)
    depth = d.u("depth_scale", 0.93, 1.07)
    roll = d.u("roll_deg", -5.0, 5.0)
    shift = np.array([d.u("shift_x_mm", -8, 8), d.u("shift_y_mm", -8, 8), d.u("shift_z_mm", -10, 10)])
    fat_mm = d.u("subcutaneous_fat_mm", 8.0, 35.0)
    visceral = d.u("visceral_fat", 0.0, 1.0)
    wall_mm = d.u("muscle_wall_mm", 7.0, 13.0)
    muscle = d.u("muscle_scale", 0.88, 1.12)
    to_subject = _pose_matrix(np.array([width, depth, height]), roll, shift)

    # ---- trunk layers
    def visceral_bump(z: float) -> float:
        return visceral * float(np.interp(z, _VISCERAL_Z, _VISCERAL_PROFILE))

    core = [(z, x, y, a + wall_mm - 11 + 12 * visceral_bump(z), ba + wall_mm - 11 + 25 * visceral_bump(z), bp)
            for z, x, y, a, ba, bp in _CORE]
    body = _zstack(core, exponent=3)
    z_table = np.arange(len(body.a)) * _TABLE_STEP + body.z0
    fat = fat_mm * np.interp(z_table, _FAT_Z, _FAT_PROFILE)
    cavity = _zstack([(z, x, y, a + 12 * visceral_bump(z), ba + 25 * visceral_bump(z), bp)
                      for z, x, y, a, ba, bp in _CAVITY], exponent=3)
    dia = _Diaphragm(right=(-55 + rng.normal(0, 4), 5.0, 268 + rng.normal(0, 6)),
                     left=(60 + rng.normal(0, 4), 10.0, 260 + rng.normal(0, 6)))

    # ---- spine: vertebral body centres (z) from L5 up, and cross-section profiles along z
    lumbar = 35.0 * d.u("lumbar_pitch_scale", 0.95, 1.05)
    centres = [20.0]
    for i in range(1, 19):
        centres.append(centres[-1] + (lumbar if i <= 4 else (30.0 if i == 5 else 24.5)))
    spine = {
        "centres": np.array(centres),
        "z": np.array([0, 20, 55, 90, 125, 160, 190, 243, 292, 340, 388, 436, 484, 530], float),
        "yb": np.array([38, 32, 27, 25, 27, 31, 36, 44, 50, 52, 51, 47, 42, 40], float),
        "a": np.array([25, 25, 24.5, 24, 23, 22, 20, 17, 16, 15, 14.5, 14, 12, 12], float),
        "b": np.array([17, 17, 17, 17, 16.5, 16, 15, 14, 13.5, 13, 12.5, 11, 9, 9], float),
        "disc": np.array([9, 9, 9, 9, 9, 8, 6, 5, 5, 5, 5, 5, 5, 5], float),
        "rcx": np.array([11, 11, 11, 10.5, 10, 9.5, 9, 8, 8, 8, 8, 8.5, 9, 9], float),
        "rcy": np.array([7.5, 7.5, 8, 8, 8, 8, 8, 7.5, 7.5, 7.5, 7.5, 7.5, 7.5, 7.5], float),
        "tp": np.array([30, 30, 32, 36, 33, 26, 22, 22, 22, 22, 22, 22, 22, 22], float),
        "tp_slope": np.array([0, 0, 0, 0, 0, 0.1, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6], float),
        "sp": np.array([28, 28, 30, 30, 30, 30, 32, 34, 34, 32, 30, 28, 28, 28], float),
        "sp_tilt": np.array([0.15, 0.15, 0.15, 0.15, 0.2, 0.3, 0.6, 0.9, 1.0, 1.0, 0.9, 0.7, 0.5, 0.5], float),
    }
    sacrum = _zstack([(-122, 0, 93, 4, 4), (-100, 0, 88, 13, 8), (-75, 0, 78, 24, 11), (-50, 0, 65, 36, 14),
                      (-25, 0, 52, 47, 17), (0, 0, 41, 51, 18), (3, 0, 40, 50, 17)])
    sacral_canal = _zstack([(-85, 0, 82, 3, 2), (-60, 0, 74, 6, 3.5), (-30, 0, 62, 8, 5), (3, 0, 55, 10, 6.5)])

    # ---- hip bones and femurs
    pelvis = {}
    for s, name in _SIDES:
        head_c = np.array([s * 88.0, -5.0, -90.0]) + rng.normal(0, 2, 3)
        head_r = 24.0 * d.u(f"{name}_femoral_head_scale", 0.93, 1.07)
        u_dir = np.array([s * 0.5, -0.86, 0.0])  # along the iliac crest, towards the front
        v_dir = np.array([s * 0.3, 0.05, 1.0])
        v_dir -= u_dir * (u_dir @ v_dir) / (u_dir @ u_dir)
        u_dir, v_dir = u_dir / np.linalg.norm(u_dir), v_dir / np.linalg.norm(v_dir)
        wing_rot = np.stack([u_dir, v_dir, np.cross(u_dir, v_dir)], axis=1)
        pelvis[name] = _Pelvis(
            wing=_Ellipsoid(np.array([s * 87.0, 15.0, 5.0]) + rng.normal(0, 2, 3), np.array([72.0, 62.0, 6.5]),
                            wing_rot),
            acetabulum=_Ellipsoid(np.array([s * 66.0, 0.0, -86.0]), np.array([17.0, 32.0, 34.0])),
            symphysis=_Ellipsoid(np.array([s * 10.0, -64.0, -122.0]), np.array([8.0, 12.0, 18.0])),
            rami=(_tube(_mirror([(80, 10, -92), (70, 20, -120), (58, 24, -148)], s), [13, 12, 10], step=5),
                  _tube(_mirror([(58, 22, -148), (40, -10, -142), (14, -52, -130)], s), [9, 8, 8], step=5),
                  _tube(_mirror([(76, -25, -92), (45, -52, -105), (12, -66, -118)], s), [11, 10, 9], step=5)),
            head=_Ellipsoid(head_c, np.full(3, head_r)),
            neck=_tube([head_c, head_c + np.array([s * 28.0, 8.0, -26.0])], [head_r * 0.62, 16], step=5),
            shaft=_tube([head_c + np.array([s * 34.0, 8.0, -35.0]), head_c + np.array([s * 25.0, 2.0, -150.0]),
                         head_c + np.array([s * 17.0, -2.0, -320.0])], [15, 14, 13], step=8),
            trochanters=(_Ellipsoid(head_c + np.array([s * 40.0, 14.0, -26.0]), np.array([15.0, 21.0, 26.0])),
                         _Ellipsoid(head_c + np.array([s * 15.0, 17.0, -60.0]), np.array([9.0, 9.0, 11.0]))),
        )

    # ---- skeletal muscles
    asymmetry = d.u("muscle_asymmetry", -0.04, 0.04)  # left muscles larger by this fraction, right smaller
    muscles = {f"{name}_{key}": _zstack(_side_knots(_scaled_knots(knots, muscle * (1 + s * asymmetry)), s))
               for key, knots in _MUSCLES.items() for s, name in _SIDES}

    organs: dict[str, _Shape] = {}
    tubes: dict[str, _Tube] = {}
    # ---- thorax: the heart's long axis points from its base (right, back, up) to the apex
    heart_s = d.u("heart_scale", 0.92, 1.08)
    e1 = np.array([0.62, -0.5, -0.6])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e1, [0.0, 0.0, 1.0])
    e2 /= np.linalg.norm(e2)
    heart = _Ellipsoid(np.array([16.0, -36.0, 292.0]) + rng.normal(0, 3, 3), np.array([64.0, 50.0, 44.0]) * heart_s,
                       np.stack([e1, e2, np.cross(e1, e2)], 1))
    heart_warp = _warp(rng, 3.0, 120.0)
    organs["heart"] = _Warped(heart, heart_warp)
    # the chambers' blood inside a wall of myocardium (no random draw: the stream is unchanged)
    organs["heart_blood_pool"] = _Warped(heart.grown(-HEART_WALL_MM), heart_warp)
    organs["pericardium"] = _Warped(heart.grown(4.0), heart_warp)
    lung_s = d.u("lung_scale", 0.94, 1.06)
    lung = [(z, x, y, a * lung_s, b * lung_s) for z, x, y, a, b in _LUNG]
    lungs = {f"{name}_lung": _zstack(_side_knots(lung, s)) for s, name in _SIDES}

    # ---- vessels and the oesophagus
    aorta_s = d.u("aorta_scale", 0.9, 1.1)
    # the root (the aortic valve) sits in the middle of the heart, among its chambers; the ascending
    # aorta rises to the right; the arch runs back over the left main bronchus; the descending aorta
    # lies to the left of the vertebral bodies in the thorax and reaches their front at the hiatus
    aorta = d.jitter([(4, -38, 305), (-6, -32, 350), (-4, -22, 382), (10, -8, 402), (24, 20, 396), (28, 42, 364),
                      (27, 40, 300), (15, 22, 245), (9, 6, 190), (9, 1, 140), (11, -2, 90), (5, -4, 55)], 1.5)
    tubes["aorta"] = _tube(aorta, np.array([13, 13, 12, 11.5, 11, 10.5, 10.5, 10, 9.5, 9.5, 9, 8.5]) * aorta_s)
    ivc = d.jitter([(-12, 6, 35), (-22, 4, 62), (-26, 2, 100), (-27, 1, 150), (-28, 6, 200), (-24, 2, 240),
                    (-18, -8, 268)], 1.5)
    tubes["inferior_vena_cava"] = _tube(ivc, np.array([10, 10.5, 11, 11, 11.5, 12, 12]) * aorta_s)
    iliac_s = d.u("iliac_scale", 0.9, 1.1)
    for s, name in _SIDES:
        # arteries from the aortic bifurcation, veins (behind and medial) from the caval confluence
        artery = _mirror([(32, -8, 22), (52, -12, -8), (70, -30, -40), (80, -50, -68)], s) + rng.normal(0, 2, (4, 3))
        tubes[f"{name}_iliac_artery"] = _tube(np.vstack([aorta[-1:], artery]), np.array([6.5, 6, 5.5, 5, 5]) * iliac_s)
        vein = [(20, 14, 18), (46, 12, -12), (62, -14, -44), (70, -38, -70)] if s > 0 else \
            [(28, 12, 12), (48, 6, -14), (60, -20, -44), (66, -44, -70)]
        vein_pts = _mirror(vein, s) + rng.normal(0, 2, (4, 3))
        tubes[f"{name}_iliac_vena"] = _tube(np.vstack([ivc[:1], vein_pts]), np.array([8, 7.5, 7, 6.5, 6]) * iliac_s)
    tubes["portal_vein_and_splenic_vein"] = _tube(
        d.jitter([(84, 40, 190), (70, 24, 178), (35, 2, 160), (-2, -14, 150), (-24, -18, 162), (-44, -12, 182)], 1.5),
        [4.5, 4.5, 5, 6.5, 7, 6.5])
    tubes["esophagus"] = _tube(d.jitter([(0, 26, 500), (2, 22, 400), (5, 16, 330), (10, 8, 272), (24, -2, 238),
                                         (42, 6, 224)], 1.5), [7, 7, 7, 7.5, 8, 9])

    # ---- abdominal organs
    liver_s = d.u("liver_scale", 0.9, 1.1)
    liver_off = rng.normal(0, 4, 3)
    liver_f = organ_scales.get("liver", 1.0)
    # a smaller liver still fills the dome and meets the wall: the right lobe's top and side stay
    liver_off = liver_off + (1.0 - liver_f) * liver_s * np.array([-80.0, 0.0, 74.0])
    liver_s *= liver_f
    right_lobe = _Ellipsoid(np.array([-60.0, 2.0, 192.0]) + liver_off, np.array([80.0, 86.0, 74.0]) * liver_s,
                            _rotation(rx=rng.normal(0, 4), ry=rng.normal(0, 4) - 8, rz=rng.normal(0, 5)))
    left_lobe = _Ellipsoid(np.array([8.0, -42.0, 222.0]) + liver_off, np.array([62.0, 36.0, 30.0]) * liver_s,
                           _rotation(ry=-12, rz=20 + rng.normal(0, 5)))
    liver_tip = d.u("liver_tip_z_mm", 118.0, 138.0)
    organs["liver"] = _Warped(_Union((right_lobe, left_lobe)), _warp(rng, 5.0, 160.0, 3))
    gb_s = d.u("gallbladder_scale", 0.8, 1.15)
    organs["gallbladder"] = _Ellipsoid(np.array([-42.0, -50.0, 136.0]) + rng.normal(0, 1, 3) * _ORGAN_SPREAD_MM,
                                       np.array([15.0, 14.0, 34.0]) * gb_s, _rotation(rx=-30, rz=rng.normal(0, 10)))
    spleen_s = d.u("spleen_scale", 0.85, 1.15) * organ_scales.get("spleen", 1.0)
    # long axis along the posterolateral wall (running backwards and medially)
    organs["spleen"] = _Warped(_Ellipsoid(np.array([93.0, 44.0, 190.0]) + rng.normal(0, 1, 3) * _ORGAN_SPREAD_MM,
                                          np.array([24.0, 57.0, 48.0]) * spleen_s,
                                          _rotation(rx=15, rz=40 + rng.normal(0, 6))), _warp(rng, 4.0, 100.0))
    for s, name in _SIDES:
        ks = d.u(f"{name}_kidney_scale", 0.93, 1.07) * organ_scales.get(f"{name}_kidney", 1.0)
        # each kidney on its own: in some subjects the left lies lower than the right
        centre = np.array([s * 73.0, 43.0, 140.0 if s > 0 else 126.0]) + rng.normal(0, 1, 3) * _ORGAN_SPREAD_MM
        # upper pole medial and posterior, hilum facing forwards and medially
        rot = _rotation(rx=-15, ry=-s * 12, rz=s * 30 + rng.normal(0, 5))
        radii = np.array([30.0, 22.5, 57.0]) * ks
        organs[f"{name}_kidney_cortex"] = _Ellipsoid(centre, radii, rot)
        organs[f"{name}_kidney_medulla"] = _Ellipsoid(centre, radii * 0.6, rot)
        organs[f"{name}_kidney_sinus"] = _Ellipsoid(centre + rot @ np.array([-s * 22.0, 0.0, 0.0]),
                                                    np.array([12.0, 9.0, 20.0]) * ks, rot)
        adrenal = centre + rot @ np.array([0.0, 0.0, radii[2]]) + np.array([-s * 16.0, -8.0, 6.0])
        adrenal_s = d.u(f"{name}_adrenal_scale", 0.9, 1.1)
        adrenal_radii = np.array([4.5, 13.0, 18.0]) * adrenal_s
        organs[f"{name}_adrenal_gland"] = _Ellipsoid(adrenal + rng.normal(0, 1.5, 3), adrenal_radii,
                                                     _rotation(rx=10, rz=-s * 35))
    stomach_s = d.u("stomach_scale", 0.85, 1.15)
    stomach_gas = d.u("stomach_gas", 0.1, 0.45)
    tubes["stomach"] = _tube(d.jitter([(62, 26, 232), (70, 4, 214), (66, -24, 190), (55, -44, 165), (35, -56, 142),
                                       (6, -60, 134), (-14, -52, 138), (-26, -44, 144)], 2.0),
                             np.array([30, 34, 33, 30, 26, 20, 15, 11]) * stomach_s, step=5,
                             gas=[0.1, stomach_gas, stomach_gas, stomach_gas, stomach_gas * 0.6, 0.1, 0.0, 0.0])
    tubes["pancreas"] = _tube(d.jitter([(-30, -26, 128), (-8, -34, 142), (35, -16, 154), (74, 10, 170)], 2.0),
                              np.array([18, 12, 12.5, 9.5]) * d.u("pancreas_scale", 0.9, 1.1), step=5)
    tubes["duodenum"] = _tube(d.jitter([(-26, -44, 144), (-46, -36, 146), (-60, -16, 138), (-62, -14, 100),
                                        (-42, -26, 84), (0, -30, 82), (26, -26, 96), (34, -30, 118)], 1.5),
                              np.array([11, 13, 13, 13, 12, 12, 11, 10]) * d.u("duodenum_scale", 0.9, 1.1), step=5)
    fill = d.u("bladder_fill", 0.35, 1.0)
    bladder = _Ellipsoid(np.array([0.0, -40.0, -80.0]) + rng.normal(0, 3, 3),  # a filled bladder is boxy
                         np.array([44.0, 35.0, 31.0]) * fill ** (1 / 3), exponent=2.5)
    organs["urinary_bladder"] = _Warped(bladder, _warp(rng, 3.0, 90.0))
    colon_gas = d.u("colon_gas", 0.1, 0.5)
    colon_s = d.u("colon_scale", 0.88, 1.12)
    colon = d.jitter([(-66, -16, 18), (-86, -4, 45), (-96, 14, 80), (-96, 14, 110), (-84, -18, 128), (-58, -52, 112),
                      (-12, -68, 100), (40, -60, 116), (84, -16, 160), (100, 14, 136), (100, 24, 92), (98, 20, 48),
                      (85, 0, 16), (60, -30, -10), (24, -42, -22), (4, -12, -34), (8, 22, -46), (2, 42, -66),
                      (0, 46, -90), (0, 36, -116)], 3.0)
    colon_r = np.array([26, 25, 23, 22, 22, 21, 20, 20, 20, 18, 17, 17, 16, 16, 16, 16, 16, 18, 18, 12]) * colon_s
    colon_g = np.array([0.1, 0.1, 0.15, 0.2, 0.3, 1, 1, 1, 0.5, 0.3, 0.2, 0.1, 0.1, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05, 0])
    tubes["colon"] = _tube(colon, colon_r, step=6, gas=colon_g * colon_gas,
                           haustra=(0.1, 28.0, float(rng.uniform(0, 2 * np.pi))))
    organs["small_bowel"] = _Ellipsoid(np.array([-4.0, -30.0, 56.0]) + rng.normal(0, 3, 3),
                                       np.array([88.0, 56.0, 86.0]) * d.u("small_bowel_scale", 0.92, 1.08))
    dirs = rng.normal(size=(6, 3))
    waves = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * (2 * np.pi / rng.uniform(36, 48, (6, 1)))
    phases = rng.uniform(0, 2 * np.pi, 6)
    dirs = rng.normal(size=(3, 3))
    gas_waves = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * (2 * np.pi / 70.0)
    bowel = _Bowel(waves, phases, gas_waves, rng.uniform(0, 2 * np.pi, 3), d.u("small_bowel_gas", 0.02, 0.12))

    crotch = -150.0 + float(rng.normal(0, 4))
    thigh = [(crotch + 0.5, 75, 0, 75, 82, 100), (crotch - 50, 82, -2, 72, 76, 86), (-270, 88, -5, 68, 70, 74)]
    # drawn last, so that every earlier draw of a seed is what it was before they existed
    tubes.update(_draw_mediastinum(d, aorta_s))
    lung_vessels = {f"{name}_lung": _draw_lung_vessels(rng, s) for s, name in _SIDES}
    for _, name in _SIDES:
        # perirenal fat: the fat inside the renal fascia keeps the other organs off the kidney,
        # thicker in a subject with more visceral fat
        margin = d.u(f"{name}_perirenal_fat_mm", 0.0, 3.0 + 15.0 * visceral)
        organs[f"{name}_perirenal_fat"] = cast(_Ellipsoid, organs[f"{name}_kidney_cortex"]).grown(margin)
    # drawn after everything else, so that every earlier draw of a seed is what it was before
    aortic_disease = None
    if (disease := _draw_aortic_disease(d, tubes["aorta"], force=layered_aorta)) is not None:
        tubes["aorta"], aortic_disease = disease
    # drawn after the aortic disease, for the same reason
    turn = _descending_aorta_turn(d, tubes["aorta"], spine)
    tubes["aorta"] = turn(tubes["aorta"])
    if aortic_disease is not None:
        aortic_disease = replace(aortic_disease, lumen=turn(aortic_disease.lumen))
    # drawn after the turn, for the same reason; made from the turned vessel
    side = _layered_lumen_side(d, tubes["aorta"], aortic_disease.heights if aortic_disease else _AORTIC_DISEASE_Z,
                               force=layered_aorta)
    if aortic_disease is not None and side is not None:
        aortic_disease = _AorticDisease(tubes["aorta"], aortic_disease.heights, side)
    # drawn after the layered lumen, for the same reason
    moved = _aortic_arch_shift(d, tubes["aorta"])
    for key in _ARCH_BRANCHES:
        tubes[key] = _moved_with_arch(tubes[key], tubes["aorta"], moved)
    tubes["aorta"] = _moved_left(tubes["aorta"], moved)
    if aortic_disease is not None:
        aortic_disease = replace(aortic_disease, lumen=_moved_left(aortic_disease.lumen, moved))
    # drawn after the arch's shift, for the same reason
    ribs = _RibCage(height=d.u("rib_height_mm", *RIB_HEIGHT_MM), thickness=d.u("rib_thickness_mm", 6.0, 10.0),
                    drop=d.u("rib_drop_mm", 60.0, 100.0), sternum_half_width=d.u("sternum_half_width_mm", 12.0, 18.0))
    tubes["esophagus"] = _pushed_clear(tubes["esophagus"], tubes["aorta"], gap_mm=1.0,
                                       heights=(_AORTA_TURN_Z[0], _AORTA_TURN_Z[-1]))
    return _Subject(
        to_subject=to_subject, parameters=d.parameters, body=body, fat=fat, skin=2.0, cavity=cavity,
        crotch_z=crotch, thighs=(_zstack(_side_knots(thigh, 1.0)), _zstack(_side_knots(thigh, -1.0))),
        diaphragm=dia, spine=spine, sacrum=sacrum, sacral_canal=sacral_canal, pelvis=pelvis, muscles=muscles,
        organs=organs, tubes=tubes, lungs=lungs, lung_vessels=lung_vessels, liver_floor=(liver_tip, 0.28),
        bowel=bowel, aortic_disease=aortic_disease, ribs=ribs,
    )


def _draw_aortic_disease(d: _Draw, aorta: _Tube, *, force: bool = False) -> tuple[_Tube, _AorticDisease] | None:
    """In :data:`AORTIC_DISEASE_SHARE` of subjects (every one with ``force``), a stretch of the
    descending aorta, dilated up to 1.9-fold and lined by thrombus: returns the dilated aorta, its
    open lumen and the stretch's z range.

    The lumen is the aorta's own centreline, shifted off-centre and narrowed by the thrombus's share
    of the radius; both taper to nothing at the stretch's ends. All draws are made for every subject.
    """
    present = d.u("aortic_disease", 0.0, 1.0) < AORTIC_DISEASE_SHARE or force
    lo, hi = _AORTIC_DISEASE_Z
    centre = d.u("aortic_disease_centre_z_mm", lo + 30.0, hi - 30.0)
    half = d.u("aortic_disease_half_length_mm", 30.0, 80.0)
    half = min(half, centre - lo, hi - centre)
    dilatation = d.u("aortic_dilatation", 1.1, 1.9)
    thrombus = d.u("aortic_thrombus_share", 0.25, 0.75)  # of the radius, where it is thickest
    eccentric = d.u("aortic_lumen_eccentricity", 0.5, 1.0)  # 1: the lumen touches the wall on one side
    angle = d.u("aortic_lumen_angle_rad", 0.0, 2 * np.pi)
    if not present:
        return None
    # within [lo, hi]: the ascending aorta starts above hi
    bump = _stretch_profile(aorta.points[:, 2], (centre - half, centre + half))
    radii = aorta.radii * (1.0 + (dilatation - 1.0) * bump)
    share = thrombus * bump
    shift = (radii * share * eccentric)[:, None] * np.array([np.cos(angle), np.sin(angle), 0.0])
    lumen = _Tube(aorta.points + shift, np.maximum(radii * (1.0 - share), 0.5), np.zeros_like(radii))
    return _Tube(aorta.points, radii, aorta.gas), _AorticDisease(lumen, (centre - half, centre + half))


def _stretch_profile(z: Array, heights: tuple[float, float]) -> Array:
    """How far along a diseased stretch's heights (mm) each of ``z`` is diseased: 1 at the
    stretch's middle, fading as cos² to 0 at its ends and outside."""
    centre, half = (heights[0] + heights[1]) / 2, (heights[1] - heights[0]) / 2
    return np.where(np.abs(z - centre) < half, np.cos(np.pi / 2 * (z - centre) / half) ** 2, 0.0)


def _layered_lumen_side(d: _Draw, aorta: _Tube, heights: tuple[float, float], *,
                        force: bool = False) -> Clip | None:
    """In :data:`AORTIC_LAYERED_LUMEN_SHARE` of diseased aortas (every one with ``force``), the
    side of a straight border on which the open lumen lies (see the constant), else None.
    ``aorta`` is the dilated vessel, ``heights`` the diseased stretch. All draws are made for
    every subject.

    The border crosses each axial section of the descending aorta square to the drawn direction,
    at the drawn share of the diameter from the wall at the stretch's middle, and moves out to the
    far wall at the stretch's ends, so the whole vessel is lumen again there.
    """
    layered = d.u("aortic_lumen_layered", 0.0, 1.0) < AORTIC_LAYERED_LUMEN_SHARE or force
    share = d.u("aortic_layer_share_of_diameter", *AORTIC_LAYER_SHARE_OF_DIAMETER)
    angle = d.u("aortic_layer_angle_rad", 0.0, 2 * np.pi)
    if not layered:
        return None
    top = int(np.argmax(aorta.points[:, 2]))  # the arch's top: below it the aorta only descends
    points, radii = aorta.points[top:], aorta.radii[top:]
    order = np.argsort(points[:, 2])
    z_knots, x_knots, y_knots, r_knots = points[order, 2], points[order, 0], points[order, 1], radii[order]
    towards = (np.float32(np.cos(angle)), np.float32(np.sin(angle)))

    def lumen_side(x: Array, y: Array, z: Array) -> Array:
        # the border's signed distance from the centreline, towards the lumen: -r at the
        # stretch's ends, r (1 - 2 share) at its middle
        r = np.interp(z, z_knots, r_knots)
        border = r * (-1.0 + _stretch_profile(z, heights) * (2.0 - 2.0 * share))
        across = (x - np.interp(z, z_knots, x_knots)) * towards[0] + (y - np.interp(z, z_knots, y_knots)) * towards[1]
        return across > border

    return lumen_side


def _descending_aorta_turn(d: _Draw, aorta: _Tube, spine: dict[str, Array]) -> Callable[[_Tube], _Tube]:
    """Draw the angle of :data:`DESCENDING_AORTA_TURN_DEG` and return the turn it makes: each point
    of a tube sampled like ``aorta`` (the aorta itself, a diseased stretch's lumen) turned about the
    vertebral bodies' axis, by the full angle between the heights of ``_AORTA_TURN_Z`` and fading
    to none above and below; the ascending aorta and the arch (before the arch's top) stay put.

    Turning about the spine's axis keeps the aorta's distance from the vertebral bodies.
    """
    angle = np.deg2rad(d.u("descending_aorta_turn_deg", *DESCENDING_AORTA_TURN_DEG))
    z = aorta.points[:, 2]
    theta = angle * np.interp(z, _AORTA_TURN_Z, [0.0, 1.0, 1.0, 0.0])
    theta[: int(np.argmax(z))] = 0.0
    axis_y = np.interp(z, spine["z"], spine["yb"])
    cos, sin = np.cos(theta), np.sin(theta)

    def turn(tube: _Tube) -> _Tube:
        # (left, front) of each point from the axis; a positive angle turns front towards left
        left, front = tube.points[:, 0], axis_y - tube.points[:, 1]
        points = tube.points.copy()
        points[:, 0] = front * sin + left * cos
        points[:, 1] = axis_y - (front * cos - left * sin)
        return _Tube(points, tube.radii, tube.gas)

    return turn


def _arch_shift_weight(aorta: _Tube) -> Array:
    """How much of the arch's shift each sample of ``aorta`` takes: none at the root, rising along
    the ascending aorta to all of it at :data:`_ARCH_SHIFT_Z`'s top, all of it over the arch's top,
    and fading to none :data:`_ARCH_SHIFT_FADE_MM` of centreline beyond it, where the aorta
    descends."""
    z = aorta.points[:, 2]
    top = int(np.argmax(z))
    weight = np.interp(z, _ARCH_SHIFT_Z, [0.0, 1.0])
    beyond = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(aorta.points[top:], axis=0), axis=1))])
    weight[top:] = np.interp(beyond, [0.0, _ARCH_SHIFT_FADE_MM], [1.0, 0.0])
    return weight


def _aortic_arch_shift(d: _Draw, aorta: _Tube) -> Array:
    """Draw the shift of :data:`AORTIC_ARCH_SHIFT_MM` and return how far (mm) each sample of
    ``aorta`` moves towards the left: the drawn distance times :func:`_arch_shift_weight`. Tubes
    sampled like the aorta (a diseased stretch's lumen) move alike; the root and the descending
    aorta stay put."""
    return d.u("aortic_arch_shift_mm", *AORTIC_ARCH_SHIFT_MM) * _arch_shift_weight(aorta)


def _moved_left(tube: _Tube, moved: Array) -> _Tube:
    """``tube`` with each point moved towards the left by ``moved`` (mm, per point or one for all)."""
    points = tube.points.copy()
    points[:, 0] += moved
    return _Tube(points, tube.radii, tube.gas)


def _moved_with_arch(branch: _Tube, aorta: _Tube, moved: Array) -> _Tube:
    """An arch branch moved by as much as the aorta (samples ``moved`` mm) moved where the branch
    leaves it, the move fading to none :data:`_ARCH_SHIFT_FADE_MM` above its origin."""
    origin = branch.points[0]
    nearest = int(np.argmin(np.linalg.norm(aorta.points - origin, axis=1)))
    fade = np.interp(branch.points[:, 2] - origin[2], [0.0, _ARCH_SHIFT_FADE_MM], [1.0, 0.0])
    return _moved_left(branch, moved[nearest] * fade)


def _pushed_clear(tube: _Tube, obstacle: _Tube, *, gap_mm: float, heights: tuple[float, float]) -> _Tube:
    """``tube`` with each point between ``heights`` (mm) moved sideways, in its axial plane, out of
    ``obstacle``, so that the two keep ``gap_mm`` between their walls: a vessel displaces the soft
    tube beside it."""
    points = tube.points.copy()
    for i, (p, r) in enumerate(zip(tube.points, tube.radii)):
        if not heights[0] < p[2] < heights[1]:
            continue
        near = np.abs(obstacle.points[:, 2] - p[2]) < 3.0
        for q, rq in zip(obstacle.points[near], obstacle.radii[near]):
            offset = points[i, :2] - q[:2]
            distance = float(np.hypot(*offset))
            clearance = r + rq + gap_mm
            if distance < clearance:
                direction = offset / distance if distance > 1e-6 else np.array([-1.0, 0.0])
                points[i, :2] = q[:2] + direction * clearance
    return _Tube(points, tube.radii, tube.gas)


# The mediastinum's unlabelled structures, as (tube, tissue, control points, radii): what
# surrounds the ascending aorta and the arch in a CT angiography (the pulmonary trunk and
# arteries, the SVC, the pulmonary veins, the arch's branches) and the airways.
_MEDIASTINUM: tuple[tuple[str, str, list[tuple[float, float, float]], list[float]], ...] = (
    ("pulmonary_trunk", "pulmonary_artery", [(22, -52, 318), (22, -40, 340), (16, -14, 356)], [13, 13, 12]),
    ("left_pulmonary_artery", "pulmonary_artery", [(16, -14, 356), (34, -2, 362), (50, 8, 358), (64, 14, 350)],
     [10, 9, 8, 7]),
    ("right_pulmonary_artery", "pulmonary_artery",
     [(16, -14, 356), (0, -6, 358), (-20, -4, 356), (-42, 0, 352), (-60, 6, 348)], [10, 10, 9, 8, 7]),
    ("superior_vena_cava", "superior_vena_cava", [(-34, -20, 445), (-33, -22, 400), (-31, -24, 360), (-26, -24, 320)],
     [9, 10, 10, 10]),
    ("left_brachiocephalic_vein", "superior_vena_cava", [(-33, -20, 442), (-5, -32, 450), (25, -28, 458),
                                                          (52, -16, 472)], [7, 7, 6.5, 6]),
    ("right_brachiocephalic_vein", "superior_vena_cava", [(-34, -20, 442), (-42, -16, 468), (-52, -10, 492)],
     [8, 7, 6]),
    ("brachiocephalic_trunk", "supra_aortic_artery", [(-2, -16, 398), (-12, -14, 430), (-22, -10, 460),
                                                       (-30, -4, 492)], [7, 6.5, 6, 5]),
    ("left_common_carotid_artery", "supra_aortic_artery", [(8, -8, 404), (14, -8, 440), (20, -6, 492)],
     [4.5, 4.5, 4.5]),
    ("left_subclavian_artery", "supra_aortic_artery", [(20, 4, 400), (30, 6, 440), (46, 8, 468), (72, 10, 480)],
     [5.5, 5, 5, 4.5]),
    ("left_superior_pulmonary_vein", "pulmonary_vein", [(56, 10, 332), (38, 6, 322), (22, 4, 314)], [6, 6, 6.5]),
    ("left_inferior_pulmonary_vein", "pulmonary_vein", [(52, 24, 306), (36, 14, 302), (20, 8, 298)], [5.5, 6, 6.5]),
    ("right_superior_pulmonary_vein", "pulmonary_vein", [(-52, 8, 332), (-32, 4, 322), (-14, 4, 316)], [6, 6, 6.5]),
    ("right_inferior_pulmonary_vein", "pulmonary_vein", [(-50, 22, 306), (-30, 14, 302), (-12, 10, 298)],
     [5.5, 6, 6.5]),
    ("trachea", "airway", [(-3, 4, 500), (-3, 2, 430), (-1, 4, 378), (1, 6, 364)], [9, 9, 9, 8]),
    ("left_main_bronchus", "airway", [(1, 6, 364), (26, 12, 352), (48, 18, 342)], [7, 6, 5]),
    ("right_main_bronchus", "airway", [(1, 6, 364), (-22, 8, 356), (-42, 12, 350)], [7, 7, 6]),
)
MEDIASTINAL_TISSUES: tuple[str, ...] = tuple(dict.fromkeys(tissue for _, tissue, _, _ in _MEDIASTINUM))
"""The tissues of the unlabelled mediastinal structures (tissue map only, label 0)."""


def _draw_mediastinum(d: _Draw, scale: float) -> dict[str, _Tube]:
    """The mediastinal tubes, jittered; a branch starts where its jittered parent ends."""
    tubes: dict[str, _Tube] = {}
    ends: dict[tuple[float, float, float], Array] = {}
    for key, _, points, radii in _MEDIASTINUM:
        control = d.jitter(points, 2.0)
        if points[0] in ends:  # a branch point shared with an earlier tube
            control[0] = ends[points[0]]
        ends.setdefault(points[-1], control[-1])
        ends.setdefault(points[0], control[0])
        tubes[key] = _tube(control, np.asarray(radii) * scale, step=4.0)
    return tubes


def _draw_lung_vessels(rng: np.random.Generator, side: float, n: int = 9) -> list[_Tube]:
    """A pulmonary vessel tree of one lung: ``n`` branches from the hilum, tapering outwards."""
    hilum = np.array([side * 58.0, 6.0, 346.0])
    out = []
    for _ in range(n):
        target = np.array([side * rng.uniform(50, 115), rng.uniform(-50, 75), rng.uniform(250, 440)])
        middle = (hilum + target) / 2 + rng.normal(0, 8, 3)
        out.append(_tube([hilum, middle, target], [4.5, 3.0, 1.5], step=3.0))
    return out


# --------------------------------------------------------------------------------------------
# Painting the subject, in priority order
# --------------------------------------------------------------------------------------------


def _paint_subject(canvas: _Canvas, subject: _Subject, *, perirenal_room_mm: float = 0.0) -> None:
    _paint_body(canvas, subject)
    if subject.arms is not None:
        _paint_arms(canvas, subject, subject.arms)
    if subject.table is not None:
        _paint_table(canvas, subject.table)
    _paint_skeleton(canvas, subject)
    _paint_muscles(canvas, subject)
    _paint_vessels(canvas, subject)
    _paint_organs(canvas, subject, perirenal_room_mm=perirenal_room_mm)


def _layers(core: _ZStack, fat: Array, skin: float) -> list[_ZStack]:
    """Outer surfaces of skin, subcutaneous fat and muscle core (fat thinner at the back)."""
    return [core.grown(fat + skin, posterior=0.8 * fat + skin), core.grown(fat, posterior=0.8 * fat), core]


def _paint_body(canvas: _Canvas, subject: _Subject) -> None:
    """Skin, subcutaneous fat, the muscle core and the visceral cavity, as nested layers; the
    trunk ends at the crotch, below which the two thighs carry the same layers."""
    core = subject.body
    layers = _layers(core, subject.fat, subject.skin)
    lo, hi = layers[0].bounds()
    thigh_layers = []
    for thigh in subject.thighs:
        z_table = np.arange(len(thigh.a)) * _TABLE_STEP + thigh.z0
        fat = np.interp(z_table, np.arange(len(core.a)) * _TABLE_STEP + core.z0, subject.fat)
        thigh_layers.append(_layers(thigh, fat, subject.skin))
        t_lo, t_hi = thigh_layers[-1][0].bounds()
        lo, hi = np.minimum(lo, t_lo), np.maximum(hi, t_hi)
    box = canvas.box(lo, hi)
    if box is None:
        return
    x, y, z = box.x, box.y, box.z
    # a voxel's layer is the number of nested surfaces it lies inside (0 air ... 4 cavity)
    level: Array = np.zeros(box.shape, dtype=np.uint8)
    trunk = z >= np.float32(subject.crotch_z)
    core_mask: Array = np.zeros((1, 1, 1), dtype=bool)
    for shape in layers:
        core_mask = shape.inside(x, y, z) & trunk
        level += np.broadcast_to(core_mask, box.shape).astype(np.uint8)
    level += np.broadcast_to(subject.cavity.inside(x, y, z) & core_mask, box.shape).astype(np.uint8)
    for stack in thigh_layers:
        local = canvas.sub(box, *stack[0].bounds())
        if local is None:
            continue
        tx, ty, tz = _take(x, local), _take(y, local), _take(z, local)
        below = tz < np.float32(subject.crotch_z)
        sub_level = level[local]
        count = np.zeros(sub_level.shape, dtype=np.uint8)
        for shape in stack:
            count += np.broadcast_to(shape.inside(tx, ty, tz) & below, count.shape).astype(np.uint8)
        np.maximum(sub_level, count, out=sub_level)  # the thighs may touch
    lut = np.array([TISSUE_INDEX[n] for n in ("air", "skin", "subcutaneous_fat", "muscle", "visceral_fat")],
                   dtype=np.uint8)
    np.copyto(canvas.tissue[box.index], lut[level], where=level > 0)
    # the diaphragm: a muscular sheet under the domes, inside the cavity
    c_lo, c_hi = subject.cavity.bounds()
    dbox = canvas.box(np.array([c_lo[0], c_lo[1], 150.0]), np.array([c_hi[0], c_hi[1], 285.0]))
    if dbox is not None:
        h = subject.diaphragm.height(dbox.x, dbox.y)
        canvas.paint(dbox, (dbox.z <= h) & (dbox.z > h - np.float32(5.0)), "muscle", _SOFT)


def _paint_arms(canvas: _Canvas, subject: _Subject, arms: tuple[_Arm, _Arm]) -> None:
    """Skin, fat and muscle of each arm where there is air (an arm touching the trunk leaves the
    trunk's skin as it is), then its bones: cortex in the muscle, fatty marrow inside. The bones
    take the ribs' tissues, which are no class: an arm is background in the labels."""
    for arm in arms:
        layers = _layers(arm.core, arm.fat, subject.skin)
        box = canvas.box(*layers[0].bounds())
        if box is None:
            continue
        level: Array = np.zeros(box.shape, dtype=np.uint8)
        for shape in layers:
            level += np.broadcast_to(shape.inside(box.x, box.y, box.z), box.shape).astype(np.uint8)
        lut = np.array([TISSUE_INDEX[n] for n in ("air", "skin", "subcutaneous_fat", "muscle")], dtype=np.uint8)
        view = canvas.tissue[box.index]
        np.copyto(view, lut[level], where=(level > 0) & (view == TISSUE_INDEX["air"]))
        for bone in arm.bones:
            canvas.paint(box, bone.inside(box.x, box.y, box.z), "rib_cortex", ("muscle",))
            canvas.paint(box, bone.grown(-_BONE_CORTEX_MM).inside(box.x, box.y, box.z), "rib_marrow", ("rib_cortex",))


def _paint_table(canvas: _Canvas, table: _Table) -> None:
    """Both shells where there is air, in the ribs' cortex (bright on CT, dark on MR like a real
    table's carbon fibre; no class)."""
    rise = table.radius - math.sqrt(table.radius**2 - table.half_width**2)  # the edges above the midline
    lo = np.array([-table.half_width, table.top_y - rise, -1000.0])
    hi = np.array([table.half_width, table.top_y + table.depth + table.thickness, 1500.0])
    box = canvas.box(lo, hi)
    if box is None:
        return
    surface = table.top_y - (table.radius - np.sqrt(table.radius**2 - np.minimum(box.x * box.x, table.half_width**2)))
    below = box.y - surface
    inside = np.abs(box.x) <= table.half_width
    for start in (0.0, table.depth):
        shell = inside & (below >= start) & (below <= start + table.thickness)
        canvas.paint(box, np.broadcast_to(shell, box.shape), "rib_cortex", ("air",))


def _paint_skeleton(canvas: _Canvas, subject: _Subject) -> None:
    """Bones overwrite whatever soft tissue is there (the ribs only the chest wall's muscle)."""
    _paint_spine(canvas, subject)
    if subject.ribs is not None:
        _paint_rib_cage(canvas, subject, subject.ribs)
    _fill(canvas, subject.sacrum, "sacrum_cortex")
    _fill(canvas, subject.sacrum.grown(-2.5), "sacrum_marrow", only_into=("sacrum_cortex",))
    _fill(canvas, subject.sacral_canal, "spinal_canal", only_into=("sacrum_cortex", "sacrum_marrow"))
    for name, parts in subject.pelvis.items():
        bone = f"{name}_hip"
        _fill_bone(canvas, parts.wing, bone, cortex_mm=1.8)
        _fill_bone(canvas, parts.acetabulum, bone)
        _fill_bone(canvas, parts.symphysis, bone)
        for ramus in parts.rami:
            _fill_tube(canvas, ramus, f"{bone}_cortex", only_into=None, wall=2.0, lumen=f"{bone}_marrow")
    for name, parts in subject.pelvis.items():
        femur = f"{name}_femur"
        _fill(canvas, parts.head.grown(2.5), "muscle")  # joint space and cartilage
        _fill_tube(canvas, parts.shaft, f"{femur}_cortex", only_into=None, wall=4.5, lumen=f"{femur}_marrow")
        _fill_tube(canvas, parts.neck, f"{femur}_cortex", only_into=None, wall=2.5, lumen=f"{femur}_marrow")
        for trochanter in parts.trochanters:
            _fill_bone(canvas, trochanter, femur)
        _fill_bone(canvas, parts.head, femur)


def _paint_spine(canvas: _Canvas, subject: _Subject) -> None:
    """Vertebral column from L5 upwards: bodies (cortex shell, marrow core) with discs between,
    the posterior arch around the spinal canal, spinous and transverse processes.

    The level of a point follows from its height through a continuous level coordinate, so the
    whole column is evaluated in one pass over its box.
    """
    sp = subject.spine
    centres = sp["centres"]
    zk = sp["z"]
    z_lo = centres[0] - 0.5 * (centres[1] - centres[0]) + 4.0
    lo = np.array([-62.0, float(np.min(sp["yb"] - sp["b"])) - 2, z_lo])
    hi = np.array([62.0, float(np.max(sp["yb"])) + 80.0, zk[-1]])
    box = canvas.box(lo, hi)
    if box is None:
        return
    x, y, z = box.x, box.y, box.z

    def prof(name: str, at: Array) -> Array:
        return np.interp(at, zk, sp[name]).astype(np.float32)

    levels = np.arange(len(centres), dtype=np.float64)
    pitch_table = np.gradient(centres)

    def phase(at: Array) -> tuple[Array, Array]:
        s = np.interp(at, centres, levels).astype(np.float32)
        p = np.interp(at, centres, pitch_table).astype(np.float32)
        return (s - np.round(s)) * p, p  # signed distance (mm) to the nearest body centre, pitch

    dz, pitch = phase(z)
    zmask = z >= np.float32(z_lo)
    yb, a, b = prof("yb", z), prof("a", z), prof("b", z)
    half = 0.5 * (pitch - prof("disc", z))
    ex, ey = x / a, (y - yb) / b
    column = (ex * ex + ey * ey <= 1.0) & zmask
    canvas.paint(box, column, "muscle")  # intervertebral discs (fibrocartilage: no tissue of its own)
    body = column & (np.abs(dz) <= half)
    canvas.paint(box, body, "spine_cortex")
    ex, ey = x / (a - 2.2), (y - yb) / (b - 2.2)
    canvas.paint(box, body & (ex * ex + ey * ey <= 1.0) & (np.abs(dz) <= half - 2.0), "spine_marrow")

    # posterior arch (pedicles and laminae) around the canal
    rcx, rcy = prof("rcx", z), prof("rcy", z)
    yk = yb + b + rcy + 1.0
    t = np.float32(5.5)
    cx, cy = x / rcx, (y - yk) / rcy
    canal = cx * cx + cy * cy <= 1.0
    ux, uy = x / (rcx + t), (y - yk) / (rcy + t)
    arch_half = 0.36 * pitch
    arch = (ux * ux + uy * uy <= 1.0) & (np.abs(dz) <= arch_half) & zmask
    canvas.paint(box, arch, "spine_cortex")
    ux, uy = x / (rcx + t - 2.0), (y - yk) / (rcy + t - 2.0)
    cx, cy = x / (rcx + 2.0), (y - yk) / (rcy + 2.0)
    canvas.paint(box, arch & (ux * ux + uy * uy <= 1.0) & (cx * cx + cy * cy > 1.0) & (np.abs(dz) <= arch_half - 2.0),
                 "spine_marrow")
    # spinous process: a blade behind the arch, sloping downwards (steeply in the thorax)
    along = y - (yk + rcy + t - 3.0)
    length = prof("sp", z)
    frac = along / length
    dz_s, p_s = phase(z + along * prof("sp_tilt", z))
    blade_z = (0.22 - 0.08 * frac) * p_s
    blade = (along >= 0) & (frac <= 1.0) & (np.abs(x) <= 4.0 - 1.5 * frac) & (np.abs(dz_s) <= blade_z) & zmask
    canvas.paint(box, blade, "spine_cortex")
    canvas.paint(box, blade & (np.abs(x) <= 2.5 - 1.5 * frac) & (np.abs(dz_s) <= blade_z - 1.5) & (frac < 0.9),
                 "spine_marrow")
    # transverse processes: bars out to both sides at the arch, sloping back in the thorax
    reach = np.abs(x) - (rcx + t - 2.0)
    tp_len = prof("tp", z)
    dy_tp = np.abs(y - yk - prof("tp_slope", z) * np.maximum(reach, 0))
    tp = (reach >= 0) & (reach <= tp_len) & (dy_tp <= 5.5) & (np.abs(dz) <= 6.0) & zmask
    canvas.paint(box, tp, "spine_cortex")
    canvas.paint(box, tp & (reach <= tp_len - 2.0) & (dy_tp <= 3.5) & (np.abs(dz) <= 4.0), "spine_marrow")
    canvas.paint(box, canal & zmask, "spinal_canal")


def _paint_rib_cage(canvas: _Canvas, subject: _Subject, ribs: _RibCage) -> None:
    """Twelve pairs of ribs and the sternum in the chest wall's muscle, just outside the body
    cavity (in the thorax the parietal pleura, lower down the peritoneum over the liver and spleen)
    and in front of the back muscles.

    A rib is a band of the wall at an angle ``phi`` round the cavity's centre (0 at the back, 180
    degrees at the front): its back end beside a thoracic vertebra's body, at that vertebra's
    height, and every point of it ``drop (1 - cos phi) / 2`` lower, so that it slopes down to the
    front. Each rib ends at its angle in :data:`_RIB_ENDS_DEG` (the floating 11th and 12th at the
    flank) and turns to costal cartilage from :data:`_RIB_CARTILAGE_DEG` on; the upper seven reach
    the sternum, a plate at the front from the first rib's to below the seventh rib's front end.
    """
    cavity, centres = subject.cavity, subject.spine["centres"]
    thoracic = centres[_FIRST_THORACIC:_FIRST_THORACIC + 12]  # T12 ... T1, upwards
    gap, cortex = _RIB_GAP_MM, _RIB_CORTEX_MM
    outer = cavity.grown(gap + ribs.thickness)
    lo, hi = outer.bounds()
    lo[2] = thoracic[0] - ribs.drop - ribs.height
    hi[2] = min(hi[2], thoracic[-1] + ribs.height)
    box = canvas.box(lo, hi)
    if box is None:
        return
    x, y, z = box.x, box.y, box.z
    wall = outer.inside(x, y, z) & ~cavity.grown(gap).inside(x, y, z)
    for side in ("left", "right"):  # the back muscles, painted later, lie behind the ribs
        wall &= ~subject.muscles[f"{side}_autochthonous_muscle"].inside(x, y, z)
    core = cavity.grown(gap + ribs.thickness - cortex).inside(x, y, z) & ~cavity.grown(gap + cortex).inside(x, y, z)
    centre_x, centre_y = cavity.centre(z)
    across, behind = x - centre_x, y - centre_y
    phi = np.degrees(np.arctan2(np.abs(across), behind)).astype(np.float32)
    # height along the rib's slope: constant along one rib, its back end's height; the short upper
    # ribs drop less
    drop = ribs.drop * np.interp(z, thoracic[[-3, -1]], [1.0, _UPPER_RIB_DROP]).astype(np.float32)
    along = z + drop / 2 * (1.0 - np.cos(np.radians(phi)))
    level = np.interp(along, thoracic, np.arange(12.0)).astype(np.float32)
    nearest = np.clip(np.round(level), 0, 11).astype(np.intp)
    off = np.abs(along - thoracic[nearest].astype(np.float32))
    number = 12 - nearest  # the 12th rib at T12 ... the first at T1
    ends = np.asarray(_RIB_ENDS_DEG, dtype=np.float32)[number - 1]
    rib = wall & (off <= ribs.height / 2) & (phi >= _RIB_START_DEG) & (phi <= ends)
    rib &= (along >= thoracic[0] - ribs.height / 2) & (along <= thoracic[-1] + ribs.height / 2)
    cartilage = rib & (phi >= _RIB_CARTILAGE_DEG)
    canvas.paint(box, rib & ~cartilage, "rib_cortex", ("muscle",))
    canvas.paint(box, rib & ~cartilage & core & (off <= ribs.height / 2 - cortex), "rib_marrow", ("rib_cortex",))
    canvas.paint(box, cartilage, "costal_cartilage", ("muscle",))
    # the sternum: from the first rib's front end to 30 mm below the seventh's (the xiphoid)
    top, bottom = thoracic[-1] - _UPPER_RIB_DROP * ribs.drop + ribs.height, thoracic[-7] - ribs.drop - 30.0
    plate = wall & (behind < 0) & (np.abs(across) <= ribs.sternum_half_width)
    plate &= (z >= np.float32(bottom)) & (z <= np.float32(top))
    canvas.paint(box, plate, "rib_cortex", ("muscle", "costal_cartilage"))
    canvas.paint(box, plate & core & (np.abs(across) <= ribs.sternum_half_width - cortex), "rib_marrow",
                 ("rib_cortex",))


def _paint_muscles(canvas: _Canvas, subject: _Subject) -> None:
    """Skeletal muscles claim the generic muscle (and, for the psoas and back muscles, the
    retroperitoneal fat) they lie in, never bone."""
    for tissue, shape in subject.muscles.items():
        into = ("muscle",) if "gluteus" in tissue else _SOFT_OR_MUSCLE
        _fill(canvas, shape, tissue, only_into=into)


def _outside(shape: _Shape) -> Clip:
    """A clip keeping what lies outside ``shape``."""
    def outside(x: Array, y: Array, z: Array) -> Array:
        return ~shape.inside(x, y, z)

    return outside


def _between_heights(z0: float, z1: float) -> Clip:
    """A clip keeping what lies between the heights ``z0`` and ``z1`` (mm, subject frame)."""
    def between(x: Array, y: Array, z: Array) -> Array:
        return (z > np.float32(z0)) & (z < np.float32(z1))

    return between


def _all_of(*clips: Clip) -> Clip:
    """A clip keeping what every one of ``clips`` keeps."""
    def all_of(x: Array, y: Array, z: Array) -> Array:
        mask = clips[0](x, y, z)
        for clip in clips[1:]:
            mask = mask & clip(x, y, z)
        return mask

    return all_of


def _paint_vessels(canvas: _Canvas, subject: _Subject) -> None:
    for tissue in ("aorta", "inferior_vena_cava", "left_iliac_artery", "right_iliac_artery", "left_iliac_vena",
                   "right_iliac_vena", "portal_vein_and_splenic_vein", "esophagus"):
        _fill_tube(canvas, subject.tubes[tissue], tissue, only_into=_SOFT_OR_MUSCLE)
        if tissue == "aorta" and subject.aortic_disease is not None:
            # thrombus fills the diseased stretch, then the open lumen is cut back out of it
            disease = subject.aortic_disease
            _fill_tube(canvas, subject.tubes["aorta"], "aortic_thrombus", only_into=("aorta",),
                       clips=[_between_heights(*disease.heights)])
            _fill_tube(canvas, disease.lumen, "aorta", only_into=("aortic_thrombus",),
                       clips=[disease.lumen_side] if disease.lumen_side is not None else [])
    # the labelled vessels win where an unlabelled one would touch them; the heart keeps its shape
    outside_pericardium = _outside(subject.organs["pericardium"])
    for key, tissue, _, _ in _MEDIASTINUM:
        _fill_tube(canvas, subject.tubes[key], tissue, only_into=_SOFT_OR_MUSCLE, clips=[outside_pericardium])


def _paint_organs(canvas: _Canvas, subject: _Subject, *, perirenal_room_mm: float = 0.0) -> None:
    """Solid organs, then hollow ones, then the small bowel and lungs that fill what is left;
    each claims only visceral fat, so an earlier organ wins where two would touch. The kidneys
    keep a margin of perirenal fat that no later organ claims, and with ``perirenal_room_mm``
    the left one's fat raised by so many mm too, kept free of every later organ but the spleen,
    which keeps its whole shape lateral to the room."""
    organs, tubes = subject.organs, subject.tubes
    below = subject.diaphragm.below(5.0)
    _fill(canvas, organs["heart"], "heart_myocardium", only_into=_SOFT, clips=[subject.diaphragm.above(0.5)])
    _fill(canvas, organs["heart_blood_pool"], "heart", only_into=("heart_myocardium",),
          clips=[subject.diaphragm.above(0.5 + HEART_WALL_MM)])  # the wall stays where it rests on the diaphragm
    for name in ("left", "right"):
        cortex, medulla = f"{name}_kidney_cortex", f"{name}_kidney_medulla"
        _fill(canvas, organs[cortex], cortex, only_into=_SOFT, clips=[below])
        _fill(canvas, organs[medulla], medulla, only_into=(cortex,))
        _fill(canvas, organs[f"{name}_kidney_sinus"], "visceral_fat", only_into=(cortex, medulla))
        adrenal = f"{name}_adrenal_gland"
        _fill(canvas, organs[adrenal], adrenal, only_into=_SOFT, clips=[below])
    # the organs painted from here on stay below the diaphragm and outside the perirenal fat
    below = below_rings = _all_of(below, *(_outside(organs[f"{name}_perirenal_fat"]) for _, name in _SIDES))
    if perirenal_room_mm > 0:  # on the left only: above the right kidney lie the liver's bare area and the adrenal
        fat = cast(_Ellipsoid, organs["left_perirenal_fat"])
        room = replace(fat, centre=fat.centre + np.array([0.0, 0.0, perirenal_room_mm]))
        below = _all_of(below_rings, _outside(room))
    _fill(canvas, organs["gallbladder"], "gallbladder", only_into=_SOFT, clips=[below])
    tip, slope = subject.liver_floor

    def above_floor(x: Array, y: Array, z: Array) -> Array:
        # the inferior surface: lowest at the front of the right lobe, rising medially and backwards
        floor = np.float32(tip) + np.float32(slope) * (x + np.float32(60.0)) + np.float32(0.3) * (y + np.float32(20.0))
        return z > floor

    _fill(canvas, organs["liver"], "liver", only_into=_SOFT, clips=[below, above_floor])
    # the spleen is not clipped by the room: clipped, it lost 21-55 % of itself (seeds 9100-9111, 35 mm)
    # and networks trained on such spleens drew the real one too small
    _fill(canvas, organs["spleen"], "spleen", only_into=_SOFT, clips=[below_rings])
    _fill_tube(canvas, tubes["pancreas"], "pancreas", clips=[below])
    _fill_tube(canvas, tubes["stomach"], "stomach_wall", wall=4.0, lumen="stomach_content", gas="bowel_gas",
               clips=[below])
    _fill_tube(canvas, tubes["duodenum"], "duodenum", clips=[below])
    _fill(canvas, organs["urinary_bladder"], "urinary_bladder", only_into=_SOFT)
    _fill_tube(canvas, tubes["colon"], "colon_wall", wall=3.0, lumen="colon_content", gas="bowel_gas", clips=[below])
    _paint_small_bowel(canvas, subject, below)
    _paint_lungs(canvas, subject)


def _paint_small_bowel(canvas: _Canvas, subject: _Subject, below: Clip) -> None:
    """Loops of small bowel: level sets of a smooth random field inside the mid/lower abdomen,
    with thin seams of mesenteric fat between loops and a little gas."""
    region = subject.organs["small_bowel"]
    box = canvas.box(*region.bounds())
    if box is None:
        return
    x, y, z = box.x, box.y, box.z
    bowel = subject.bowel

    def field(waves: Array, phases: Array) -> Array:
        out: Array = np.zeros((1, 1, 1), np.float32)
        for w, ph in zip(waves, phases):
            out = out + np.cos(x * np.float32(w[0]) + y * np.float32(w[1]) + z * np.float32(w[2]) + np.float32(ph))
        return out * np.float32(np.sqrt(2.0 / len(phases)))

    mask = region.inside(x, y, z) & below(x, y, z)
    g = field(bowel.waves, bowel.phases)
    canvas.paint(box, mask & (g > -0.9), "small_bowel_wall", _SOFT)
    lumen = mask & (g > -0.35)
    canvas.paint(box, lumen, "small_bowel_content", ("small_bowel_wall",))
    h = field(bowel.gas_waves, bowel.gas_phases)
    canvas.paint(box, lumen & (g > 0.6) & (h > np.float32(1.8 - 6.5 * bowel.gas)), "bowel_gas",
                 ("small_bowel_content",))


def _paint_lungs(canvas: _Canvas, subject: _Subject) -> None:
    """Lungs fill what is left of the thoracic cavity above the diaphragm, outside the mediastinum."""
    outside_pericardium = _outside(subject.organs["pericardium"])
    above = subject.diaphragm.above(1.0)
    for side, name in _SIDES:
        def lateral(x: Array, y: Array, z: Array, side: float = side) -> Array:
            return x * np.float32(side) > np.float32(10.0)

        tissue = f"{name}_lung"
        _fill(canvas, subject.lungs[tissue], tissue, only_into=_SOFT, clips=[above, lateral, outside_pericardium])
        for vessel in subject.lung_vessels[tissue]:
            _fill_tube(canvas, vessel, f"{tissue}_vessels", only_into=(tissue,))
