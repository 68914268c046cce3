"""Real check: TotalSegmentator fast vs full on the same CT (../shared/data; skipped without it)."""

from __future__ import annotations

import json
import warnings

import pytest

from mrseg.classes import BASE
from mrseg.cli import main
from mrseg.evaluation import Status, evaluate_cohort, label_map
from mrseg.io import read_image


def test_fast_vs_full_totalsegmentator_through_the_117_class_map(shared_data, tmp_path):
    labels = shared_data / "labels"
    pred = labels / "example_ct_sm__totalseg117_fast.nii.gz"
    ref = labels / "example_ct_sm__totalseg117.nii.gz"  # its header keeps the full scan's origin
    result = evaluate_cohort(pred, ref, pred_map="totalseg", ref_map="totalseg", nsd_tolerance=2.0)
    (case,) = result.cases
    present = {name: m for name, m in case.metrics.items() if m.status is not Status.ABSENT}
    assert len(present) == 22 and all(m.status is Status.OK for m in present.values())
    assert present["liver"].dice > 0.95 and present["spleen"].dice > 0.95
    assert all(m.dice > 0.75 for m in present.values())
    assert present["liver"].hd95 is not None and present["liver"].hd95 <= 6.0  # two 3 mm voxels

    out = tmp_path / "report"
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--pred-map", "totalseg", "--ref-map",
                 "totalseg", "--no-plots", "-o", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["cases"][0]["classes"]["liver"]["dice"] == pytest.approx(present["liver"].dice)


def test_real_pair_agrees_with_monai(shared_data):
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    labels = shared_data / "labels"
    pred = labels / "example_ct_sm__totalseg117_fast.nii.gz"
    ref = labels / "example_ct_sm__totalseg117.nii.gz"
    result = evaluate_cohort(pred, ref, pred_map="totalseg", ref_map="totalseg", nsd_tolerance=3.0)
    mapping = label_map("totalseg")
    p40, r40 = mapping.apply(read_image(pred).array), mapping.apply(read_image(ref).array)
    spacing = list(read_image(ref).geometry.spacing_zyx)
    for name, ours in result.cases[0].metrics.items():
        if ours.status is not Status.OK:
            continue
        k = BASE.index_of(name)
        p = torch.from_numpy(p40 == k)[None, None].float()
        r = torch.from_numpy(r40 == k)[None, None].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hd95 = float(monai_metrics.compute_hausdorff_distance(p, r, percentile=95, spacing=spacing)[0, 0])
            assd = float(monai_metrics.compute_average_surface_distance(p, r, symmetric=True, spacing=spacing)[0, 0])
            nsd = float(monai_metrics.compute_surface_dice(p, r, [3.0], spacing=spacing, include_background=True)[0, 0])
        assert ours.hd95 == pytest.approx(hd95, rel=1e-5), name
        assert ours.assd == pytest.approx(assd, rel=1e-5), name
        assert ours.nsd == pytest.approx(nsd, abs=1e-6), name
