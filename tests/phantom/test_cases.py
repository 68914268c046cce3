"""Whole synthetic cases and the ``mrseg phantom`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mrseg.classes import BASE
from mrseg.cli import main
from mrseg.errors import InputError
from mrseg.io import orientation_code, read_image
from mrseg.phantom.cases import grid_covering, make_case
from mrseg.phantom.tissues import to_classes


def test_case_image_and_labels_share_the_grid():
    case = make_case(seed=3, modality="ct", sequence="contrast", fov="abdomen", spacing=(3.0, 3.0, 3.0))
    assert case.image.geometry == case.labels.geometry
    assert case.image.array.dtype == np.float32 and case.labels.array.dtype == np.uint8
    assert {5, 1, 2, 3}.issubset(set(np.unique(case.labels.array)))
    assert case.metadata["seed"] == 3 and case.metadata["sequence"] == "contrast"


def test_oblique_anisotropic_grid_keeps_the_organs():
    straight = make_case(seed=1, fov="abdomen", spacing=(3.0, 3.0, 3.0))
    tilted = make_case(seed=1, fov="abdomen", spacing=(2.5, 3.0, 4.5), orientation="oblique")
    assert np.abs(tilted.image.geometry.direction_matrix).max(axis=0).min() < 0.999  # really oblique
    for label in (1, 5):  # spleen, liver: same subject, same volume within 10 %
        v1 = (straight.labels.array == label).sum() * np.prod(straight.labels.geometry.spacing)
        v2 = (tilted.labels.array == label).sum() * np.prod(tilted.labels.geometry.spacing)
        assert v2 == pytest.approx(v1, rel=0.1)


def test_grid_covering_contains_the_box():
    box = make_case(seed=0, fov="pelvis", spacing=(4.0, 4.0, 4.0)).image.geometry
    grid = grid_covering(box, spacing=(3.0, 3.0, 6.0), orientation="PIL")
    assert orientation_code(grid) == "PIL"
    n = np.array(box.shape[::-1]) - 1
    corners = np.array([[i, j, k, 1.0] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    world = box.affine_lps @ corners.T
    index = np.linalg.inv(grid.affine_lps) @ world  # the box corners in the new grid's voxel indices
    size = np.array(grid.shape[::-1])[:, None]
    assert np.all(index[:3] >= -0.5) and np.all(index[:3] <= size - 0.5)


def test_bad_modality_and_sequence_are_refused():
    with pytest.raises(InputError, match="modality must be one of"):
        make_case(seed=0, modality="pet")
    with pytest.raises(InputError, match="sequence must be one of"):
        make_case(seed=0, modality="ct", sequence="t1_in")
    with pytest.raises(InputError, match="fov must be one of"):
        make_case(seed=0, fov="head")


def test_phantom_command_writes_image_labels_and_sidecar(tmp_path):
    assert main(["phantom", "-o", str(tmp_path), "-n", "2", "--modality", "mr", "--sequence", "t1_opp",
                 "--fov", "abdomen", "--seed", "7", "--spacing", "3", "3", "3"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["phantom_0007.json", "phantom_0007.nii.gz", "phantom_0007_labels.nii.gz",
                     "phantom_0008.json", "phantom_0008.nii.gz", "phantom_0008_labels.nii.gz"]
    sidecar = json.loads((tmp_path / "phantom_0007.json").read_text())
    assert sidecar["seed"] == 7 and sidecar["modality"] == "mr" and sidecar["sequence"] == "t1_opp"
    image, labels = read_image(tmp_path / "phantom_0007.nii.gz"), read_image(tmp_path / "phantom_0007_labels.nii.gz")
    assert image.geometry.same_grid(labels.geometry)
    again = tmp_path / "again"
    assert main(["phantom", "-o", str(again), "-n", "1", "--modality", "mr", "--sequence", "t1_opp",
                 "--fov", "abdomen", "--seed", "7", "--spacing", "3", "3", "3"]) == 0
    np.testing.assert_array_equal(read_image(again / "phantom_0007.nii.gz").array, image.array)


def _phantom_pair(tmp_path, sequence: str, *flags: str):
    """``mrseg phantom`` of one abdomen twice, plain and with ``flags``: the command's arguments,
    both images, the varied case's labels and its sidecar."""
    common = ["phantom", "-n", "1", "--sequence", sequence, "--fov", "abdomen", "--seed", "3",
              "--spacing", "4", "4", "4"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "-o", str(tmp_path / "varied"), *flags]) == 0
    plain, varied = (read_image(tmp_path / d / "phantom_0003.nii.gz").array for d in ("plain", "varied"))
    labels = read_image(tmp_path / "varied" / "phantom_0003_labels.nii.gz").array
    sidecar = json.loads((tmp_path / "varied" / "phantom_0003.json").read_text())
    return common, plain, varied, labels, sidecar


