"""The analytic phantom anatomy: positions in world coordinates, volumes, grids and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.io.image import Geometry, Image
from mrseg.io.orientation import orientation_code, plan_reorientation
from mrseg.phantom.anatomy import FOVS, MEDIASTINAL_TISSUES, Anatomy, default_grid, generate_anatomy
from mrseg.phantom.tissues import TISSUE_INDEX, TISSUES, to_classes

SEEDS = (0, 1, 2, 3, 4)

# Plausible adult volumes (litres) of each class in the trunk field of view (apices to upper femur).
VOLUME_RANGES: dict[str, tuple[float, float]] = {
    "spleen": (0.1, 0.5),
    "right_kidney": (0.1, 0.3),
    "left_kidney": (0.1, 0.3),
    "gallbladder": (0.01, 0.08),
    "liver": (1.0, 2.5),
    "stomach": (0.1, 1.0),
    "pancreas": (0.04, 0.15),
    "right_adrenal_gland": (0.002, 0.02),
    "left_adrenal_gland": (0.002, 0.02),
    "left_lung": (1.0, 3.5),
    "right_lung": (1.0, 3.5),
    "heart": (0.4, 1.2),
    "aorta": (0.05, 0.25),
    "inferior_vena_cava": (0.03, 0.15),
    "portal_vein_and_splenic_vein": (0.008, 0.05),
    "left_iliac_artery": (0.003, 0.03),
    "right_iliac_artery": (0.003, 0.03),
    "left_iliac_vena": (0.005, 0.04),
    "right_iliac_vena": (0.005, 0.04),
    "esophagus": (0.015, 0.08),
    "small_bowel": (0.4, 2.0),
    "duodenum": (0.03, 0.2),
    "colon": (0.3, 2.0),
    "urinary_bladder": (0.05, 0.5),
    "spine": (0.2, 0.8),
    "sacrum": (0.08, 0.35),
    "left_hip": (0.15, 0.5),
    "right_hip": (0.15, 0.5),
    "left_femur": (0.08, 0.35),  # head, neck, trochanters and ~12 cm of shaft
    "right_femur": (0.08, 0.35),
    "left_autochthonous_muscle": (0.3, 1.2),
    "right_autochthonous_muscle": (0.3, 1.2),
    "left_iliopsoas_muscle": (0.15, 0.6),
    "right_iliopsoas_muscle": (0.15, 0.6),
    "left_gluteus_maximus": (0.4, 1.5),
    "right_gluteus_maximus": (0.4, 1.5),
    "left_gluteus_medius": (0.1, 0.5),
    "right_gluteus_medius": (0.1, 0.5),
    "left_gluteus_minimus": (0.03, 0.2),
    "right_gluteus_minimus": (0.03, 0.2),
}

PAIRS = sorted({c.name[len("left_"):] for c in BASE.classes if c.name.startswith("left_")})


def idx(name: str) -> int:
    return BASE.index_of(name)


def class_stats(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Volume (litres) and world (LPS) centroid of every label 0..40, centroids through the affine."""
    lab = image.array
    flat = lab.ravel()
    counts = np.bincount(flat, minlength=41).astype(np.float64)
    centroid_vox = np.zeros((41, 3))
    for axis_np in range(3):
        shape = [1, 1, 1]
        shape[axis_np] = lab.shape[axis_np]
        ramp = np.broadcast_to(np.arange(lab.shape[axis_np], dtype=np.float64).reshape(shape), lab.shape)
        centroid_vox[:, 2 - axis_np] = np.bincount(flat, weights=ramp.ravel(), minlength=41) / np.maximum(counts, 1)
    affine = image.geometry.affine_lps
    world = centroid_vox @ affine[:3, :3].T + affine[:3, 3]
    world[counts == 0] = np.nan
    return counts * float(np.prod(image.geometry.spacing)) / 1e6, world


def world_points(image: Image, label: int) -> np.ndarray:
    """World (LPS) positions of the voxels carrying ``label``, (n, 3)."""
    kji = np.argwhere(image.array == label)
    affine = image.geometry.affine_lps
    return kji[:, ::-1] @ affine[:3, :3].T + affine[:3, 3]


@pytest.fixture(scope="module")
def trunk() -> dict[int, Anatomy]:
    return {seed: generate_anatomy(seed=seed, fov="trunk", spacing=(2.0, 2.0, 2.0)) for seed in SEEDS}


@pytest.fixture(scope="module")
def trunk_stats(trunk: dict[int, Anatomy]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: class_stats(a.labels) for seed, a in trunk.items()}


# ---- the grid helpers --------------------------------------------------------------------------


def test_default_grid_covers_each_field_of_view():
    trunk = default_grid("trunk", spacing=(2.0, 2.0, 2.0))
    assert trunk.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    depth, rows, cols = trunk.shape
    assert 160 <= cols <= 180 and 120 <= rows <= 140 and 320 <= depth <= 360  # ~340 x 260 x 700 mm
    for fov in FOVS:
        grid = default_grid(fov, spacing=(3.0, 2.5, 4.0))
        assert grid.spacing == (3.0, 2.5, 4.0)
        top = grid.origin[2] + (grid.shape[0] - 1) * 4.0
        assert trunk.origin[2] - 4 <= grid.origin[2] and top <= trunk.origin[2] + (depth - 1) * 2.0 + 4


def test_unknown_fov_and_bad_arguments_are_refused():
    with pytest.raises(InputError, match="unknown field of view 'legs'; valid: thorax, abdomen, pelvis, trunk"):
        default_grid("legs")
    with pytest.raises(InputError, match="unknown field of view"):
        generate_anatomy(seed=0, fov="head")
    with pytest.raises(InputError, match="spacing must be three positive numbers"):
        default_grid("trunk", spacing=(2.0, 0.0, 2.0))
    with pytest.raises(InputError, match="seed must be a non-negative integer, got 1.5"):
        generate_anatomy(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="seed must be a non-negative integer, got -3"):
        generate_anatomy(seed=-3)


# ---- one map, valid labels, all classes ----------------------------------------------------------


def test_tissue_map_is_one_valid_uint8_map_with_every_class(trunk: dict[int, Anatomy]):
    for anatomy in trunk.values():
        tissues = anatomy.tissues
        assert tissues.array.dtype == np.uint8
        assert tissues.geometry.same_grid(default_grid("trunk"))
        assert int(tissues.array.max()) < len(TISSUES)
        labels = anatomy.labels
        assert labels.array.dtype == np.uint8 and labels.geometry is tissues.geometry
        present = set(np.unique(labels.array).tolist())
        assert present == set(range(41)), f"missing classes: {sorted(set(range(41)) - present)}"


def test_parameters_are_json_floats(trunk: dict[int, Anatomy]):
    params = trunk[0].parameters
    assert {"height_scale", "width_scale", "subcutaneous_fat_mm", "visceral_fat", "bladder_fill"} <= set(params)
    assert all(isinstance(v, float) for v in params.values())
    assert json.loads(json.dumps(params)) == params


