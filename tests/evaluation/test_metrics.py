"""Metrics against MONAI, edge cases, crop exactness, the accumulator and summaries."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from mrseg.errors import InputError
from mrseg.evaluation import (
    MaskMetrics,
    MetricAccumulator,
    Status,
    Summary,
    average_symmetric_surface_distance,
    compare_labels,
    compare_masks,
    dice,
    hausdorff_distance,
    hd95,
    labelled_as,
    normalized_surface_dice,
    surface,
    surface_distances,
)

torch = pytest.importorskip("torch")


@functools.cache
def _monai_metrics():
    """MONAI's metrics, imported at first use: importing them at collection cost every test process
    4 s, whether or not it ran these tests."""
    return pytest.importorskip("monai.metrics")


SPACING_ZYX = (2.5, 0.8, 1.1)


def _monai(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float, subvoxels: bool = False) -> dict[str, float]:
    """The five metrics from MONAI 1.x for one mask pair (one-hot tensors, batch and channel of 1)."""
    monai_metrics = _monai_metrics()
    p = torch.from_numpy(np.ascontiguousarray(pred))[None, None].float()
    r = torch.from_numpy(np.ascontiguousarray(ref))[None, None].float()
    s = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(monai_metrics.compute_dice(p, r, include_background=True)[0, 0]),
            "hd": float(monai_metrics.compute_hausdorff_distance(p, r, include_background=True, spacing=s)[0, 0]),
            "hd95": float(monai_metrics.compute_hausdorff_distance(
                p, r, include_background=True, percentile=95, spacing=s)[0, 0]),
            "assd": float(monai_metrics.compute_average_surface_distance(
                p, r, include_background=True, symmetric=True, spacing=s)[0, 0]),
            "nsd": float(monai_metrics.compute_surface_dice(
                p, r, [tolerance], include_background=True, spacing=s, use_subvoxels=subvoxels)[0, 0]),
        }


def _pairs(synth, rng: np.random.Generator):
    """Random blob pairs (unrelated, shifted, eroded) and shape pairs, all non-empty."""
    for _ in range(4):
        a = synth.random_blob(rng)
        yield "unrelated", a, synth.random_blob(rng, fill=rng.uniform(0.1, 0.4))
        yield "shifted", a, np.roll(a, (1, -2, 1), axis=(0, 1, 2))
        yield "eroded", a, ndimage.binary_erosion(a) if ndimage.binary_erosion(a).any() else a
    named = synth.shapes()
    names = sorted(named)
    for i, name in enumerate(names):
        yield f"{name}-vs-{names[(i + 3) % len(names)]}", named[name], named[names[(i + 3) % len(names)]]
        yield f"{name}-shifted", named[name], np.roll(named[name], 1, axis=i % 3)


@pytest.mark.parametrize("tolerance", [1.0, 2.0, 3.0])
def test_agree_with_monai_on_blobs_and_shapes(synth, tolerance):
    """Same surfaces, distances, percentile rule and pooling as MONAI: equal up to MONAI's float32."""
    rng = np.random.default_rng(7)
    for name, pred, ref in _pairs(synth, rng):
        ours = compare_masks(pred, ref, spacing=SPACING_ZYX, nsd_tolerance=tolerance)
        theirs = _monai(pred, ref, SPACING_ZYX, tolerance)
        assert ours.status is Status.OK
        assert ours.dice == pytest.approx(theirs["dice"], abs=1e-6), name
        for metric in ("hd", "hd95", "assd"):
            assert ours.value(metric) == pytest.approx(theirs[metric], rel=1e-5, abs=1e-5), (name, metric)
        assert ours.nsd == pytest.approx(theirs["nsd"], abs=1e-6), name


def test_nsd_counts_voxels_where_deepmind_weighs_surface_areas(synth):
    """The documented difference: MONAI's sub-voxel NSD (DeepMind's surface elements) is another number.

    Both give 1 for identical masks and stay close for well-overlapping masks, but they are not
    the same definition (surface elements sit on voxel faces and are weighted by area).
    """
    rng = np.random.default_rng(3)
    a = synth.random_blob(rng)
    assert compare_masks(a, a, spacing=SPACING_ZYX).nsd == 1.0
    assert _monai(a, a, SPACING_ZYX, 2.0, subvoxels=True)["nsd"] == pytest.approx(1.0)
    differences = []
    for _ in range(3):
        a = synth.random_blob(rng)
        b = np.roll(a, 1, axis=1)
        ours = compare_masks(a, b, spacing=SPACING_ZYX, nsd_tolerance=2.0).nsd
        area_weighted = _monai(a, b, SPACING_ZYX, 2.0, subvoxels=True)["nsd"]
        assert ours is not None and abs(ours - area_weighted) < 0.03
        differences.append(abs(ours - area_weighted))
    assert max(differences) > 1e-3


