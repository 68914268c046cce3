"""Pairing, metadata, strata, geometry checks and summaries over a small synthetic cohort."""

from __future__ import annotations

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.errors import InputError
from mrseg.evaluation import (
    Status,
    compare_masks,
    evaluate_case,
    evaluate_cohort,
    pair_cases,
    read_metadata,
    strata_from_pattern,
)
from mrseg.evaluation.cohort import compile_pattern
from mrseg.io import read_image, resample_labels, write_image
from mrseg.io.orientation import reorient

CLASSES = ["spleen", "right_kidney", "liver", "aorta"]  # labels 1, 2, 5, 13 of the synthetic volumes


def test_pairing(cohort):
    pairing = pair_cases(cohort["preds"], cohort["refs"])
    assert [p.case for p in pairing.pairs] == ["dsA_001", "dsA_002", "dsB_001", "dsB_002", "dsB_003"]
    assert [p.case for p in pairing.missing] == ["dsB_003"]
    assert pairing.pairs[1].ref.name == "dsA_002.mha"
    assert pairing.pairs[0].pred.name == "dsA_001_seg.nii.gz"
    assert [p.name for p in pairing.unmatched_predictions] == ["extra_seg.nii.gz"]
    # predictions named like the references match too
    (cohort["preds"] / "dsA_001_seg.nii.gz").rename(cohort["preds"] / "dsA_001.nii.gz")
    again = pair_cases(cohort["preds"], cohort["refs"])
    assert again.pairs[0].pred.name == "dsA_001.nii.gz"
    # a single pair of files
    single = pair_cases(cohort["preds"] / "dsA_001.nii.gz", cohort["refs"] / "dsA_001.nii.gz")
    assert [(p.case, p.pred.name) for p in single.pairs] == [("dsA_001", "dsA_001.nii.gz")]