# ---- volumes ---------------------------------------------------------------------------------------


def test_volumes_are_plausible_adult_volumes(trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    assert set(VOLUME_RANGES) == set(BASE.names)
    problems = []
    for seed, (volumes, _) in trunk_stats.items():
        for name, (lo, hi) in VOLUME_RANGES.items():
            v = volumes[idx(name)]
            if not lo <= v <= hi:
                problems.append(f"seed {seed}: {name} {v:.4f} L not in [{lo}, {hi}]")
    assert not problems, "\n".join(problems)


def test_subjects_vary_in_size(trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    volumes = np.array([v for v, _ in trunk_stats.values()])
    for name in ("liver", "spleen", "urinary_bladder", "heart", "left_kidney"):
        column = volumes[:, idx(name)]
        assert column.max() / column.min() > 1.1, name


# ---- anatomy in world coordinates -------------------------------------------------------------------


def test_left_and_right_organs_lie_on_their_side(trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    assert len(PAIRS) == 12  # kidneys, adrenals, lungs, iliac arteries and veins, hips, femurs, 5 muscles
    for seed, (_, c) in trunk_stats.items():
        assert c[idx("liver"), 0] < 0 < c[idx("spleen"), 0], seed  # LPS: patient right is x < 0
        assert c[idx("stomach"), 0] > 0, seed
        for pair in PAIRS:
            left, right = c[idx(f"left_{pair}"), 0], c[idx(f"right_{pair}"), 0]
            assert right < 0 < left, f"seed {seed}: {pair} right x={right:.1f}, left x={left:.1f}"


def test_organ_relations(trunk: dict[int, Anatomy], trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    for seed, (_, c) in trunk_stats.items():
        x, y, z = c[:, 0], c[:, 1], c[:, 2]
        body = world_points(trunk[seed].tissues.with_array((trunk[seed].tissues.array > 0).astype(np.uint8)), 1)
        body_y = body[:, 1].mean()
        for kidney in ("left_kidney", "right_kidney"):
            assert y[idx(kidney)] > y[idx("liver")] and y[idx(kidney)] > body_y, (seed, kidney)  # posterior
        for lung in ("left_lung", "right_lung"):
            assert z[idx(lung)] > z[idx("liver")], (seed, lung)
        assert x[idx("aorta")] > x[idx("inferior_vena_cava")], seed  # aorta left of the IVC
        assert y[idx("spine")] > y[idx("aorta")], seed  # spine behind the aorta
        assert y[idx("esophagus")] > y[idx("heart")], seed  # oesophagus behind the heart
        assert x[idx("gallbladder")] < 0 and z[idx("gallbladder")] < z[idx("liver")], seed
        assert y[idx("sacrum")] > y[idx("urinary_bladder")], seed
        for femur in ("left_femur", "right_femur"):
            assert z[idx(femur)] < z[idx(femur.replace("femur", "hip"))], (seed, femur)
        for side in ("left", "right"):
            assert y[idx(f"{side}_gluteus_maximus")] > y[idx(f"{side}_gluteus_medius")], (seed, side)
            assert y[idx(f"{side}_autochthonous_muscle")] > y[idx("spine")], (seed, side)
        # the heart sits on the diaphragm: above the liver dome's centre, nothing of it below the liver centroid
        heart = world_points(trunk[seed].labels, idx("heart"))
        assert heart[:, 2].min() > z[idx("liver")] and z[idx("heart")] > z[idx("liver")] + 60, seed
        # the bladder is the lowest abdominal organ, in the pelvis below the aortic bifurcation
        bifurcation = world_points(trunk[seed].labels, idx("aorta"))[:, 2].min()
        abdominal = ("liver", "spleen", "stomach", "pancreas", "gallbladder", "left_kidney", "right_kidney",
                     "duodenum", "small_bowel", "colon")
        assert all(z[idx("urinary_bladder")] < z[idx(o)] for o in abdominal), seed
        assert z[idx("urinary_bladder")] < bifurcation < z[idx("left_kidney")], seed
        assert abs(x[idx("urinary_bladder")]) < 20 and y[idx("urinary_bladder")] < y[idx("sacrum")], seed
        # the iliac arteries leave the aorta downwards
        for artery in ("left_iliac_artery", "right_iliac_artery"):
            assert z[idx(artery)] < bifurcation, (seed, artery)


def test_mediastinum_surrounds_the_aorta_with_unlabelled_vessels_and_airways():
    """A CT angiography's aorta lies among the pulmonary trunk, the SVC and the arch's branches:
    the phantom draws them (label 0) and the pulmonary vessel tree inside the lungs (lung label)."""
    for seed in (3, 7):
        anatomy = generate_anatomy(seed=seed, fov="thorax", spacing=(2.0, 2.0, 2.0))
        tissues, labels = anatomy.tissues.array, anatomy.labels.array
        aorta_nearby = ndimage.binary_dilation(labels == idx("aorta"), iterations=2)
        for name in MEDIASTINAL_TISSUES:
            voxels = tissues == TISSUE_INDEX[name]
            assert voxels.sum() * 8e-6 > 0.002, (seed, name)  # over 2 ml each
            assert not labels[voxels].any(), (seed, name)
        for name in ("pulmonary_artery", "superior_vena_cava", "supra_aortic_artery"):
            assert (aorta_nearby & (tissues == TISSUE_INDEX[name])).any(), (seed, name)  # they touch the aorta
        centre = {name: world_points(anatomy.tissues, TISSUE_INDEX[name]).mean(axis=0)
                  for name in ("superior_vena_cava", "pulmonary_artery", "airway")}
        assert centre["superior_vena_cava"][0] < -15  # on the right
        assert abs(centre["airway"][0]) < 15 and centre["airway"][2] > 360  # midline, above the carina
        for side in ("left", "right"):
            vessels = tissues == TISSUE_INDEX[f"{side}_lung_vessels"]
            assert vessels.sum() * 8e-6 > 0.005, (seed, side)
            assert (labels[vessels] == idx(f"{side}_lung")).all(), (seed, side)
        # the labelled heart keeps its shape: no unlabelled vessel inside it
        assert not np.isin(tissues[ndimage.binary_erosion(labels == idx("heart"), iterations=2)],
                           [TISSUE_INDEX[n] for n in MEDIASTINAL_TISSUES]).any(), seed


def test_the_heart_is_a_blood_pool_inside_a_wall_of_myocardium(trunk: dict[int, Anatomy]):
    """A CT angiography shows the heart as bright blood (like the aorta's) inside a darker wall:
    the phantom's heart class is the myocardium all round and the blood pool within it."""
    from mrseg.phantom.anatomy import HEART_WALL_MM

    for seed, anatomy in trunk.items():
        tissues, labels = anatomy.tissues.array, anatomy.labels.array
        heart = labels == idx("heart")
        blood, wall = tissues == TISSUE_INDEX["heart"], tissues == TISSUE_INDEX["heart_myocardium"]
        assert (blood | wall)[heart].all() and not (blood | wall)[~heart].any(), seed
        assert 0.45 < blood.sum() / heart.sum() < 0.7, seed  # the chambers' share of the heart's volume
        # the wall is all round: blood reaches the heart's border (within HEART_WALL_MM / 2) only where
        # a tube painted before it crosses the outline (the aortic root, the IVC, the oesophagus behind)
        reach = int(HEART_WALL_MM / 2 / 2.0)  # voxels of 2 mm
        rim = heart & ~ndimage.binary_erosion(heart, iterations=reach)
        tubes = np.isin(tissues, [TISSUE_INDEX[n] for n in ("aorta", "inferior_vena_cava", "esophagus")])
        near_tubes = ndimage.binary_dilation(tubes, iterations=2 * reach)
        assert (blood & rim).any() and not (blood & rim & ~near_tubes).any(), seed
        pieces, _ = ndimage.label(blood)
        assert np.bincount(pieces.ravel())[1:].max() > 0.95 * blood.sum(), seed  # one pool (a tube may nick it)


def test_a_diseased_aorta_is_an_open_lumen_inside_thrombus_and_still_the_aorta():
    """Some subjects' descending aorta is dilated and lined by thrombus, as in an aneurysm or a
    dissection's thrombosed false lumen: a CT angiography shows a bright lumen inside a grey vessel
    that is still labelled aorta. Healthy subjects have none."""
    from mrseg.phantom.anatomy import AORTIC_DISEASE_SHARE

    thrombus_tissue, lumen_tissue = TISSUE_INDEX["aortic_thrombus"], TISSUE_INDEX["aorta"]
    diseased = 0
    for seed in range(12):
        anatomy = generate_anatomy(seed=seed, fov="abdomen", spacing=(3.0, 3.0, 3.0))
        tissues, labels, parameters = anatomy.tissues.array, anatomy.labels.array, anatomy.parameters
        thrombus = tissues == thrombus_tissue
        if parameters["aortic_disease"] >= AORTIC_DISEASE_SHARE:
            assert not thrombus.any(), seed
            continue
        diseased += 1
        aorta = labels == idx("aorta")
        assert thrombus.sum() * 27e-3 > 3.0, seed  # mL: a stretch of thrombus, not a few voxels
        assert aorta[thrombus].all(), seed  # thrombus is part of the aorta class
        # in every axial slice with thrombus the lumen stays open and lies inside the vessel
        for z in np.flatnonzero(thrombus.any(axis=(1, 2))):
            lumen = tissues[z] == lumen_tissue
            assert lumen.any(), (seed, z)
            assert (ndimage.binary_dilation(lumen) & thrombus[z]).any(), (seed, z)  # the lumen lies in the thrombus
        # dilated: the widest slice of the stretch is wider than the aorta's median slice elsewhere
        area = aorta.sum(axis=(1, 2))
        stretch = thrombus.any(axis=(1, 2))
        assert area[stretch].max() > 1.1 * np.median(area[~stretch & (area > 0)]), seed
    assert 1 <= diseased <= 8  # about AORTIC_DISEASE_SHARE of 12 subjects


def test_aortic_disease_changes_nothing_but_the_aorta(monkeypatch):
    """The same subject drawn with and without the disease differs only where the dilated aorta
    and its thrombus are: a diseased subject keeps all its other organs and parameters."""
    from mrseg.phantom import anatomy as anatomy_module

    seed = 1  # a diseased subject (parameters["aortic_disease"] < AORTIC_DISEASE_SHARE)
    diseased = generate_anatomy(seed=seed, fov="abdomen", spacing=(4.0, 4.0, 4.0))
    assert diseased.parameters["aortic_disease"] < anatomy_module.AORTIC_DISEASE_SHARE
    monkeypatch.setattr(anatomy_module, "AORTIC_DISEASE_SHARE", 0.0)
    healthy = generate_anatomy(seed=seed, fov="abdomen", spacing=(4.0, 4.0, 4.0))
    changed = diseased.tissues.array != healthy.tissues.array
    assert changed.any()
    vessel = [TISSUE_INDEX["aorta"], TISSUE_INDEX["aortic_thrombus"]]
    assert np.isin(diseased.tissues.array[changed], vessel).all()
    assert not np.isin(healthy.tissues.array, [TISSUE_INDEX["aortic_thrombus"]]).any()
    assert diseased.parameters == healthy.parameters


def test_a_layered_lumen_is_a_cap_along_one_wall_cut_off_by_a_straight_border():
    """In some diseased aortas the open lumen is a segment of the vessel's section (a dissection's
    true lumen beside the false one, or contrast layered over unenhanced blood): at the stretch's
    middle the bright lumen and the grey rest of the vessel lie on either side of a straight
    border across the drawn direction, the lumen taking about the drawn share of the diameter."""
    from mrseg.phantom.anatomy import AORTIC_DISEASE_SHARE, AORTIC_LAYERED_LUMEN_SHARE

    lumen_tissue, thrombus_tissue = TISSUE_INDEX["aorta"], TISSUE_INDEX["aortic_thrombus"]
    kinds = {"layered": 0, "disc": 0}
    for seed in (1, 6, 8, 12, 14):  # the diseased subjects among seeds 0-14
        anatomy = generate_anatomy(seed=seed, fov="abdomen", spacing=(1.5, 1.5, 1.5))
        tissues, parameters = anatomy.tissues.array, anatomy.parameters
        assert parameters["aortic_disease"] < AORTIC_DISEASE_SHARE, seed
        layered = parameters["aortic_lumen_layered"] < AORTIC_LAYERED_LUMEN_SHARE
        kinds["layered" if layered else "disc"] += 1
        thrombus = tissues == thrombus_tissue
        z = int(np.argmax(thrombus.sum(axis=(1, 2))))  # near the stretch's middle
        pieces, _ = ndimage.label(thrombus[z] | (tissues[z] == lumen_tissue))
        vessel = pieces == pieces[thrombus[z]].max()  # the diseased aorta's section
        lumen, rest = vessel & (tissues[z] == lumen_tissue), vessel & thrombus[z]
        angle = parameters["aortic_layer_angle_rad"]
        # (row, column) = (y, x): the projection of each voxel on the drawn direction, mm
        towards = np.array([np.sin(angle), np.cos(angle)]) * 1.5
        along_lumen, along_rest = np.argwhere(lumen) @ towards, np.argwhere(rest) @ towards
        separated = np.mean(along_lumen[:, None] > along_rest[None, :])
        if layered:
            assert separated > 0.99, (seed, separated)  # one side of a straight border
            extent = np.ptp(np.concatenate([along_lumen, along_rest]))
            cap = np.ptp(along_lumen) / extent
            assert abs(cap - parameters["aortic_layer_share_of_diameter"]) < 0.08, (seed, cap)
        else:
            assert separated < 0.95, (seed, separated)  # a disc inside the thrombus: rest on both sides
    assert kinds["layered"] >= 2 and kinds["disc"] >= 1, kinds


def test_a_layered_aorta_on_request_changes_nothing_but_the_aorta():
    """``layered_aorta`` gives a healthy subject the diseased aorta with a layered lumen and keeps
    every draw: only the aorta's voxels and its thrombus change."""
    from mrseg.phantom.anatomy import AORTIC_DISEASE_SHARE

    seed = 0  # a healthy subject
    plain = generate_anatomy(seed=seed, fov="abdomen", spacing=(3.0, 3.0, 3.0))
    layered = generate_anatomy(seed=seed, fov="abdomen", spacing=(3.0, 3.0, 3.0), layered_aorta=True)
    assert plain.parameters["aortic_disease"] >= AORTIC_DISEASE_SHARE
    assert layered.parameters == plain.parameters
    vessel = [TISSUE_INDEX["aorta"], TISSUE_INDEX["aortic_thrombus"]]
    changed = layered.tissues.array != plain.tissues.array
    assert np.isin(layered.tissues.array[changed], vessel).all()
    assert (layered.tissues.array == TISSUE_INDEX["aortic_thrombus"]).sum() * 27e-3 > 3.0  # mL


def test_perirenal_fat_keeps_the_other_organs_off_the_kidneys():
    """Real kidneys lie in perirenal fat, a ring that the model must learn is not kidney: no
    liver, spleen or bowel within the drawn fat margin, and the margin grows with visceral fat."""
    intraperitoneal = [TISSUE_INDEX[n] for n in ("liver", "spleen", "gallbladder", "pancreas", "stomach_wall",
                                                 "duodenum", "colon_wall", "small_bowel_wall")]
    margins = []
    for seed in (0, 2, 90002):
        anatomy = generate_anatomy(seed=seed, fov="abdomen", spacing=(2.0, 2.0, 2.0))
        tissues, parameters = anatomy.tissues.array, anatomy.parameters
        for side in ("left", "right"):
            margin = parameters[f"{side}_perirenal_fat_mm"]
            assert 0.0 <= margin <= 3.0 + 15.0 * parameters["visceral_fat"], (seed, side)
            margins.append((parameters["visceral_fat"], margin))
            kidney = np.isin(tissues, [TISSUE_INDEX[f"{side}_kidney_cortex"], TISSUE_INDEX[f"{side}_kidney_medulla"]])
            near = ndimage.distance_transform_edt(~kidney, sampling=2.0) < 0.7 * margin - 2.0
            shell = near & ~kidney
            assert not np.isin(tissues[shell], intraperitoneal).any(), (seed, side, margin)
            if margin > 8.0:
                assert (tissues[shell] == TISSUE_INDEX["visceral_fat"]).mean() > 0.5, (seed, side)
    thin, thick = min(margins), max(margins)
    assert thick[1] > 8.0 and thin[1] < 4.0  # lean and obese subjects both occur


def test_an_air_margin_widens_the_default_grid_into_air_round_the_same_subject():
    """A real CT's field of view is wider than the body; the default grid keeps the body wall near
    its edges. ``air_margin`` adds air on the right, left, front and back: the subject drawn on the
    wider grid is the plain grid's, voxel for voxel, with air around it."""
    plain = default_grid("abdomen", spacing=(4.0, 4.0, 4.0))
    wide = default_grid("abdomen", spacing=(4.0, 4.0, 4.0), air_margin=(8.0, 16.0, 24.0, 32.0))
    assert wide.shape == (plain.shape[0], plain.shape[1] + 14, plain.shape[2] + 6)
    assert wide.origin == pytest.approx((plain.origin[0] - 8.0, plain.origin[1] - 24.0, plain.origin[2]))
    assert default_grid("abdomen", spacing=(4.0, 4.0, 4.0), air_margin=10.0).shape == (plain.shape[0],
                                                                                      plain.shape[1] + 5,
                                                                                      plain.shape[2] + 5)
    before = generate_anatomy(seed=3, grid=plain).tissues.array
    after = generate_anatomy(seed=3, grid=wide).tissues.array
    inner = (slice(None), slice(6, 6 + plain.shape[1]), slice(2, 2 + plain.shape[2]))
    np.testing.assert_array_equal(after[inner], before)
    outside = np.ones(after.shape, bool)
    outside[inner] = False
    assert (after[outside] == TISSUE_INDEX["air"]).all()
    for bad in ((10.0, 10.0, 10.0), -1.0, 301.0, float("nan"), "wide"):
        with pytest.raises(InputError, match="air_margin is one number or four"):
            default_grid("abdomen", air_margin=bad)


def test_arms_lie_beside_the_trunk_as_unlabelled_tissue_and_change_no_other_draw():
    """A real CT with the arms at the sides had every demo network label them hip muscles and
    lose the liver; the phantom had no arms. With ``arms`` each side holds an arm of skin, fat,
    muscle and bone in the air beside the trunk, from the shoulder past the hip, and the trunk,
    its classes and every other draw of the seed stay as they were."""
    from mrseg.phantom.anatomy import ARM_FOV_HALF_WIDTH_MM

    grid = default_grid("trunk", spacing=(4.0, 4.0, 4.0), arms=True)
    assert grid.shape[2] > default_grid("trunk", spacing=(4.0, 4.0, 4.0)).shape[2]
    assert grid.origin[0] == pytest.approx(-ARM_FOV_HALF_WIDTH_MM + 2.0)
    bone = [TISSUE_INDEX["rib_cortex"], TISSUE_INDEX["rib_marrow"]]
    air = TISSUE_INDEX["air"]
    for seed in (2, 7):
        plain = generate_anatomy(seed=seed, grid=grid)
        armed = generate_anatomy(seed=seed, grid=grid, arms=True)
        before, after = plain.tissues.array, armed.tissues.array
        assert {k: v for k, v in armed.parameters.items() if k in plain.parameters} == plain.parameters
        assert {k for k in armed.parameters if k not in plain.parameters} >= {"arm_upper_length_mm",
                                                                              "left_arm_gap_mm"}
        changed = before != after
        assert (before[changed] == air).all()  # only air became arm
        assert np.array_equal(to_classes(before), to_classes(after))  # an arm is background
        columns = np.nonzero(changed)[2]
        trunk_columns = np.nonzero((before != air).any(axis=(0, 1)))[0]
        left, right = columns > grid.shape[2] // 2, columns < grid.shape[2] // 2
        assert left.sum() > 1000 and right.sum() > 1000, seed  # both arms
        assert columns[left].max() > trunk_columns.max() and columns[right].min() < trunk_columns.min()
        slices = np.nonzero(changed.any(axis=(1, 2)))[0]
        assert slices.size * 4.0 > 500, seed  # shoulder to below the hips
        for side in (left, right):  # each arm holds bone with muscle round it
            held = after[changed][side]
            assert np.isin(held, bone).sum() > 50 and (held == TISSUE_INDEX["muscle"]).sum() > 500, seed


def test_a_table_lies_under_the_back_as_two_unlabelled_shells_and_changes_no_other_draw():
    """A real CT's table had the tissue above it labelled gluteus by a network trained without
    one. With ``table`` two curved shells lie behind the body (LPS: +y), in air only, along the
    whole grid; the classes and every other draw stay as they were."""
    from mrseg.phantom.anatomy import TABLE_FOV_BACK_MM

    grid = default_grid("abdomen", spacing=(3.0, 3.0, 3.0), table=True)
    assert grid.origin[1] + (grid.shape[1] - 1) * 3.0 == pytest.approx(TABLE_FOV_BACK_MM, abs=3.0)
    for seed in (2, 7):
        plain = generate_anatomy(seed=seed, grid=grid)
        tabled = generate_anatomy(seed=seed, grid=grid, table=True)
        before, after = plain.tissues.array, tabled.tissues.array
        assert {k: v for k, v in tabled.parameters.items() if k in plain.parameters} == plain.parameters
        changed = before != after
        assert (before[changed] == TISSUE_INDEX["air"]).all() and (after[changed] == TISSUE_INDEX["rib_cortex"]).all()
        assert np.array_equal(to_classes(before), to_classes(after))
        body_rows = np.nonzero((before != TISSUE_INDEX["air"]).any(axis=(0, 2)))[0]
        rows = np.nonzero(changed)[1]
        assert rows.min() > body_rows.max(), seed  # behind the back
        assert changed.any(axis=(1, 2)).all(), seed  # in every slice
        middle = changed[:, :, grid.shape[2] // 2].any(axis=0)  # the midline's column: two shells, a gap between
        runs = np.diff(np.concatenate([[0], middle.astype(int), [0]]))
        assert (runs == 1).sum() == 2, seed


def test_a_perirenal_room_keeps_the_organs_out_of_the_fat_above_the_left_kidney():
    """Real patients with much retroperitoneal fat have a rounded body of perirenal fat above the
    left kidney's upper pole, which every network labelled kidney; the phantom's spleen, stomach
    and bowel filled that place. With the room, the fat above the pole is the kidney's own and
    only organs painted after the kidneys give way, never the spleen (clipped, it lost a fifth to
    a half of itself and networks trained on it drew real spleens too small); nothing changes on
    the right."""
    later = [TISSUE_INDEX[n] for n in ("liver", "gallbladder", "pancreas", "stomach_wall", "stomach_content",
                                       "duodenum", "colon_wall", "colon_content", "small_bowel_wall",
                                       "small_bowel_content", "bowel_gas")]
    fat, spleen = TISSUE_INDEX["visceral_fat"], TISSUE_INDEX["spleen"]
    for seed in (2, 5):
        plain = generate_anatomy(seed=seed, fov="abdomen", spacing=(3.0, 3.0, 3.0))
        roomy = generate_anatomy(seed=seed, fov="abdomen", spacing=(3.0, 3.0, 3.0), perirenal_room_mm=40.0)
        before, after = plain.tissues.array, roomy.tissues.array
        assert roomy.parameters == plain.parameters  # no draw changes
        changed = before != after
        assert changed.sum() > 500, seed
        assert (after[changed] == fat).all() and np.isin(before[changed], later).all()
        assert np.array_equal(before == spleen, after == spleen), seed  # the spleen keeps its whole shape
        kidney = np.isin(before, [TISSUE_INDEX["left_kidney_cortex"], TISSUE_INDEX["left_kidney_medulla"]])
        top = int(np.flatnonzero(kidney.any(axis=(1, 2))).max())  # LPS: z runs towards the head
        footprint = ndimage.binary_erosion(kidney[top - 3:top + 1].any(axis=0), iterations=1)
        above = after[top + 2:top + 10][:, footprint]
        assert not np.isin(above, later).any(), seed
        assert np.isin(before[top + 2:top + 10][:, footprint], later).any(), seed  # it was organs before
        # every change lies on the patient's left (+x in LPS: the higher column indices here)
        columns = np.nonzero(changed)[2]
        assert columns.min() > before.shape[2] // 2, seed
    with pytest.raises(InputError, match="perirenal_room_mm is a distance in mm"):
        generate_anatomy(seed=2, fov="abdomen", spacing=(6.0, 6.0, 6.0), perirenal_room_mm=-5.0)


def test_kidney_spleen_and_gallbladder_heights_vary_between_subjects():
    """The left kidney usually lies higher than the right, but not in every subject, and the
    spleen and gallbladder move up and down too: a model that learns one fixed place draws an
    organ in the fat where another patient's is not."""
    organs = ("left_kidney", "right_kidney", "spleen", "gallbladder", "liver")
    heights: dict[str, list[float]] = {name: [] for name in organs}
    for seed in range(16):
        labels = generate_anatomy(seed=seed, fov="abdomen", spacing=(5.0, 5.0, 5.0)).labels
        for name in organs:
            heights[name].append(world_points(labels, idx(name))[:, 2].mean())
    differences = np.subtract(heights["left_kidney"], heights["right_kidney"])
    assert np.median(differences) > 5.0  # left higher as a rule
    assert differences.min() < -5.0  # ... but lower in some subjects
    assert np.ptp(differences) > 30.0
    # height against the liver's, so that the subject's own size and pose drop out (measured: SD
    # 3.5-5.1 mm with the organs' former 3 mm spread, 5.4-12.2 mm now; the diaphragm holds the
    # spleen's top)
    for name, least_sd in (("left_kidney", 7.0), ("right_kidney", 7.0), ("gallbladder", 7.0), ("spleen", 4.5)):
        assert np.std(np.subtract(heights[name], heights["liver"])) > least_sd, name


def test_descending_aorta_lies_left_of_the_vertebral_bodies_beside_the_heart():
    """In the thorax of a subject whose aorta is not unfolded (a turn near 0 degrees), the
    descending aorta runs down the left side of the vertebral bodies, not in front of them (it
    reaches the front of the spine only at the aortic hiatus)."""
    for seed in (15, 24, 28):
        anatomy = generate_anatomy(seed=seed, fov="thorax", spacing=(2.0, 2.0, 2.0))
        assert abs(anatomy.parameters["descending_aorta_turn_deg"]) < 5, seed
        labels = anatomy.labels
        assert labels.geometry.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # axial LPS: (z, y, x)
        behind_front, left_of_centre = [], []
        for axial in labels.array[(labels.array == idx("heart")).any(axis=(1, 2))]:
            components, count = ndimage.label(axial == idx("aorta"))
            spine = np.argwhere(axial == idx("spine"))
            if count == 0 or len(spine) == 0:
                continue
            centres = ndimage.center_of_mass(components > 0, components, range(1, count + 1))
            y, x = max(centres)  # the most posterior part of the aorta in the slice: the descending aorta
            behind_front.append((y - spine[:, 0].min()) * 2.0)
            left_of_centre.append((x - spine[:, 1].mean()) * 2.0)
        assert len(behind_front) > 30, seed
        assert abs(np.median(behind_front)) < 8, (seed, np.median(behind_front))  # level with the spine's front
        assert np.median(left_of_centre) > 20, (seed, np.median(left_of_centre))  # beside the vertebral body


def _lower_descending_aorta_left_of_spine_mm(labels: np.ndarray) -> float:
    """Median, over the axial slices below the heart's middle where the aorta is one vessel, of
    how far the aorta's centre lies left of the spine's centre (mm; 2 mm voxels)."""
    heart = np.flatnonzero((labels == idx("heart")).any(axis=(1, 2)))
    lefts = []
    for axial in labels[: (heart.min() + heart.max()) // 2]:
        components, count = ndimage.label(axial == idx("aorta"))
        spine = np.argwhere(axial == idx("spine"))
        if count == 1 and len(spine):
            lefts.append((ndimage.center_of_mass(components)[1] - spine[:, 1].mean()) * 2.0)
    assert len(lefts) > 40
    return float(np.median(lefts))


def test_descending_aorta_unfolds_about_the_spine_without_cutting_its_neighbours(monkeypatch):
    """Subjects differ in how far their lower descending aorta has unfolded towards and past the
    midline (older aortas lie in front of the vertebral bodies): the turn moves it by the drawn
    angle's sense and size, and neither the aorta nor the oesophagus it displaces loses volume."""
    from mrseg.phantom import anatomy as anatomy_module

    def draw(seed: int) -> tuple[float, float, dict[str, int]]:
        a = generate_anatomy(seed=seed, fov="thorax", spacing=(2.0, 2.0, 2.0))
        volumes = {name: int((a.labels.array == idx(name)).sum()) for name in ("aorta", "esophagus")}
        return a.parameters["descending_aorta_turn_deg"], _lower_descending_aorta_left_of_spine_mm(a.labels.array), \
            volumes

    for seed in (14, 13, 11):  # turned -40, -36 (to or past the midline) and +15 degrees (outwards)
        turn, left, volumes = draw(seed)
        with monkeypatch.context() as m:
            m.setattr(anatomy_module, "DESCENDING_AORTA_TURN_DEG", (0.0, 0.0))
            _, left_unturned, volumes_unturned = draw(seed)
        assert abs(turn) > 14, (seed, turn)
        assert left_unturned > 8, (seed, left_unturned)  # unturned: left of the midline
        assert np.sign(left - left_unturned) == np.sign(turn), (seed, left, left_unturned)
        assert abs(left - left_unturned) > 0.3 * abs(turn), (seed, left, left_unturned)  # ~0.45 mm per degree
        if turn < -30:
            assert left < 0, (seed, left)  # at or past the midline, in front of the vertebral bodies
        for name, volume in volumes.items():
            assert volume == pytest.approx(volumes_unturned[name], rel=0.02), (seed, name)


def _aortic_places_mm(tissues: np.ndarray) -> tuple[dict[int, float], dict[int, float]]:
    """Per axial slice (2 mm voxels) where the aorta is two vessels, the left-right place (mm) of
    the ascending (front) and of the descending (back) one."""
    ascending, descending = {}, {}
    for z, axial in enumerate(tissues):
        components, count = ndimage.label(axial == TISSUE_INDEX["aorta"])
        if count != 2:
            continue
        (y0, x0), (y1, x1) = ndimage.center_of_mass(components > 0, components, (1, 2))
        front, back = ((x0, x1) if y0 < y1 else (x1, x0))
        ascending[z], descending[z] = front * 2.0, back * 2.0
    return ascending, descending


def test_the_ascending_aorta_and_arch_lie_where_the_drawn_shift_puts_them(monkeypatch):
    """Between people the ascending aorta lies anywhere from right of the trachea to in front of
    it, so the arch spans 1.5-4 cm from the ascending to the descending aorta: the drawn shift moves
    the ascending aorta and the arch's branches to the left by its size above the root, and leaves
    the root in the heart, the descending aorta and the aorta's volume as they were."""
    from mrseg.phantom import anatomy as anatomy_module

    def draw(shift: float) -> tuple[Anatomy, tuple[dict[int, float], dict[int, float]]]:
        with monkeypatch.context() as m:
            m.setattr(anatomy_module, "AORTIC_ARCH_SHIFT_MM", (shift, shift))
            a = generate_anatomy(seed=3, fov="thorax", spacing=(2.0, 2.0, 2.0))
        return a, _aortic_places_mm(a.tissues.array)

    (right, (asc_r, desc_r)), (left, (asc_l, desc_l)) = draw(-5.0), draw(20.0)
    assert right.parameters["aortic_arch_shift_mm"] == -5.0 and left.parameters["aortic_arch_shift_mm"] == 20.0
    upper = sorted(set(asc_r) & set(asc_l))[-6:]  # the six highest slices below the arch
    moved = np.array([asc_l[z] - asc_r[z] for z in upper])
    # about 25 mm: the front vessel's highest slices hold some of the arch, whose shift fades
    assert np.all((moved > 20.0) & (moved < 26.0)), moved
    lower = sorted(set(desc_r) & set(desc_l))[:10]  # the descending aorta beside the heart
    assert np.all(np.abs([desc_l[z] - desc_r[z] for z in lower]) < 1.0)
    a_r, a_l = right.tissues.array, left.tissues.array
    below_arch = min(upper) - 30  # 60 mm below: the aorta there is the root and the descending aorta
    assert np.array_equal(a_r[:below_arch] == TISSUE_INDEX["aorta"], a_l[:below_arch] == TISSUE_INDEX["aorta"])
    volume_r, volume_l = (int((a == TISSUE_INDEX["aorta"]).sum()) for a in (a_r, a_l))
    assert volume_l == pytest.approx(volume_r, rel=0.03)
    # the branches leave the arch where it now is: their lowest slices moved left with it
    branches = [np.argwhere(a == TISSUE_INDEX["supra_aortic_artery"]) for a in (a_r, a_l)]
    origin = max(b[:, 0].min() for b in branches)
    x_r, x_l = (b[b[:, 0] <= origin + 2][:, 2].mean() * 2.0 for b in branches)
    assert x_l - x_r > 15.0, (x_r, x_l)


RIB_TISSUES = [TISSUE_INDEX[name] for name in ("rib_cortex", "rib_marrow", "costal_cartilage")]


@pytest.fixture(scope="module")
def with_and_without_ribs() -> tuple[Anatomy, Anatomy]:
    """One subject drawn with its rib cage, and painted again with the rib cage left out."""
    from mrseg.phantom import anatomy as anatomy_module

    with_ribs = generate_anatomy(seed=5, fov="trunk", spacing=(2.0, 2.0, 2.0))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(anatomy_module, "_paint_rib_cage", lambda *args: None)
        without = generate_anatomy(seed=5, fov="trunk", spacing=(2.0, 2.0, 2.0))
    return with_ribs, without


def test_the_ribs_and_sternum_take_only_the_chest_wall_muscle_and_change_no_label(with_and_without_ribs):
    """The rib cage is not one of the 40 classes: it replaces generic muscle in the chest wall and
    nothing else, so every label stays what it was and the organs it encloses keep every voxel."""
    with_ribs, without = with_and_without_ribs
    ribs = np.isin(with_ribs.tissues.array, RIB_TISSUES)
    assert ribs.sum() * 8 > 300_000  # mm³: twelve pairs of ribs, their cartilages and the sternum
    assert np.all(without.tissues.array[ribs] == TISSUE_INDEX["muscle"])
    assert np.array_equal(with_ribs.tissues.array[~ribs], without.tissues.array[~ribs])
    assert np.array_equal(with_ribs.labels.array, without.labels.array)
    assert list(with_ribs.parameters)[-4:] == ["rib_height_mm", "rib_thickness_mm", "rib_drop_mm",
                                               "sternum_half_width_mm"]  # drawn after every other draw


def test_twelve_ribs_on_each_side_slope_down_to_the_front_and_the_lowest_two_float(with_and_without_ribs):
    """Each side has twelve bony ribs (the cortex and marrow, apart from their cartilages), each
    lower at its front end than beside the spine; the 11th and 12th end at the flank, while the
    upper ones turn into cartilage that reaches the sternum at the front, in the midline."""
    tissues = with_and_without_ribs[0].tissues.array  # (z, y, x); y grows backwards, x to the left
    bone = np.isin(tissues, RIB_TISSUES[:2])
    body = np.argwhere(tissues != TISSUE_INDEX["air"])
    middle_x = (body[:, 2].min() + body[:, 2].max()) / 2
    for side in (slice(0, int(middle_x) - 12), slice(int(middle_x) + 12, None)):  # off the sternum
        components, count = ndimage.label(bone[:, :, side])
        pieces = (np.argwhere(components == label) for label in range(1, count + 1))
        ribs = sorted((voxels for voxels in pieces if len(voxels) > 100),  # not a corner voxel cut off
                      key=lambda voxels: voxels[:, 0].min())  # the 12th (lowest) first
        assert len(ribs) == 12, len(ribs)
        for number, voxels in zip(range(12, 0, -1), ribs):
            back, front = voxels[voxels[:, 1] >= voxels[:, 1].max() - 3], voxels[voxels[:, 1] <= voxels[:, 1].min() + 3]
            assert back[:, 0].mean() - front[:, 0].mean() > 10, number  # slices of 2 mm: > 20 mm lower
        # the floating ribs' front ends lie behind the upper ribs' (front = small y)
        fronts = [voxels[:, 1].min() for voxels in ribs]
        assert min(fronts[:2]) > max(fronts[4:]) + 10, fronts
    sternum = bone[:, :, int(middle_x) - 3:int(middle_x) + 4]
    cartilage = tissues == TISSUE_INDEX["costal_cartilage"]
    assert sternum.sum() * 8 > 15_000 and cartilage.sum() * 8 > 20_000


def test_ribs_are_bright_on_ct_and_their_marrow_follows_fat_on_mr():
    """On CT the ribs are bone (the cortex far above soft tissue); on MR their marrow is fatty and
    their cortex gives no signal, like every other bone of the phantom."""
    by_name = {t.name: t for t in TISSUES}
    cortex, marrow, cartilage = by_name["rib_cortex"], by_name["rib_marrow"], by_name["costal_cartilage"]
    assert cortex.hu > 500 and marrow.hu > 150 and cartilage.hu > by_name["muscle"].hu
    assert cortex.class_name is marrow.class_name is cartilage.class_name is None
    assert cortex.pd < 0.1 and marrow.fat_fraction > 0.4


def test_aortic_root_lies_in_the_middle_of_the_heart():
    """The aortic valve sits in the middle of the heart, among its chambers, not on top of it and
    not at its back: in the real thorax CTA of ``../shared/data`` the ascending aorta begins 0.46 of
    the heart's height above the heart's lowest slice and rises 3 mm in front of to 8 mm behind the
    heart's centroid. The phantom's began at 0.61-0.67 and rose 8-18 mm behind it, where the left
    atrium lies (weights up to 0.13 were trained on that)."""
    for seed in (3, 7, 11):
        labels = generate_anatomy(seed=seed, fov="thorax", spacing=(2.0, 2.0, 2.0)).labels.array  # (z, y, x)
        heart = np.argwhere(labels == idx("heart"))
        bottom, top, heart_y = heart[:, 0].min(), heart[:, 0].max(), heart[:, 1].mean()
        spine_front = np.argwhere(labels == idx("spine"))[:, 1].min()
        ascending = {}  # slice → front-to-back place of the ascending aorta (voxels)
        for z in range(bottom, top + 1):
            components, count = ndimage.label(labels[z] == idx("aorta"))
            centres = ndimage.center_of_mass(components > 0, components, range(1, count + 1))
            # the ascending aorta lies well in front of the spine; the descending one level with it
            if front := [y for y, _ in centres if (spine_front - y) * 2.0 > 25.0]:
                ascending[z] = min(front)
        share = (min(ascending) - bottom) / (top - bottom)
        assert 0.35 < share < 0.58, (seed, share)
        behind_centroid = [(y - heart_y) * 2.0 for y in ascending.values()]
        assert -8.0 < np.median(behind_centroid) < 8.0, (seed, np.median(behind_centroid))


# ---- fields of view and partial grids ---------------------------------------------------------------


@pytest.fixture(scope="module")
def windows() -> dict[str, set[int]]:
    return {fov: set(np.unique(generate_anatomy(seed=7, fov=fov, spacing=(3.0, 3.0, 3.0)).labels.array).tolist())
            for fov in ("thorax", "abdomen", "pelvis")}


def test_thorax_window(windows: dict[str, set[int]]):
    present = windows["thorax"]
    assert {idx("left_lung"), idx("right_lung"), idx("heart"), idx("esophagus"), idx("aorta")} <= present
    assert not {idx("urinary_bladder"), idx("left_femur"), idx("right_femur"), idx("sacrum")} & present


def test_abdomen_window(windows: dict[str, set[int]]):
    present = windows["abdomen"]
    assert {idx(n) for n in ("liver", "spleen", "left_kidney", "right_kidney", "pancreas", "stomach")} <= present
    assert not {idx("urinary_bladder"), idx("left_femur"), idx("right_femur")} & present


def test_pelvis_window(windows: dict[str, set[int]]):
    present = windows["pelvis"]
    wanted = ("urinary_bladder", "left_femur", "right_femur", "left_gluteus_maximus", "right_gluteus_maximus",
              "sacrum", "left_hip", "right_hip")
    assert {idx(n) for n in wanted} <= present
    assert not {idx("left_lung"), idx("right_lung"), idx("heart")} & present


def test_tiny_and_empty_grids(trunk: dict[int, Anatomy], trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    # a 24 mm cube (3 mm voxels) at the bladder's centre holds bladder and little else
    centre = trunk_stats[0][1][idx("urinary_bladder")]
    tiny = Geometry(shape=(8, 8, 8), spacing=(3.0, 3.0, 3.0), origin=tuple(centre - 10.5),  # type: ignore[arg-type]
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    labels = generate_anatomy(seed=0, grid=tiny).labels.array
    assert labels.shape == (8, 8, 8)
    assert (labels == idx("urinary_bladder")).mean() > 0.9
    # a grid beside the body is all air
    away = Geometry(shape=(5, 6, 7), spacing=(2.0, 2.0, 2.0), origin=(500.0, 0.0, 0.0),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    assert not generate_anatomy(seed=0, grid=away).tissues.array.any()


def test_sub_block_grid_matches_the_full_grid(trunk: dict[int, Anatomy]):
    """Rasterising is pointwise: a grid of some of the trunk grid's voxels gets the same labels."""
    full = trunk[1].tissues
    g = full.geometry
    k0, j0, i0 = 150, 40, 50
    sub = Geometry(shape=(30, 40, 50), spacing=g.spacing,
                   origin=tuple(float(v) for v in (g.affine_lps @ np.array([i0, j0, k0, 1.0]))[:3]),  # type: ignore[arg-type]
                   direction=g.direction)
    part = generate_anatomy(seed=1, grid=sub).tissues.array
    block = full.array[k0:k0 + 30, j0:j0 + 40, i0:i0 + 50]
    assert block.any()
    assert (part == block).mean() > 0.999


# ---- any grid: world-coordinate rasterisation ---------------------------------------------------


def test_oblique_anisotropic_grid_gives_the_same_anatomy(trunk_stats: dict[int, tuple[np.ndarray, np.ndarray]]):
    ref = default_grid("trunk", spacing=(2.0, 2.0, 2.0))
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    spacing = np.array([1.5, 2.0, 4.0])
    z_extent = (ref.shape[0] - 1) * ref.spacing[2]
    size = np.array([300, 220, int(round(z_extent / 4.0)) + 1])  # in-plane wide enough for the rotated body
    centre = np.asarray(ref.origin) + np.array([(ref.shape[2] - 1) * 1.0, (ref.shape[1] - 1) * 1.0, z_extent / 2])
    origin = centre - rot @ ((size - 1) * spacing / 2)
    grid = Geometry(shape=(int(size[2]), int(size[1]), int(size[0])), spacing=tuple(spacing),  # type: ignore[arg-type]
                    origin=tuple(origin), direction=tuple(rot.ravel()))  # type: ignore[arg-type]
    assert orientation_code(grid) == "LPS"
    volumes, centroids = class_stats(generate_anatomy(seed=0, grid=grid).labels)
    ref_volumes, ref_centroids = trunk_stats[0]
    for c in BASE.classes:
        assert volumes[c.index] == pytest.approx(ref_volumes[c.index], rel=0.10), c.name
        shift = np.linalg.norm(centroids[c.index] - ref_centroids[c.index])
        assert shift < 5.0, f"{c.name} centroid moved {shift:.1f} mm"


@pytest.mark.parametrize("code", ["RAS", "PIL"])
def test_reoriented_grids_give_the_same_world_anatomy(code: str):
    lps = default_grid("abdomen", spacing=(3.0, 3.0, 3.0))
    step = plan_reorientation(lps, code)
    assert orientation_code(step.target) == code
    reference = generate_anatomy(seed=5, grid=lps).labels
    other = generate_anatomy(seed=5, grid=step.target).labels
    assert (step.undo(other.array) == reference.array).mean() > 0.9999
    v_ref, c_ref = class_stats(reference)
    v_other, c_other = class_stats(other)
    present = v_ref > 0
    np.testing.assert_allclose(v_other[present], v_ref[present], rtol=1e-3)
    np.testing.assert_allclose(c_other[present], c_ref[present], atol=0.2)


# ---- determinism -------------------------------------------------------------------------------------


def test_same_seed_same_anatomy_different_seed_different():
    grid = default_grid("trunk", spacing=(5.0, 5.0, 5.0))
    a = generate_anatomy(seed=11, grid=grid)
    b = generate_anatomy(seed=11, grid=grid)
    c = generate_anatomy(seed=12, grid=grid)
    np.testing.assert_array_equal(a.tissues.array, b.tissues.array)
    assert a.parameters == b.parameters
    assert (a.tissues.array != c.tissues.array).mean() > 0.01
    assert a.parameters != c.parameters and set(a.parameters) == set(c.parameters)
    # the subject does not depend on the grid it is drawn on
    assert generate_anatomy(seed=11, fov="pelvis", spacing=(6.0, 6.0, 6.0)).parameters == a.parameters


def test_organ_scales_resize_only_the_named_organs_and_keep_every_draw():
    """``organ_scales`` makes the named organs smaller or larger for the same body: the kidney's
    volume goes with the factor's cube, the liver keeps its dome under the diaphragm and its side
    at the wall, organs not named keep every voxel, and no draw of the seed changes."""
    from mrseg.phantom.tissues import to_classes

    plain = generate_anatomy(seed=3, fov="abdomen", spacing=(3.0, 3.0, 3.0))
    scaled = generate_anatomy(seed=3, fov="abdomen", spacing=(3.0, 3.0, 3.0),
                              organ_scales={"liver": 0.8, "right_kidney": 0.8, "spleen": 1.05})
    assert {k: v for k, v in scaled.parameters.items() if not k.endswith("_size_factor")} == plain.parameters
    assert scaled.parameters["liver_size_factor"] == 0.8
    old, new = to_classes(plain.tissues.array), to_classes(scaled.tissues.array)

    def volume(labels, name):
        return int((labels == BASE.index_of(name)).sum())

    assert volume(new, "right_kidney") / volume(old, "right_kidney") == pytest.approx(0.8 ** 3, rel=0.1)
    assert volume(new, "spleen") / volume(old, "spleen") == pytest.approx(1.05 ** 3, rel=0.1)
    assert 0.45 < volume(new, "liver") / volume(old, "liver") < 0.75  # 0.8^3, less what the dome clipped
    for name in ("left_kidney", "gallbladder", "right_lung", "left_lung", "aorta", "spine"):
        assert np.array_equal(old == BASE.index_of(name), new == BASE.index_of(name)), name
    liver_old, liver_new = (np.argwhere(labels == BASE.index_of("liver")) for labels in (old, new))
    # LPS grid: axis 0 runs up, axis 2 towards the patient's left
    assert liver_new[:, 0].max() >= liver_old[:, 0].max() - 1  # still under the dome
    assert liver_new[:, 2].min() <= liver_old[:, 2].min() + 1  # still at the right wall


@pytest.mark.parametrize(("organ_scales", "message"), [
    ({"stomach": 0.9}, "'stomach' cannot be scaled"),
    ({"liver": 0.3}, "liver's factor must lie within"),
    ({"left_kidney": float("nan")}, "left_kidney's factor must lie within"),
])
def test_organ_scales_are_checked(organ_scales, message):
    with pytest.raises(InputError, match=message):
        generate_anatomy(seed=0, fov="abdomen", spacing=(8.0, 8.0, 8.0), organ_scales=organ_scales)
