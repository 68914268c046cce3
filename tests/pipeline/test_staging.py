"""Staging and commits: outputs move in with the record last; a stopped commit is rolled forward."""

from __future__ import annotations

from mrseg.pipeline.staging import commit, new_staging, recover, remove_empty_work_folder


def staged_case(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    staging = new_staging(out / ".mrseg" / "staging" / "a_seg")
    (staging / "a_seg.nii.gz").write_bytes(b"labels")
    (staging / "a_seg").mkdir()
    (staging / "a_seg" / "liver.nii.gz").write_bytes(b"mask")
    return out, staging


def test_commit_moves_outputs_then_the_record_and_replaces_old_folders(tmp_path):
    out, staging = staged_case(tmp_path)
    (out / "a_seg").mkdir()
    (out / "a_seg" / "old.nii.gz").write_bytes(b"old")
    (staging / "a_seg_record.json").write_text("{}")
    commit(staging, out, "a_seg_record.json")
    assert (out / "a_seg.nii.gz").read_bytes() == b"labels"
    assert sorted(p.name for p in (out / "a_seg").iterdir()) == ["liver.nii.gz"]
    assert (out / "a_seg_record.json").exists() and not staging.exists()


def test_recover_rolls_a_complete_staging_forward(tmp_path):
    out, staging = staged_case(tmp_path)
    (staging / "a_seg_record.json").write_text("{}")
    (staging / "a_seg.nii.gz").rename(out / "a_seg.nii.gz")  # the first move happened, then the crash
    assert recover(staging, out, "a_seg_record.json") == "rolled forward"
    assert (out / "a_seg_record.json").exists() and (out / "a_seg" / "liver.nii.gz").exists()
    assert not staging.exists()


def test_recover_removes_an_incomplete_staging(tmp_path):
    out, staging = staged_case(tmp_path)
    assert recover(staging, out, "a_seg_record.json") == "removed"
    assert not staging.exists() and list(out.iterdir()) == [out / ".mrseg"]
    assert recover(staging, out, "a_seg_record.json") is None
    remove_empty_work_folder(out / ".mrseg")
    assert list(out.iterdir()) == []