def test_pure_functions_match_compare_masks(synth):
    rng = np.random.default_rng(11)
    a, b = synth.random_blob(rng), synth.random_blob(rng)
    all_at_once = compare_masks(a, b, spacing=SPACING_ZYX, nsd_tolerance=1.5)
    assert dice(a, b) == all_at_once.dice
    assert hausdorff_distance(a, b, spacing=SPACING_ZYX) == all_at_once.hd
    assert hd95(a, b, spacing=SPACING_ZYX) == all_at_once.hd95
    assert hausdorff_distance(a, b, spacing=SPACING_ZYX, percentile=100) == all_at_once.hd
    assert average_symmetric_surface_distance(a, b, spacing=SPACING_ZYX) == pytest.approx(all_at_once.assd)
    assert normalized_surface_dice(a, b, spacing=SPACING_ZYX, tolerance=1.5) == all_at_once.nsd


def test_known_values_with_anisotropic_spacing():
    ref = np.zeros((8, 8, 8), bool)
    ref[2:6, 2:6, 2:6] = True
    pred = np.roll(ref, 1, axis=0)  # shifted by one slice of 3 mm
    m = compare_masks(pred, ref, spacing=(3.0, 1.0, 0.5), nsd_tolerance=2.9)
    assert m.dice == pytest.approx(0.75)
    assert m.hd == pytest.approx(3.0) and m.hd95 == pytest.approx(3.0)
    assert m.nsd is not None and m.nsd < 1.0
    assert compare_masks(pred, ref, spacing=(3.0, 1.0, 0.5), nsd_tolerance=3.0).nsd == 1.0
    # the same shift along the 0.5 mm axis costs 0.5 mm
    assert hausdorff_distance(np.roll(ref, 1, axis=2), ref, spacing=(3.0, 1.0, 0.5)) == pytest.approx(0.5)
    # a scalar spacing means isotropic voxels; None means 1 mm
    assert hausdorff_distance(pred, ref, spacing=2.0) == 2.0
    assert hausdorff_distance(pred, ref) == 1.0


def test_surface_is_mask_minus_its_erosion_with_the_border_outside(synth):
    rng = np.random.default_rng(5)
    for mask in [synth.random_blob(rng, fill=0.6), *synth.shapes().values(), np.ones((5, 6, 7), bool)]:
        expected = mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1),
                                                 border_value=0)
        assert np.array_equal(surface(mask), expected)
    assert surface(np.ones((5, 6, 7), bool)).sum() == 5 * 6 * 7 - 3 * 4 * 5


def _uncropped(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
    """The metrics computed on the full arrays, without any bounding box (the slow, obvious way)."""
    sp, sr = surface(pred), surface(ref)
    d_pr = ndimage.distance_transform_edt(~sr, sampling=spacing)[sp]
    d_rp = ndimage.distance_transform_edt(~sp, sampling=spacing)[sr]
    both = np.concatenate([d_pr, d_rp])
    return {
        "dice": 2 * (pred & ref).sum() / (pred.sum() + ref.sum()),
        "hd": max(d_pr.max(), d_rp.max()),
        "hd95": max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)),
        "assd": both.mean(),
        "nsd": (both <= tolerance).mean(),
    }


def test_bounding_box_crop_is_exact(synth):
    """Small masks in a large volume (and one touching the border) give the same numbers cropped or not."""
    rng = np.random.default_rng(2)
    for _ in range(3):
        big_pred = np.zeros((40, 70, 60), bool)
        big_ref = np.zeros_like(big_pred)
        a = synth.random_blob(rng, shape=(12, 20, 16))
        big_ref[10:22, 30:50, 20:36] = a
        big_pred[11:23, 28:48, 22:38] = np.roll(a, 1, axis=1) | ndimage.binary_dilation(a)
        big_pred[0:3, 0:4, 0:5] = True  # a false positive far away, at the volume's corner
        cropped = compare_masks(big_pred, big_ref, spacing=SPACING_ZYX, nsd_tolerance=2.0)
        full = _uncropped(big_pred, big_ref, SPACING_ZYX, 2.0)
        for metric, value in full.items():
            assert cropped.value(metric) == pytest.approx(value, rel=1e-12, abs=1e-12), metric