def test_phantom_command_fat_suppression(tmp_path, caplog):
    _, plain, spir, labels, sidecar = _phantom_pair(tmp_path, "t2_tse", "--fat-suppression", "0.95")
    spleen = labels == BASE.index_of("spleen")
    assert np.median(spir[spleen]) == pytest.approx(np.median(plain[spleen]), rel=0.05)  # water kept
    fat = (labels == 0) & (plain > 400)  # unlabelled and bright on T2 TSE: fat
    assert fat.sum() > 1000 and np.median(spir[fat]) < 0.25 * np.median(plain[fat])
    assert "0.95" in json.dumps(sidecar)
    out = tmp_path / "ct"
    assert main(["phantom", "-o", str(out), "--modality", "ct", "--fat-suppression", "0.9"]) == 2
    assert "fat_suppression applies to the MR physics sequences" in caplog.text and not out.exists()


def test_phantom_command_fluids_and_organ_fat(tmp_path, caplog):
    common, plain, fatty, labels, sidecar = _phantom_pair(
        tmp_path, "dixon_fat", "--liver-fat", "0.3", "--pancreas-fat", "0.25", "--bile", "1",
        "--gastric-content", "0.8")
    for organ in ("liver", "pancreas"):  # brighter on the Dixon fat image
        inside = ndimage.binary_erosion(labels == BASE.index_of(organ))
        assert np.median(fatty[inside]) > 2 * np.median(plain[inside]) + 10, organ
    spleen = labels == BASE.index_of("spleen")
    assert np.median(fatty[spleen]) == pytest.approx(np.median(plain[spleen]), abs=1.0)  # untouched
    assert sidecar["synthesis"]["liver_fat_fraction"] == 0.3 and sidecar["synthesis"]["gastric_content"] == 0.8
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--liver-fat", "1.5"]) == 2
    assert "liver_fat_fraction is a fraction in [0, 1]" in caplog.text and not out.exists()


