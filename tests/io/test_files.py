"""Image files: write→read round trips in every format and orientation, atomic writes, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrseg.errors import InputError
from mrseg.io import IMAGE_SUFFIXES, Image, case_name, image_suffix, read_image, write_image
from mrseg.io.files import read_geometry

FORMATS = [".nii.gz", ".nii", ".mha", ".nrrd"]
ORIENTATIONS = ["RAS", "LPS", "LAS", "PIL", "ASL", "oblique"]
TOL = 1e-5  # NIfTI stores spacing, origin and direction as float32


def _assert_same_geometry(actual: Image, expected: Image, atol: float = TOL) -> None:
    assert actual.geometry.shape == expected.geometry.shape
    np.testing.assert_allclose(actual.geometry.spacing, expected.geometry.spacing, atol=atol, rtol=0)
    np.testing.assert_allclose(actual.geometry.origin, expected.geometry.origin, atol=atol, rtol=0)
    np.testing.assert_allclose(actual.geometry.direction, expected.geometry.direction, atol=atol, rtol=0)


def _hidden_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def _write_4d(path: Path, volumes: list[np.ndarray]) -> None:
    """A 4-D (x, y, z, t) file written by SimpleITK, with an LAS-like 3-D direction block."""
    image = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in volumes])
    image.SetSpacing((0.7, 1.1, 3.3, 2.0))
    image.SetOrigin((12.5, -31.25, 47.0, 5.0))
    direction = np.eye(4)
    direction[:3, :3] = np.diag([1.0, -1.0, 1.0])
    image.SetDirection(direction.ravel())
    sitk.WriteImage(image, str(path))


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path, make_image, suffix: str, name: str, dtype: str) -> None:
    img = make_image(name, dtype, seed=len(name) + len(suffix))
    path = write_image(img, tmp_path / f"case{suffix}")
    assert path == tmp_path / f"case{suffix}"
    assert sorted(os.listdir(tmp_path)) == [f"case{suffix}"]  # atomic: no temporary left behind

    back = read_image(path)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, img.array)
    _assert_same_geometry(back, img)
    assert read_geometry(path).same_grid(back.geometry, atol=1e-12)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64"])
def test_round_trip_other_dtypes(tmp_path, make_image, dtype: str) -> None:
    img = make_image("ASL", dtype)
    back = read_image(write_image(img, tmp_path / "case.nii.gz"))
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, img.array)
    _assert_same_geometry(back, img)


def test_write_does_not_mutate_and_accepts_non_contiguous(tmp_path, make_image) -> None:
    img = make_image("PIL")
    view = Image.from_array(img.array[::-1, :, ::2], spacing=(1.0, 2.0, 3.0))
    before = view.array.copy()
    back = read_image(write_image(view, tmp_path / "view.mha"))
    np.testing.assert_array_equal(back.array, before)
    np.testing.assert_array_equal(view.array, before)


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_header_formats_read_back(tmp_path, make_image, suffix: str) -> None:
    img = make_image("oblique")
    back = read_image(write_image(img, tmp_path / f"case{suffix}"))
    np.testing.assert_array_equal(back.array, img.array)
    _assert_same_geometry(back, img)


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
def test_detached_header_formats_leave_no_temporary(tmp_path, make_image, suffix: str) -> None:
    write_image(make_image("LPS"), tmp_path / f"case{suffix}")
    assert _hidden_files(tmp_path) == []


# --- atomic writes ------------------------------------------------------------------------------


def test_write_overwrites_existing_file(tmp_path, make_image) -> None:
    path = tmp_path / "case.nii.gz"
    write_image(make_image("LPS", seed=1), path)
    second = make_image("RAS", seed=2)
    write_image(second, path)
    back = read_image(path)
    np.testing.assert_array_equal(back.array, second.array)
    _assert_same_geometry(back, second)
    assert sorted(os.listdir(tmp_path)) == ["case.nii.gz"]


def test_write_creates_missing_parent_folders(tmp_path, make_image) -> None:
    path = write_image(make_image(), tmp_path / "a" / "b" / "case.nrrd")
    assert path.is_file()
    assert _hidden_files(tmp_path) == []


@pytest.mark.parametrize("name", ["case.png", "case.txt", "case", "case.nii.gz.bak"])
def test_write_unsupported_suffix(tmp_path, make_image, name: str) -> None:
    with pytest.raises(InputError, match=r"output must end with one of \.nii\.gz, \.nii, \.mha"):
        write_image(make_image(), tmp_path / "out" / name)
    assert os.listdir(tmp_path) == []  # nothing created, not even the folder


def test_write_onto_a_directory_leaves_no_temporary(tmp_path, make_image) -> None:
    target = tmp_path / "case.nii.gz"
    target.mkdir()
    with pytest.raises(OSError):
        write_image(make_image(), target)
    assert target.is_dir() and os.listdir(target) == []
    assert sorted(os.listdir(tmp_path)) == ["case.nii.gz"]


@pytest.mark.parametrize("exception", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_write_failure_in_simpleitk_leaves_nothing(tmp_path, make_image, monkeypatch,
                                                    exception: BaseException) -> None:
    def half_write(image: object, file_name: str, *args: object) -> None:
        Path(file_name).write_bytes(b"\x00" * 100)  # a partial file under the temporary name
        raise exception

    monkeypatch.setattr(sitk, "WriteImage", half_write)
    with pytest.raises(type(exception)):
        write_image(make_image(), tmp_path / "case.nii.gz")
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_previous_file(tmp_path, make_image, monkeypatch) -> None:
    path = tmp_path / "case.mha"
    first = make_image("LAS", seed=3)
    write_image(first, path)

    def fail(*args: object) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sitk, "WriteImage", fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_image(make_image("LPS", seed=4), path)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path).array, first.array)
    assert sorted(os.listdir(tmp_path)) == ["case.mha"]


def test_written_file_has_ordinary_permissions(tmp_path, make_image) -> None:
    old = os.umask(0o022)
    try:
        ordinary = tmp_path / "ordinary.txt"
        ordinary.write_text("x")
        path = write_image(make_image(), tmp_path / "case.nii.gz")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(ordinary.stat().st_mode & 0o777)


# --- bad input ----------------------------------------------------------------------------------


def test_read_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match=r"missing\.nii\.gz: no such file or folder; check the path"):
        read_image(tmp_path / "missing.nii.gz")


def test_read_text_file_named_nifti(tmp_path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is a text file, not an image\n")
    with pytest.raises(InputError, match=r"notes\.nii\.gz: cannot read this image .*not an image"):
        read_image(path)


def test_read_empty_file(tmp_path) -> None:
    path = tmp_path / "empty.mha"
    path.touch()
    with pytest.raises(InputError, match="cannot read this image"):
        read_image(path)


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    "suffix",
    [
        ".nii.gz",
        ".nii",
        ".mha",
        ".nrrd",
    ],
)
def test_read_truncated_file(tmp_path, make_image, suffix: str) -> None:
    path = _truncate(write_image(make_image("LAS", shape=(9, 31, 33)), tmp_path / f"case{suffix}"), 0.5)
    with pytest.raises(InputError, match=r"cannot read this image \(file truncated"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_read_nifti_cut_inside_header(tmp_path, make_image, suffix: str) -> None:
    path = write_image(make_image(), tmp_path / f"case{suffix}")
    path.write_bytes(path.read_bytes()[:40])  # not even the 348-byte header is left
    with pytest.raises(InputError, match="cannot read this image"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_read_2d_image(tmp_path, suffix: str) -> None:
    path = tmp_path / f"slice{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5), np.int16)), str(path))
    with pytest.raises(InputError, match=r"image is 2-D \(size \(5, 4\)\); a 3-D volume is needed"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha", ".nrrd"])
def test_read_4d_needs_channel(tmp_path, suffix: str) -> None:
    rng = np.random.default_rng(5)
    volumes = [rng.normal(size=(7, 11, 13)).astype(np.float32) for _ in range(3)]
    path = tmp_path / f"series{suffix}"
    _write_4d(path, volumes)

    with pytest.raises(InputError, match=r"4-D with 3 volumes of shape \(7, 11, 13\); pick one with --channel"):
        read_image(path)
    with pytest.raises(InputError, match=r"channel 3 out of range 0\.\.2"):
        read_image(path, channel=3)

    img = read_image(path, channel=1)
    np.testing.assert_array_equal(img.array, volumes[1])
    assert img.array.flags.c_contiguous
    assert img.geometry.shape == (7, 11, 13)
    np.testing.assert_allclose(img.geometry.spacing, (0.7, 1.1, 3.3), atol=TOL, rtol=0)
    np.testing.assert_allclose(img.geometry.origin, (12.5, -31.25, 47.0), atol=TOL, rtol=0)
    np.testing.assert_allclose(img.geometry.direction, np.diag([1.0, -1.0, 1.0]).ravel(), atol=TOL, rtol=0)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_a_4d_file_of_one_volume_is_simply_3d(tmp_path, suffix: str) -> None:
    volume = np.random.default_rng(7).normal(size=(7, 11, 13)).astype(np.float32)
    path = tmp_path / f"one{suffix}"
    _write_4d(path, [volume])
    img = read_image(path)  # no --channel needed: one volume is not 4-D to a user
    np.testing.assert_array_equal(img.array, volume)
    np.testing.assert_allclose(img.geometry.origin, (12.5, -31.25, 47.0), atol=TOL, rtol=0)
    assert read_image(path, channel=0).geometry == img.geometry
    with pytest.raises(InputError, match="one channel, so --channel 1 does not apply"):
        read_image(path, channel=1)


def test_read_multi_component_needs_channel(tmp_path) -> None:
    rng = np.random.default_rng(6)
    array = rng.integers(0, 255, size=(5, 6, 7, 3), dtype=np.uint8)
    itk_image = sitk.GetImageFromArray(array, isVector=True)
    itk_image.SetSpacing((0.7, 1.1, 3.3))
    path = tmp_path / "rgb.mha"
    sitk.WriteImage(itk_image, str(path))

    with pytest.raises(InputError, match=r"3-component with 3 volumes of shape \(5, 6, 7\).*--channel"):
        read_image(path)
    img = read_image(path, channel=2)
    np.testing.assert_array_equal(img.array, array[..., 2])
    assert img.geometry.spacing == pytest.approx((0.7, 1.1, 3.3))


def test_read_channel_on_single_volume(tmp_path, make_image) -> None:
    img = make_image()
    path = write_image(img, tmp_path / "case.nrrd")
    np.testing.assert_array_equal(read_image(path, channel=0).array, img.array)
    with pytest.raises(InputError, match=r"image has one channel, so --channel 1 does not apply"):
        read_image(path, channel=1)


@pytest.mark.parametrize("name", ["scan.png", "scan.txt", "scan.dcm", "scan.nii.gz.bak"])
def test_read_unsupported_suffix(tmp_path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match=r"not a supported image file; use one of \.nii\.gz, .* or a DICOM folder"):
        read_image(path)


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "suffix", "name"),
    [
        ("a/b/scan.nii.gz", ".nii.gz", "scan"),
        ("x.mha", ".mha", "x"),
        ("x.nii", ".nii", "x"),
        ("case_001_0000.nrrd", ".nrrd", "case_001_0000"),
        ("head.nhdr", ".nhdr", "head"),
        ("body.mhd", ".mhd", "body"),
        ("UPPER.NII.GZ", ".nii.gz", "UPPER"),
        ("dots.in.name.nii.gz", ".nii.gz", "dots.in.name"),
        ("notes.txt", None, "notes.txt"),
        ("scan.nii.gz.bak", None, "scan.nii.gz.bak"),
        ("archive.gz", None, "archive.gz"),
    ],
)
def test_case_name_and_image_suffix(path: str, suffix: str | None, name: str) -> None:
    assert image_suffix(path) == suffix
    assert image_suffix(Path(path)) == suffix
    assert case_name(path) == name


def test_case_name_of_folder(tmp_path) -> None:
    folder = tmp_path / "patient_07" / "series_3"
    folder.mkdir(parents=True)
    assert image_suffix(folder) is None
    assert case_name(folder) == "series_3"
    assert case_name(str(folder) + "/") == "series_3"


def test_image_suffixes_longest_first() -> None:
    # ".nii.gz" must be tried before ".nii" would be, or case names would keep ".gz"
    assert IMAGE_SUFFIXES.index(".nii.gz") < IMAGE_SUFFIXES.index(".nii")


def test_output_folder_checks(tmp_path):
    from mrseg.io.files import check_output_folder

    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(InputError, match=r"file.txt: exists and is not a folder; give a folder"):
        check_output_folder(file)
    with pytest.raises(InputError, match=r"sub: cannot create this folder because .*file.txt is a file"):
        check_output_folder(file / "sub")


def test_label_maps_are_told_by_name_and_header(tmp_path):
    from mrseg.io.files import label_map_reason

    image = Image.from_array(np.zeros((4, 5, 6), np.uint8), spacing=(1, 1, 1), origin=(0, 0, 0),
                             direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert label_map_reason(tmp_path / "case_seg.nii.gz") == "its name ends in _seg"
    assert label_map_reason(tmp_path / "case_x.mha", postfixes=("x",)) == "its name ends in _x"
    plain = write_image(image, tmp_path / "plain.nii.gz")
    tagged = write_image(image, tmp_path / "tagged.nii.gz", description="mrseg label map (demo)")
    assert label_map_reason(plain) is None
    assert label_map_reason(tagged) == "its header says it is an mrseg label map"


def test_atomic_writes_give_the_writer_a_hidden_name_with_the_asked_ending_and_leave_nothing_on_failure(tmp_path):
    from mrseg.io.files import write_atomic

    seen: list[Path] = []

    def write(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_text("whole")

    target = tmp_path / "out" / "draft.seg.nrrd"
    assert write_atomic(target, write, suffix=".seg.nrrd") == target
    assert target.read_text() == "whole" and oct(target.stat().st_mode & 0o777) == "0o644"
    (temporary,) = seen
    assert temporary.parent == target.parent and temporary.name.startswith(".draft.seg.nrrd.")
    assert temporary.name.endswith(".part.seg.nrrd") and not temporary.exists()

    def fail(temporary: Path) -> None:
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, fail, suffix=".seg.nrrd")
    assert target.read_text() == "whole" and _hidden_files(tmp_path) == []


def test_leftovers_of_killed_writers_go_once_old_and_everything_else_stays(tmp_path):
    from mrseg.io.files import remove_leftovers

    old = [tmp_path / ".case.nii.gz.x1.part", tmp_path / ".draft.seg.nrrd.x2.part.seg.nrrd",
           tmp_path / ".case.nii.gz.writing-3"]
    (tmp_path / ".scan.nii.gz.x4.part").mkdir()  # write_image's staging folder
    (tmp_path / ".scan.nii.gz.x4.part" / "scan.nii.gz").write_text("half")
    old.append(tmp_path / ".scan.nii.gz.x4.part")
    young = tmp_path / ".case.nii.gz.x5.part"
    kept = [young, tmp_path / "case.part.nii.gz", tmp_path / ".hidden_notes.txt", tmp_path / ".participants.csv"]
    for path in old[:3] + kept:
        path.write_text("x")
    for path in old + kept[1:]:
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert sorted(remove_leftovers(tmp_path)) == sorted(old)
    assert not any(p.exists() for p in old) and all(p.exists() for p in kept)
    assert remove_leftovers(tmp_path, older_than_s=0.0) == [young]


def test_leftovers_of_named_files_go_at_any_age_and_other_writers_leftovers_stay(tmp_path):
    from mrseg.io.files import remove_leftovers

    ours = [tmp_path / ".cohort_manifest.csv.k3j9.part", tmp_path / ".cohort.json.a1.part"]
    theirs = [tmp_path / ".case_seg.nii.gz.x1.part", tmp_path / ".cohort_manifest.csv.bak", tmp_path / "cohort.json"]
    for path in ours + theirs:
        path.write_text("half")  # all written just now: a plain sweep would keep every one
    assert sorted(remove_leftovers(tmp_path, older_than_s=0.0, of=("cohort_manifest.csv", "cohort.json"))) == \
        sorted(ours)
    assert all(p.exists() for p in theirs)