def test_compare_labels_equals_mask_by_mask(synth):
    rng = np.random.default_rng(9)
    ref = np.zeros((20, 40, 36), np.uint8)
    pred = np.zeros_like(ref)
    for k in (1, 3, 7):
        ref[synth.random_blob(rng, shape=ref.shape, fill=0.1)] = k
        pred[synth.random_blob(rng, shape=ref.shape, fill=0.1)] = k
    pred[ref == 7] = 7
    results = compare_labels(pred, ref, labels=[1, 3, 7, 9], spacing=SPACING_ZYX, nsd_tolerance=2.0)
    assert list(results) == [1, 3, 7, 9]
    for k in (1, 3, 7):
        assert results[k] == compare_masks(pred == k, ref == k, spacing=SPACING_ZYX, nsd_tolerance=2.0)
    assert results[9].status is Status.ABSENT


def test_both_empty_is_excluded_not_perfect():
    empty = np.zeros((6, 7, 8), bool)
    m = compare_masks(empty, empty, spacing=SPACING_ZYX)
    assert m.status is Status.ABSENT and m.status.value == "absent in both"
    assert all(m.value(k) is None for k in ("dice", "hd", "hd95", "assd", "nsd"))
    assert math.isnan(dice(empty, empty))
    assert math.isnan(hausdorff_distance(empty, empty))
    assert math.isnan(normalized_surface_dice(empty, empty))
    acc = MetricAccumulator()
    acc.add("a", "liver", m)
    summary = acc.aggregate("dice")
    assert summary.n == 0 and summary.n_missing == 0


@pytest.mark.parametrize("empty_side", ["pred", "ref"])
def test_one_empty_mask(synth, empty_side):
    mask = synth.shapes()["ellipsoid"]
    empty = np.zeros_like(mask)
    pred, ref = (empty, mask) if empty_side == "pred" else (mask, empty)
    m = compare_masks(pred, ref, spacing=SPACING_ZYX)
    assert m.status is (Status.EMPTY_PREDICTION if empty_side == "pred" else Status.EMPTY_REFERENCE)
    assert m.dice == 0.0 and m.nsd == 0.0
    assert m.hd is None and m.hd95 is None and m.assd is None
    assert dice(pred, ref) == 0.0 and normalized_surface_dice(pred, ref) == 0.0
    assert math.isnan(hd95(pred, ref, spacing=SPACING_ZYX))
    assert math.isnan(average_symmetric_surface_distance(pred, ref))
    assert surface_distances(pred, ref).pred_to_ref.size == 0
    # MONAI reports an infinite distance here; we report it missing, with the reason in the status
    assert math.isinf(_monai(pred, ref, SPACING_ZYX, 2.0)["hd"])


def test_invalid_inputs_are_refused():
    a = np.zeros((4, 5, 6), bool)
    with pytest.raises(InputError, match="same shape"):
        compare_masks(a, np.zeros((4, 5, 7), bool))
    with pytest.raises(InputError, match="one voxel size per array axis"):
        compare_masks(a, a, spacing=(1.0, 1.0))
    with pytest.raises(InputError, match="positive and finite"):
        compare_masks(a, a, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="tolerance"):
        compare_masks(a, a, nsd_tolerance=-1)
    with pytest.raises(InputError, match="boolean"):
        compare_masks(a.astype(np.uint8) + 2, a)
    with pytest.raises(InputError, match="boolean mask"):
        dice(a.astype(str), a)
    with pytest.raises(InputError, match="percentile"):
        hausdorff_distance(a, a, percentile=101)
    with pytest.raises(InputError, match="integer label map"):
        compare_labels(a.astype(float), a.astype(float), labels=[1])
    with pytest.raises(InputError, match="positive label values"):
        compare_labels(a.astype(np.uint8), a.astype(np.uint8), labels=[0, 1])
    with pytest.raises(InputError, match="negative"):
        compare_labels(a.astype(np.int16) - 1, a.astype(np.int16), labels=[1])
    with pytest.raises(InputError, match="unknown metric"):
        compare_masks(a, a).value("jaccard")
    # 0/1 integer masks are fine
    b = a.copy()
    b[1:3, 1:3, 1:3] = True
    assert dice(b.astype(np.uint8), b.astype(np.int64)) == 1.0


def test_two_dimensional_masks():
    a = np.zeros((10, 12), bool)
    a[2:6, 3:9] = True
    b = np.roll(a, 2, axis=0)
    m = compare_masks(a, b, spacing=(0.5, 2.0))
    assert m.hd == pytest.approx(1.0) and m.dice == pytest.approx(0.5)