def test_phantom_command_clutter(tmp_path, caplog):
    common, plain, cluttered, labels, sidecar = _phantom_pair(tmp_path, "dixon_fat", "--clutter", "0.4")
    np.testing.assert_array_equal(read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz").array, labels)
    fat = ndimage.binary_erosion(labels == 0, iterations=2) & (plain > 500)
    assert np.median(cluttered[fat]) < np.median(plain[fat])  # darker blobs in the bright fat
    assert sidecar["clutter"] == 0.4
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--clutter", "2"]) == 2
    assert "fraction is the share of the visceral fat" in caplog.text and not out.exists()


def test_phantom_command_perirenal_space(tmp_path, caplog):
    common, plain, spaced, labels, sidecar = _phantom_pair(tmp_path, "dixon_fat", "--perirenal", "6", "25")
    np.testing.assert_array_equal(read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz").array, labels)
    kidneys = np.isin(labels, [BASE.index_of("left_kidney"), BASE.index_of("right_kidney")])
    distance_mm = ndimage.distance_transform_edt(~kidneys, sampling=(4.0, 4.0, 4.0))
    greyer = spaced < 0.9 * plain
    assert (greyer & (labels == 0)).sum() > 500
    # only within the margin plus the rise of a kidney (and one voxel's diagonal for the grid)
    assert distance_mm[greyer].max() <= 6 + 25 + 4 * np.sqrt(3)
    assert sidecar["perirenal"] == {"margin_mm": 6.0, "rise_mm": 25.0}
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--perirenal", "-2", "25"]) == 2
    assert "margin_mm and rise_mm are sizes in mm" in caplog.text and not out.exists()


def test_phantom_command_aortic_ectasia(tmp_path, caplog):
    common, plain, wide, labels, sidecar = _phantom_pair(tmp_path, "t1_in", "--ectasia", "6")
    aorta = BASE.index_of("aorta")
    slim = read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz").array == aorta
    assert (labels == aorta).sum() > 1.3 * slim.sum() and (labels == aorta)[slim].all()
    assert sidecar["ectasia_mm"] == 6.0
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--ectasia", "-1"]) == 2
    assert "widen_mm is a size in mm" in caplog.text and not out.exists()


def test_phantom_command_extraperitoneal_fat(tmp_path, caplog):
    common, plain, kept_off, labels, sidecar = _phantom_pair(tmp_path, "t1_in", "--extraperitoneal", "8")
    liver = BASE.index_of("liver")
    before = read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz").array == liver
    after = labels == liver
    assert after[before].sum() == after.sum() and 0.7 * before.sum() < after.sum() < 0.97 * before.sum()
    # where the liver gave way to fat, a T1 in-phase image is brighter (fat is bright on T1)
    assert np.median(kept_off[before & ~after]) > 1.3 * np.median(plain[before & ~after])
    assert sidecar["extraperitoneal_mm"] == 8.0
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--extraperitoneal", "-1"]) == 2
    assert "margin_mm is a thickness in mm" in caplog.text and not out.exists()


def test_phantom_command_smaller_subject(tmp_path, caplog):
    common, _, _, labels, sidecar = _phantom_pair(tmp_path, "t1_in", "--scale", "0.85")
    plain = read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz")
    small = read_image(tmp_path / "varied" / "phantom_0003_labels.nii.gz")
    assert small.geometry.spacing == plain.geometry.spacing == (4.0, 4.0, 4.0)  # the grid keeps its spacing
    for name in ("liver", "right_kidney", "spleen"):  # every length 0.85 times: volumes 0.61 times
        label = BASE.index_of(name)
        assert (labels == label).sum() / (plain.array == label).sum() == pytest.approx(0.85 ** 3, rel=0.08)
    assert sidecar["scale"] == 0.85
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--scale", "0"]) == 2
    assert "scale is a factor on the subject's size" in caplog.text and not out.exists()


def test_phantom_command_layered_aorta(tmp_path, caplog):
    """``--layered-aorta``: a CT angiography's diseased aorta with a bright cap beside grey
    thrombus, the whole vessel still labelled aorta; refused for a label map, nothing written."""
    common = ["phantom", "-n", "1", "--modality", "ct", "--sequence", "arterial", "--fov", "abdomen",
              "--seed", "0", "--spacing", "3", "3", "3"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "-o", str(tmp_path / "layered"), "--layered-aorta"]) == 0
    aorta = BASE.index_of("aorta")
    grey_share = {}
    for name in ("plain", "layered"):
        image = read_image(tmp_path / name / "phantom_0000.nii.gz").array
        labels = read_image(tmp_path / name / "phantom_0000_labels.nii.gz").array
        inner = ndimage.binary_erosion(labels == aorta)  # away from the wall's partial volume
        grey_share[name] = float(np.mean(image[inner] < 150))  # thrombus 55 HU; the lumen about 350 HU
    assert grey_share["plain"] < 0.02 and grey_share["layered"] > 0.1, grey_share
    sidecar = json.loads((tmp_path / "layered" / "phantom_0000.json").read_text())
    assert sidecar["layered_aorta"] is True
    out = tmp_path / "bad"
    labelmap = str(tmp_path / "plain" / "phantom_0000_labels.nii.gz")
    assert main([*common, "-o", str(out), "--layered-aorta", "--from-labels", labelmap]) == 2
    assert "layered_aorta draws a generated subject's aortic disease" in caplog.text and not out.exists()


def test_phantom_command_deformed_anatomy(tmp_path, caplog):
    """``--deform MM``: the same subject, its organs moved by a smooth random field; image and
    labels deformed alike (the liver's voxels keep the liver's intensity); a folding SD refused."""
    common, plain, deformed, labels, sidecar = _phantom_pair(tmp_path, "t1_in", "--deform", "8")
    plain_labels = read_image(tmp_path / "plain" / "phantom_0003_labels.nii.gz").array
    liver = BASE.index_of("liver")
    assert (labels == liver).sum() > 0 and ((labels == liver) != (plain_labels == liver)).sum() > 50
    inner = ndimage.binary_erosion(labels == liver, iterations=1)
    assert np.median(deformed[inner]) == pytest.approx(np.median(plain[ndimage.binary_erosion(plain_labels == liver)]),
                                                       rel=0.1)
    assert sidecar["deformation_mm"] == 8.0
    out = tmp_path / "bad"
    assert main([*common, "-o", str(out), "--deform", "30"]) == 2
    assert "displacement_mm is an SD in mm" in caplog.text and not out.exists()


def test_a_scaled_template_keeps_its_centre_and_the_grid_its_spacing(shared_data):
    source = read_image(shared_data / "labels" / "example_ct__ref40.nii.gz")
    common = {"seed": 1, "modality": "ct", "sequence": "native", "from_labels": source, "spacing": (4.0, 4.0, 4.0)}
    plain, large = make_case(**common), make_case(**common, scale=1.2)
    assert large.labels.geometry.spacing == (4.0, 4.0, 4.0)
    liver = BASE.index_of("liver")

    def centre(case):
        inside = np.argwhere(case.labels.array == liver)[:, ::-1].mean(axis=0)
        return (case.labels.geometry.affine_lps @ np.append(inside, 1.0))[:3]

    assert (large.labels.array == liver).sum() / (plain.labels.array == liver).sum() == pytest.approx(1.2 ** 3,
                                                                                                      rel=0.08)
    grid_centre = plain.labels.geometry.affine_lps @ np.append((np.array(plain.labels.geometry.shape[::-1]) - 1) / 2, 1)
    # the liver moves away from the grid's centre by the factor
    np.testing.assert_allclose(centre(large) - grid_centre[:3], 1.2 * (centre(plain) - grid_centre[:3]), atol=6.0)


def test_phantom_from_real_labels(shared_data, tmp_path):
    source = shared_data / "labels" / "example_mr_sm__ref40.nii.gz"
    assert main(["phantom", "-o", str(tmp_path), "-n", "1", "--modality", "ct", "--from-labels", str(source)]) == 0
    labels = read_image(source)
    out = read_image(tmp_path / "example_mr_sm__ref40_synth_0000_labels.nii.gz")
    assert out.geometry.same_grid(labels.geometry)
    np.testing.assert_array_equal(out.array, labels.array)
    assert read_image(tmp_path / "example_mr_sm__ref40_synth_0000.nii.gz").array.min() < -500  # air in HU


def test_labels_follow_from_tissues():
    case = make_case(seed=2, fov="pelvis", spacing=(4.0, 4.0, 4.0))
    assert case.labels.array.max() <= 40
    assert set(np.unique(to_classes(np.arange(10, dtype=np.uint8)))) <= set(range(41))


def test_organ_scales_are_for_generated_subjects_and_recorded():
    case = make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), organ_scales={"left_kidney": 0.9})
    assert case.metadata["organ_scales"] == {"left_kidney": 0.9}
    assert case.metadata["anatomy"]["left_kidney_size_factor"] == 0.9
    with pytest.raises(InputError, match="organ_scales resizes a generated subject's organs"):
        make_case(seed=2, from_labels=case.labels, organ_scales={"left_kidney": 0.9})