def test_pairing_errors(cohort, tmp_path):
    (cohort["refs"] / "dsA_001.nrrd").write_bytes((cohort["refs"] / "dsA_001.nii.gz").read_bytes())
    with pytest.raises(InputError, match="two files for case 'dsA_001'"):
        pair_cases(cohort["preds"], cohort["refs"])
    (cohort["refs"] / "dsA_001.nrrd").unlink()
    with pytest.raises(InputError, match="no such file or folder"):
        pair_cases(tmp_path / "nowhere", cohort["refs"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no label files"):
        pair_cases(cohort["preds"], empty)
    with pytest.raises(InputError, match="two folders, or two files"):
        pair_cases(cohort["preds"], cohort["refs"] / "dsB_001.nii.gz")


def test_metadata_csv(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("\ufeffcase_id;dataset;sequence\n a ;ds1;T1\nb;ds2;\n", encoding="utf-8")
    assert read_metadata(path) == {"a": {"dataset": "ds1", "sequence": "T1"}, "b": {"dataset": "ds2"}}
    path.write_text("case,dataset\na,ds1\n")
    with pytest.raises(InputError, match="needs a 'case_id' column.*found columns \\['case', 'dataset'\\]"):
        read_metadata(path)
    path.write_text("case_id,dataset\na,ds1\na,ds2\n")
    with pytest.raises(InputError, match="line 3: case 'a' is listed twice"):
        read_metadata(path)
    with pytest.raises(InputError, match="cannot read the metadata CSV"):
        read_metadata(tmp_path / "missing.csv")


def test_filename_pattern():
    pattern = compile_pattern(r"(?P<dataset>[^_]+)_(?P<sequence>t1|t2)_(?P<case>\d+)")
    assert strata_from_pattern("amos_t2_0007", pattern) == {"dataset": "amos", "sequence": "t2"}
    assert strata_from_pattern("amos_dixon_0007", pattern) is None
    with pytest.raises(InputError, match="not a valid regular expression"):
        compile_pattern("(?P<dataset>[")
    with pytest.raises(InputError, match="no named group"):
        compile_pattern(r"[^_]+_.*")


def test_cohort_with_metadata_failures_and_strata(cohort):
    result = evaluate_cohort(cohort["preds"], cohort["refs"], classes=CLASSES, metadata=cohort["meta"],
                             pattern=r"(?P<dataset>[^_]+)_(?P<case>\d+)", nsd_tolerance=1.5)
    assert [c.case for c in result.cases] == ["dsA_001", "dsA_002", "dsB_001", "dsB_002", "dsB_003"]
    assert [c.case for c in result.failures] == ["dsB_003"]
    assert any("extra_seg.nii.gz has no reference" in w for w in result.warnings)
    assert result.cases[2].strata == {"dataset": "dsB", "modality": "MR", "sequence": "T1 in-phase", "scanner": "S1"}
    assert result.default_strata() == ("dataset", "modality", "sequence")
    assert result.settings.classes == tuple(CLASSES)

    # the missing prediction is scored as an empty prediction for every class its reference holds
    missing = result.cases[-1]
    assert missing.status == "missing prediction"
    for m in missing.metrics.values():
        assert m.status is Status.MISSING_PREDICTION or m.status is Status.ABSENT
        if m.status is Status.MISSING_PREDICTION:
            assert m.dice == 0.0 and m.nsd == 0.0 and m.hd95 is None and m.ref_voxels > 0

    # the evaluated cases equal the metrics computed directly from the files
    case = result.cases[1]
    ref = read_image(case.ref)
    pred = read_image(case.pred)
    liver = BASE.index_of("liver")
    direct = compare_masks(pred.array == liver, ref.array == liver, spacing=ref.geometry.spacing_zyx,
                           nsd_tolerance=1.5)
    assert case.metrics["liver"] == direct

    # summaries: over all cases and within each sequence, empty-mask rules applied
    rows = result.summary(by=["sequence"])
    overall = {(r.label, r.metric): r.summary for r in rows if r.group_by == "all"}
    dice = [c.metrics["liver"].dice for c in result.cases if c.metrics["liver"].status is not Status.ABSENT]
    assert overall[("liver", "dice")].n == len(dice)
    assert overall[("liver", "dice")].mean == pytest.approx(np.mean(dice))
    assert overall[("liver", "dice")].sd == pytest.approx(np.std(dice, ddof=1))
    assert overall[("liver", "dice")].median == pytest.approx(np.median(dice))
    assert overall[("liver", "hd95")].n_missing == 1  # the missing prediction
    groups = {r.group for r in rows if r.group_by == "sequence"}
    assert groups == {"CT", "T1 in-phase", "T2 HASTE"}
    t2 = {(r.label, r.metric): r.summary for r in rows if r.group == "T2 HASTE"}
    assert t2[("liver", "dice")].n == 2 and t2[("liver", "dice")].minimum == 0.0
    capped = result.summary(by=[], distance_cap=50.0)
    hd95 = next(r.summary for r in capped if r.label == "liver" and r.metric == "hd95")
    assert hd95.n_capped == 1 and hd95.maximum == 50.0
    with pytest.raises(InputError, match="no case has the stratum 'site'"):
        result.summary(by=["site"])

    acc = result.accumulator()
    assert acc.aggregate("dice", label="liver").mean == pytest.approx(np.mean(dice))
    assert acc.aggregate("dice", label="liver", where={"modality": "CT"}).n == 2


def test_metadata_gaps_are_warnings(cohort):
    cohort["meta"].write_text("case_id,sequence\ndsA_001,CT\nzzz_999,T1\n")
    result = evaluate_cohort(cohort["preds"], cohort["refs"], classes=["liver"], metadata=cohort["meta"],
                             pattern=r"dsA_(?P<case>\d+)")
    text = "\n".join(result.warnings)
    assert "case 'dsB_001' is not in the metadata file" in text
    assert "case 'dsB_001' does not match the pattern" in text
    assert "1 case(s) in the metadata file have no reference: zzz_999" in text
    rows = result.summary(by=["sequence"])
    assert {r.group for r in rows if r.group_by == "sequence"} == {"CT", "n/a"}


def test_geometry_mismatch_is_an_error_unless_resampling(cohort):
    path = cohort["preds"] / "dsB_001_seg.nii.gz"
    pred = read_image(path)
    moved = pred.with_geometry(origin=(pred.geometry.origin[0] + 0.5, *pred.geometry.origin[1:]))
    write_image(moved, path)
    with pytest.raises(InputError, match=r"dsB_001_seg.nii.gz vs .*dsB_001.nii.gz: origin") as info:
        evaluate_cohort(cohort["preds"], cohort["refs"], classes=CLASSES)
    assert "--resample-pred" in str(info.value)
    result = evaluate_cohort(cohort["preds"], cohort["refs"], classes=CLASSES, resample_pred=True)
    assert [c.resampled for c in result.cases] == [False, False, True, False, False]


def test_resampling_a_reoriented_prediction_changes_nothing(synth, cohort):
    """The same labels stored on a permuted/flipped grid resample back exactly (nearest neighbour)."""
    ref = read_image(cohort["refs"] / "dsA_001.nii.gz")
    pred = read_image(cohort["preds"] / "dsA_001_seg.nii.gz")
    same_grid = evaluate_case(pred, ref, classes=CLASSES)
    other_grid, _ = reorient(pred, "RAS")
    assert not other_grid.geometry.same_grid(ref.geometry)
    with pytest.raises(InputError, match="different grids.*--resample-pred"):
        evaluate_case(other_grid, ref, classes=CLASSES, pred_source="p.nii.gz", ref_source="r.nii.gz")
    resampled = evaluate_case(other_grid, ref, classes=CLASSES, resample_pred=True)
    assert resampled.resampled and dict(resampled.metrics) == dict(same_grid.metrics)
    back = resample_labels(other_grid, ref.geometry)
    assert np.array_equal(back.array, pred.array) and back.geometry == ref.geometry


def test_unreadable_prediction_is_a_failure(cohort):
    (cohort["preds"] / "dsA_002_seg.nii.gz").write_bytes(b"not an image")
    result = evaluate_cohort(cohort["preds"], cohort["refs"], classes=CLASSES)
    failed = {c.case: c for c in result.failures}
    assert set(failed) == {"dsA_002", "dsB_003"}
    assert failed["dsA_002"].status == "unreadable prediction" and "cannot read" in failed["dsA_002"].error


def test_cohort_input_errors(cohort):
    with pytest.raises(InputError, match="tolerance"):
        evaluate_cohort(cohort["preds"], cohort["refs"], nsd_tolerance=float("nan"))
    with pytest.raises(InputError, match="unknown label map 'amos'"):
        evaluate_cohort(cohort["preds"], cohort["refs"], ref_map="amos")
    with pytest.raises(InputError, match="are not in the 'chaos' label map"):
        evaluate_cohort(cohort["preds"], cohort["refs"], ref_map="chaos")


def test_more_input_errors(cohort, tmp_path):
    text_file = tmp_path / "labels.txt"
    text_file.write_text("x")
    with pytest.raises(InputError, match="not a label image file"):
        pair_cases(text_file, text_file)
    path = tmp_path / "latin1.csv"
    path.write_bytes("case_id,site\na,K\xf6ln\n".encode("latin-1"))
    with pytest.raises(InputError, match="must be UTF-8"):
        read_metadata(path)
    path.write_text("case_id,site\n,A\n")
    with pytest.raises(InputError, match="line 2: empty case_id"):
        read_metadata(path)