def test_inputs_are_not_modified(synth):
    rng = np.random.default_rng(4)
    a, b = synth.random_blob(rng), synth.random_blob(rng)
    a0, b0 = a.copy(), b.copy()
    compare_masks(a, b, spacing=SPACING_ZYX)
    compare_labels(a.astype(np.uint8), b.astype(np.uint8), labels=[1])
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_accumulator_aggregates_with_strata_and_cap(synth):
    ref = synth.shapes()["ellipsoid"]
    acc = MetricAccumulator(nsd_tolerance=2.0)
    acc.update(ref, ref, spacing=SPACING_ZYX, case="a", label="liver", strata={"sequence": "T1"})
    shifted = acc.update(np.roll(ref, 2, axis=1), ref, spacing=SPACING_ZYX, case="b", label="liver",
                         strata={"sequence": "T2"})
    acc.update(np.zeros_like(ref), ref, spacing=SPACING_ZYX, case="c", label="liver", strata={"sequence": "T2"})
    acc.update(np.zeros_like(ref), np.zeros_like(ref), spacing=SPACING_ZYX, case="c", label="spleen")
    assert len(acc) == 4

    d = acc.aggregate("dice", label="liver")
    assert d.n == 3 and d.mean == pytest.approx((1.0 + shifted.dice + 0.0) / 3)
    assert d.sd == pytest.approx(np.std([1.0, shifted.dice, 0.0], ddof=1))
    hd = acc.aggregate("hd95", label="liver")
    assert hd.n == 2 and hd.n_missing == 1 and hd.mean == pytest.approx((0.0 + shifted.hd95) / 2)
    capped = acc.aggregate("hd95", label="liver", distance_cap=100.0)
    assert capped.n == 3 and capped.n_capped == 1 and capped.maximum == 100.0
    t2 = acc.aggregate("dice", where={"sequence": "T2"})
    assert t2.n == 2 and t2.mean == pytest.approx(shifted.dice / 2)
    assert acc.aggregate("dice", label="spleen").n == 0  # absent in both: left out entirely

    with pytest.raises(InputError, match="NSD tolerance"):
        acc.add("d", "liver", compare_masks(ref, ref, nsd_tolerance=1.0))
    with pytest.raises(InputError, match="distance cap"):
        acc.aggregate("hd", distance_cap=-1.0)
    acc.reset()
    assert len(acc) == 0


def test_summary_statistics_and_formatting():
    s = Summary.of([1.0, 2.0, 3.0, 4.0], n_missing=2)
    assert (s.n, s.n_missing, s.mean, s.median, s.q1, s.q3) == (4, 2, 2.5, 2.5, 1.75, 3.25)
    assert s.sd == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s.mean_sd(2) == "2.50 ± 1.29" and s.median_iqr(2) == "2.50 [1.75, 3.25]"
    one = Summary.of([0.9])
    assert math.isnan(one.sd) and one.mean_sd(1) == "0.9"
    none = Summary.of([])
    assert none.n == 0 and none.mean_sd() == "–" and none.median_iqr() == "–"
    with pytest.raises(InputError, match="finite"):
        Summary.of([1.0, float("nan")])


def test_undefined_metrics_object():
    m = MaskMetrics.undefined(Status.MISSING_PREDICTION, pred_voxels=0, ref_voxels=10, nsd_tolerance=2.0)
    assert m.dice == 0.0 and m.hd is None and str(m.status) == "missing prediction"


def test_more_invalid_inputs():
    from mrseg.evaluation.metrics import values_of

    with pytest.raises(InputError, match="at least one axis"):
        compare_masks(np.array(True), np.array(False))
    with pytest.raises(InputError, match="label maps must have the same shape"):
        compare_labels(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8), labels=[1])
    with pytest.raises(InputError, match="unknown metric 'iou'"):
        values_of([], "iou")
    assert compare_labels(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), labels=[]) == {}


def test_labelled_as_says_where_a_reference_mask_went():
    labels = np.zeros((4, 5, 5), np.uint8)
    reference = np.zeros_like(labels, dtype=bool)
    reference[1:3, 1:4, 1:4] = True  # 18 voxels
    labels[1:3, 1:4, 1:3] = 5  # 12 labelled 5
    labels[1, 1:4, 3] = 6  # 3 labelled 6; the other 3 background
    shares = labelled_as(labels, reference)
    assert list(shares) == [5, 0, 6]  # largest share first, ties in label order
    assert shares == pytest.approx({5: 12 / 18, 6: 3 / 18, 0: 3 / 18})
    assert labelled_as(labels, np.zeros_like(reference)) == {}
    with pytest.raises(InputError, match="differ in shape"):
        labelled_as(labels[:2], reference)
    with pytest.raises(InputError, match="reference must be a boolean"):
        labelled_as(labels, labels)