def test_a_perirenal_room_is_for_generated_subjects_and_recorded():
    case = make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), perirenal_room=30.0)
    assert case.metadata["perirenal_room_mm"] == 30.0
    assert "perirenal_room_mm" not in make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0)).metadata
    with pytest.raises(InputError, match="perirenal_room makes room in a generated subject's anatomy"):
        make_case(seed=2, from_labels=case.labels, perirenal_room=30.0)


def test_arms_and_the_table_are_for_generated_subjects_recorded_and_on_the_phantom_command(tmp_path):
    case = make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), arms=True)
    assert case.metadata["arms"] is True and "arms" not in make_case(seed=2, fov="abdomen",
                                                                      spacing=(8.0, 8.0, 8.0)).metadata
    with pytest.raises(InputError, match="arms are drawn for a generated subject"):
        make_case(seed=2, from_labels=case.labels, arms=True)
    assert main(["phantom", "-o", str(tmp_path), "-n", "1", "--seed", "5", "--fov", "abdomen", "--spacing", "8", "8",
                 "8", "--arms"]) == 0
    assert json.loads((tmp_path / "phantom_0005.json").read_text())["arms"] is True
    with pytest.raises(InputError, match="the table is drawn under a generated subject"):
        make_case(seed=2, from_labels=case.labels, table=True)
    assert main(["phantom", "-o", str(tmp_path / "t"), "-n", "1", "--seed", "5", "--fov", "abdomen", "--spacing", "8",
                 "8", "8", "--table"]) == 0
    assert json.loads((tmp_path / "t" / "phantom_0005.json").read_text())["table"] is True


def test_an_air_margin_is_for_generated_subjects_recorded_and_on_the_phantom_command(tmp_path, caplog):
    """``air_margin`` widens the field of view into air: the anatomy is unchanged in the middle;
    a label map's grid is given; ``--air-margin`` takes one number or four (one line, exit 2,
    nothing written otherwise)."""
    plain = make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), modality="ct")
    wide = make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), modality="ct", air_margin=(16, 32, 48, 64))
    assert wide.metadata["air_margin_mm"] == [16.0, 32.0, 48.0, 64.0] and "air_margin_mm" not in plain.metadata
    # x gains 2 + 4 voxels, y 6 + 8 (numpy order z, y, x); the old grid's labels sit inside, air around
    assert wide.labels.array.shape == (plain.labels.array.shape[0], plain.labels.array.shape[1] + 14,
                                       plain.labels.array.shape[2] + 6)
    inner = (slice(None), slice(6, 6 + plain.labels.array.shape[1]), slice(2, 2 + plain.labels.array.shape[2]))
    np.testing.assert_array_equal(wide.labels.array[inner], plain.labels.array)
    outside = np.ones(wide.labels.array.shape, bool)
    outside[inner] = False
    assert not wide.labels.array[outside].any() and np.median(wide.image.array[outside]) < -900  # air, HU
    with pytest.raises(InputError, match="air_margin widens a generated subject's field of view"):
        make_case(seed=2, from_labels=plain.labels, air_margin=10.0)
    with pytest.raises(InputError, match=r"air_margin is one number or four \(right, left, front, back\)"):
        make_case(seed=2, fov="abdomen", spacing=(8.0, 8.0, 8.0), air_margin=(10.0, 10.0))
    assert main(["phantom", "-o", str(tmp_path / "a"), "-n", "1", "--seed", "5", "--fov", "abdomen", "--spacing", "8",
                 "8", "8", "--air-margin", "40"]) == 0
    assert json.loads((tmp_path / "a" / "phantom_0005.json").read_text())["air_margin_mm"] == [40.0] * 4
    caplog.clear()
    assert main(["phantom", "-o", str(tmp_path / "b"), "-n", "1", "--fov", "abdomen", "--spacing", "8", "8", "8",
                 "--air-margin", "-5"]) == 2
    assert not (tmp_path / "b").exists()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "air_margin is one number or four (right, left, front, back), each 0-300 mm, got [-5.0]"]


def test_phantom_command_perirenal_room(tmp_path, caplog):
    """``--perirenal-room``: recorded in the sidecar; a negative height: one line, exit 2, nothing written."""
    common = ["phantom", "-n", "1", "--fov", "abdomen", "--seed", "5", "--spacing", "6", "6", "6"]
    assert main([*common, "-o", str(tmp_path / "roomy"), "--perirenal-room", "40"]) == 0
    assert json.loads((tmp_path / "roomy" / "phantom_0005.json").read_text())["perirenal_room_mm"] == 40.0
    assert main([*common, "-o", str(tmp_path / "bad"), "--perirenal-room", "-3"]) == 2
    assert "perirenal_room_mm is a distance in mm" in caplog.text
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_phantom_command_organ_scale(tmp_path, caplog):
    """``--organ-scale``: the named organ smaller for the same body, recorded in the sidecar; an
    organ that cannot be scaled, a factor out of range or not a number: one line, exit 2, nothing written."""
    common = ["phantom", "-n", "1", "--fov", "abdomen", "--seed", "5", "--spacing", "6", "6", "6"]
    assert main([*common, "-o", str(tmp_path / "plain")]) == 0
    assert main([*common, "-o", str(tmp_path / "small"), "--organ-scale", "spleen", "0.8"]) == 0
    spleen = BASE.index_of("spleen")
    volumes = {name: int((read_image(tmp_path / name / "phantom_0005_labels.nii.gz").array == spleen).sum())
               for name in ("plain", "small")}
    assert volumes["small"] < 0.75 * volumes["plain"], volumes
    assert json.loads((tmp_path / "small" / "phantom_0005.json").read_text())["organ_scales"] == {"spleen": 0.8}
    for bad, message in ((["stomach", "0.8"], "'stomach' cannot be scaled"),
                         (["liver", "2"], "liver's factor must lie within"),
                         (["liver", "small"], "--organ-scale takes an organ and a number")):
        out = tmp_path / "bad"
        caplog.clear()
        assert main([*common, "-o", str(out), "--organ-scale", *bad]) == 2
        assert message in caplog.text and not out.exists()
