"""The bundled demo model and ``mrseg demo``: offline end to end, nothing downloaded.

The demo model is trained by ``scripts/train_demo_model.py`` and committed under
``src/mrseg/models/demo`` (see its MODEL_CARD.md). The test of the error a missing model gives
runs only where the weights are absent (a build without them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mrseg.classes import BASE
from mrseg.cli import main
from mrseg.demo import run_demo
from mrseg.errors import ModelError
from mrseg.io import read_image
from mrseg.model.store import bundled_model_folder, resolve_model_folder
from mrseg.phantom.cases import make_case, write_case

MIN_LIVER_DICE = 0.5  # the model card: 0.90 on held-out phantoms of every contrast

DEMO_PRESENT = (Path(__file__).resolve().parents[1] / "src" / "mrseg" / "models" / "demo" / "fold_0" /
                "checkpoint_final.pth").is_file()
needs_demo = pytest.mark.skipif(not DEMO_PRESENT, reason="demo model missing from src/mrseg/models/demo")


@needs_demo
def test_the_demo_model_ships_inside_the_package_and_is_small():
    folder = bundled_model_folder("demo")
    assert folder == resolve_model_folder("demo")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 20 * 2**20
    assert (folder / "MODEL_CARD.md").is_file() and (folder / "plans.json").is_file()


@needs_demo
def test_the_demo_model_is_a_6_mm_and_a_4_mm_network_in_float16():
    """Weights 0.18 and 0.19: the folder's own 6 mm model (nnU-Net loads it alone) and a 4 mm member."""
    import torch

    from mrseg.model import load_model

    model = load_model(bundled_model_folder("demo"))
    assert [m.configuration.spacing for m in (model, *model.members)] == [(6.0, 6.0, 6.0), (4.0, 4.0, 4.0)]
    assert [m.folder.name for m in model.members] == ["4mm"]
    for member in (model, *model.members):
        weights = member.checkpoints[0].read_weights()
        assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}


@needs_demo
def test_mrseg_demo_synthesises_segments_and_scores(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "mean over" in out
    (labels,) = tmp_path.glob("*_seg.nii.gz")
    (image,) = [p for p in tmp_path.glob("demo_*.nii.gz") if not p.name.endswith(("_seg.nii.gz", "_labels.nii.gz"))]
    assert read_image(labels).geometry.same_grid(read_image(image).geometry)


@needs_demo
def test_demo_on_a_given_file_finds_its_truth_beside_it(tmp_path):
    case = make_case(seed=90_123, modality="mr", sequence="t2_haste", fov="abdomen", spacing=(3.0, 3.0, 3.0))
    paths = write_case(case, tmp_path / "in", "given")
    result = run_demo(tmp_path / "out", paths["image"])
    assert result.truth == paths["labels"] and result.labels == tmp_path / "out" / "given_seg.nii.gz"
    assert result.dice["liver"] > MIN_LIVER_DICE


@needs_demo
def test_segment_takes_the_demo_model_by_name(tmp_path):
    case = make_case(seed=90_124, modality="ct", sequence="native", fov="abdomen", spacing=(4.0, 4.0, 4.0))
    paths = write_case(case, tmp_path / "in", "ct")
    assert main(["segment", str(paths["image"]), "-o", str(tmp_path / "out"), "--model", "demo",
                 "--no-progress"]) == 0
    assert (tmp_path / "out" / "ct_seg.nii.gz").is_file()


@pytest.mark.skipif(DEMO_PRESENT, reason="the demo model is present")
def test_a_missing_demo_model_says_how_to_get_it(tmp_path, caplog):
    with pytest.raises(ModelError, match="the demo model is not in this installation .*train_demo_model.py"):
        bundled_model_folder("demo")
    assert main(["demo", "-o", str(tmp_path)]) == 2
    assert "train_demo_model.py" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing synthesised for a model that is not there


def test_an_unknown_bundled_model_is_refused():
    with pytest.raises(ModelError, match="unknown bundled model 'nope'; bundled: demo"):
        bundled_model_folder("nope")
    assert resolve_model_folder("some/folder") == Path("some/folder")


TRAIN_DEMO = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"


@pytest.mark.parametrize(("weight", "refusal"), [
    (["liver", "lots"], "--class-weight CLASS WEIGHT: the weight must be a number"),
    (["livr", "3"], "class weight for livr: the demo dataset has no such class (its classes: spleen, "),
    (["liver", "0"], "class weight 0.0 for liver: give a positive number"),
])
def test_train_demo_model_refuses_a_bad_class_weight_before_it_synthesises(tmp_path, weight, refusal):
    """Synthesis and planning take minutes: a weight that training would refuse is refused first."""
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), "--work", str(work), "--class-weight", *weight],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert refusal in done.stderr and "Traceback" not in done.stderr
    assert not work.exists()


@pytest.mark.parametrize(("flags", "refusal"), [
    (["--subject-scale", "1.05", "0.85"], "subject_scale must be a range (low, high)"),
    (["--subject-scale-share", "1.5"], "subject_scale_share is a share"),
    (["--layered-aorta-share", "-0.1"], "layered_aorta_share is a share"),
    (["--deformation-mm", "5", "30"], "deformation_mm is the displacement's SD, at most 20 mm"),
    (["--organ-scale", "0.3", "1.0"], "organ_scale is a size factor within"),
    (["--air-margin", "0", "350"], "air_margin_mm reaches at most 300 mm a side"),
    (["--scale-augmentation", "0.6", "1.4", "1.0"], "scale augmentation: the factors must satisfy"),
])
def test_train_demo_model_refuses_bad_ranges_before_it_synthesises(tmp_path, flags, refusal):
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), "--work", str(work), *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert refusal in done.stderr and "Traceback" not in done.stderr
    assert not work.exists()


def test_train_demo_model_refuses_skip_training_with_an_output_folder(tmp_path):
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), "--work", str(work), "--skip-training", "--out",
                           str(tmp_path / "model")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--skip-training stops after synthesis and planning" in done.stderr
    assert not work.exists() and not (tmp_path / "model").exists()


def test_train_demo_model_reads_a_recipe_file_with_several_flags_to_a_line_and_comments(tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("# a recipe\n--cases 5 --seed 300  # the case seeds\n--air-margin 0 350\n")
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), f"@{recipe}", "--work", str(work)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "air_margin_mm reaches at most 300 mm a side" in done.stderr and "Traceback" not in done.stderr
    assert not work.exists()


def test_the_kept_v210_recipe_is_a_valid_command_line(tmp_path):
    """``docs/demo_model_rules/flags_v210.txt`` parses: every flag in it is one the script takes (the run then
    stops at the refusal of --skip-training with --out, before anything is made)."""
    recipe = TRAIN_DEMO.parents[1] / "docs" / "demo_model_rules" / "flags_v210.txt"
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), f"@{recipe}", "--work", str(work), "--skip-training",
                           "--out", str(tmp_path / "model")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--skip-training stops after synthesis and planning" in done.stderr
    assert "unrecognized arguments" not in done.stderr
    assert not work.exists()


def test_train_demo_model_can_stop_after_synthesis_and_planning(tmp_path):
    """``--skip-training`` makes and plans the cases once, for trainings with other seeds to share."""
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(TRAIN_DEMO), "--work", str(work), "--cases", "5", "--seed", "300",
                           "--fov", "abdomen", "--crop-share", "0", "--template-share", "0", "--spacing", "12",
                           "--patch-size", "16", "16", "16", "--skip-training"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["cases"] == 5 and report["synthesis_s"] > 0
    preprocessed = Path(report["preprocessed"])
    assert (preprocessed / "Dataset500_MrsegDemo" / "mrsegPlans.json").is_file()
    assert len(list((work / "cases").glob("*_labels.nii.gz"))) == 5
    assert not list(work.rglob("fold_0"))  # nothing trained


COMPARE = Path(__file__).resolve().parents[1] / "scripts" / "compare_demo_models.py"
CONTRASTS = ("phantom ct native", "phantom mr t2_haste", "phantom mr t2_tse fat-suppressed")


def demo_evaluation(phantom=0.72, found=38, goal=(0.82, 0.80, 0.75, 0.58), ct=0.68, aorta=0.50, heart=0.81,
                    removed_ml=380.0):
    """What ``evaluate_demo_model.py --json`` writes, cut to what the comparison reads: 40 classes per
    phantom contrast (``found`` of them above 0, mean ``phantom``), two field-of-view versions of the
    real MR whose means are ``goal``."""
    adrenals = ["right_adrenal_gland", "left_adrenal_gland"]
    names = [name for name in BASE.foreground if name not in adrenals] + adrenals  # the adrenals score 0 first
    per_class = {name: (phantom * 40 / found if i < found else 0.0) for i, name in enumerate(names)}
    versions = {version: dict(zip(("liver", "spleen", "right_kidney", "left_kidney"),
                                  (dice + shift for dice in goal)))
                for version, shift in (("as acquired", 0.01), ("1 voxel off z low", -0.01))}
    return {**dict.fromkeys(CONTRASTS, per_class),
            "real MR field-of-view versions": versions,
            "real ct/example_ct.nii.gz": {"liver": ct, "spleen": ct},
            "real ct/thorax_cta.nii.gz": {"aorta": aorta, "heart": heart},
            "removed organ": {"liver": {"labelled_ml": removed_ml}}}


def compare(tmp_path, reference, *candidates, options=()):
    files = []
    for name, evaluation in (("reference", reference), *candidates):
        (tmp_path / f"{name}.json").write_text(json.dumps(evaluation))
        files.append(str(tmp_path / f"{name}.json") if name == "reference" else f"{name}={tmp_path / name}.json")
    return subprocess.run([sys.executable, str(COMPARE), *files, *options], capture_output=True, text=True,
                          timeout=60)


def test_compare_demo_models_adopts_a_candidate_that_keeps_every_criterion(tmp_path):
    done = compare(tmp_path, demo_evaluation(), ("same", demo_evaluation()),
                   ("better", demo_evaluation(phantom=0.74, found=40, goal=(0.85, 0.81, 0.76, 0.70))))
    assert done.returncode == 0, done.stderr
    assert "same: adopt\n" in done.stdout and "better: adopt\n" in done.stdout
    assert "| ct native | 0.720 (38) | 0.720 (38) | 0.740 (40) |" in done.stdout
    assert "| real MR goal mean | 0.7375 | 0.7375 | 0.7800 |" in done.stdout
    assert "| liver / spleen / R kidney / L kidney | 0.820 / 0.800 / 0.750 / 0.580 |" in done.stdout
    assert "every contrast kept, 40 classes found" in done.stdout


@pytest.mark.parametrize(("change", "fails", "why"), [
    ({"phantom": 0.714}, "1", "ct native 0.714 < 0.720"),
    ({"found": 37}, "1", "ct native 37 classes < 38"),
    ({"aorta": 0.44}, "2", "aorta 0.440 (≥ 0.45)"),
    ({"heart": 0.79}, "2", "heart 0.7900 (≥ 0.8)"),
    ({"goal": (0.81, 0.79, 0.74, 0.57)}, "3", "goal mean 0.7275 (≥ 0.7375)"),
    ({"goal": (0.90, 0.74, 0.80, 0.60)}, "3", "down more than 0.05: spleen -0.060"),
    ({"ct": 0.66}, "4", "example_ct 0.660 (≥ 0.668)"),
    ({"removed_ml": 1600.0}, "4", "removed liver 1600 mL (< 1500)"),
])
def test_compare_demo_models_names_the_criterion_a_candidate_fails(tmp_path, change, fails, why):
    done = compare(tmp_path, demo_evaluation(), ("cand", demo_evaluation(**change)))
    assert done.returncode == 0, done.stderr
    assert f"cand: not adopted (fails {fails})" in done.stdout
    assert f"{fails}. FAIL: " in done.stdout and why in done.stdout
    assert done.stdout.count("FAIL") == 1


def test_compare_demo_models_goal_tolerance_lowers_the_real_mr_bar_only(tmp_path):
    lower = demo_evaluation(goal=(0.81, 0.79, 0.74, 0.57), heart=0.79)
    done = compare(tmp_path, demo_evaluation(), ("cand", lower), options=["--goal-tolerance", "0.02"])
    assert "3. pass: goal mean 0.7275 (≥ 0.7175)" in done.stdout
    assert "cand: not adopted (fails 2)" in done.stdout


def test_compare_demo_models_reports_the_deformed_phantoms_and_judges_nothing_by_them(tmp_path):
    """The deformed phantoms (organs off their usual places) are a row of the table when every run
    has them, and change no verdict: a candidate far lower there is still adopted."""
    def with_deformed(mean):
        return {**demo_evaluation(), "deformed phantoms": {"ct arterial": {"liver": mean, "spleen": mean},
                                                           "mr t1_in": {"liver": mean + 0.1, "spleen": mean + 0.1}}}

    done = compare(tmp_path, with_deformed(0.6), ("cand", with_deformed(0.3)))
    assert done.returncode == 0, done.stderr
    assert "| deformed phantoms (2 contrasts), range of means | 0.600–0.700 | 0.300–0.400 |" in done.stdout
    assert "cand: adopt\n" in done.stdout
    done = compare(tmp_path, with_deformed(0.6), ("cand", demo_evaluation()))  # an older evaluation
    assert done.returncode == 0 and "deformed phantoms" not in done.stdout


def test_the_bundled_weights_evaluation_ships_beside_them_and_reads_as_a_reference(tmp_path):
    """``evaluation.json`` in the demo model folder is ``evaluate_demo_model.py --json`` of the bundled
    weights: the comparison reads it, and a candidate scoring the same is adopted by every criterion."""
    shipped = Path(__file__).resolve().parents[1] / "src" / "mrseg" / "models" / "demo" / "evaluation.json"
    evaluation = json.loads(shipped.read_text())
    assert {*CONTRASTS, "real ct/thorax_cta.nii.gz", "real MR field-of-view versions"} <= evaluation.keys()
    assert all(len(evaluation[contrast]) == 40 for contrast in CONTRASTS)
    assert len(evaluation["deformed phantoms"]) == 4
    assert all(len(scores) == 40 for scores in evaluation["deformed phantoms"].values())
    done = compare(tmp_path, evaluation, ("same", evaluation))
    assert done.returncode == 0, done.stderr
    assert "same: adopt\n" in done.stdout and done.stdout.count("pass:") == 4


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot be read (No such file or directory)"),
    ("x", "not JSON"),
    ("{}", "not an evaluation of the demo model (no 'real MR field-of-view versions')"),
])
def test_compare_demo_models_refuses_a_file_that_is_not_an_evaluation(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    (tmp_path / "good.json").write_text(json.dumps(demo_evaluation()))
    done = subprocess.run([sys.executable, str(COMPARE), str(tmp_path / "good.json"), f"cand={bad}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {bad}: {message}; make one with scripts/evaluate_demo_model.py --json FILE\n"


def test_compare_demo_models_refuses_a_candidate_without_the_references_contrasts(tmp_path):
    partial = demo_evaluation()
    del partial["phantom mr t2_haste"]
    done = compare(tmp_path, demo_evaluation(), ("cand", partial))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cand: no 'phantom mr t2_haste' results, which the reference has" in done.stderr


def shifted(by):
    return demo_evaluation(goal=tuple(dice + by for dice in (0.82, 0.80, 0.75, 0.58)))


@pytest.mark.parametrize(("candidate_shift", "verdict"), [
    (0.0, "3. pass: two-run goal mean 0.7275 (≥ 0.7475 − 2 s = 0.7192)"),
    (-0.01, "3. FAIL: two-run goal mean 0.7175 (≥ 0.7475 − 2 s = 0.7192); down more than 2 s: "
            "liver -0.030 (2 s = 0.028), spleen -0.030 (2 s = 0.028)"),
])
def test_compare_demo_models_judges_a_recipe_by_seed_pairs(tmp_path, candidate_shift, verdict):
    # Each pair differs by 0.02 on every goal metric: s = sqrt(mean(0.02² / 2)) = 0.0141, 2 s = 0.0283.
    done = compare(tmp_path, shifted(0.0), ("again", shifted(0.02)), ("a", shifted(candidate_shift)),
                   ("b", shifted(candidate_shift - 0.02)), options=["--seed-pair", "reference,again",
                                                                     "--seed-pair", "a,b"])
    assert done.returncode == 0, done.stderr
    assert "| per-run scatter s (2 s) | 0.0141 (0.0283) | 0.0141 (0.0283) |" in done.stdout
    assert "| reference, again: mean (d) | 0.7475 (-0.0200) | 0.8300 (-0.0200) |" in done.stdout
    assert f"a,b against reference,again by seeds: {verdict}" in done.stdout


@pytest.mark.parametrize(("pairs", "message"), [
    (["reference,again", "a,nobody"], "--seed-pair 'a,nobody': give two different runs named above as A,B "
                                      "('nobody' is not one)"),
    (["reference,reference", "a,again"], "--seed-pair 'reference,reference': give two different runs"),
    (["reference,again"], "--seed-pair: give at least two pairs"),
])
def test_compare_demo_models_refuses_seed_pairs_it_cannot_use(tmp_path, pairs, message):
    options = [option for pair in pairs for option in ("--seed-pair", pair)]
    done = compare(tmp_path, shifted(0.0), ("again", shifted(0.02)), ("a", shifted(0.0)), options=options)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert message in done.stderr


EVALUATE = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_demo_model.py"


@needs_demo
def test_evaluate_demo_model_real_only_scores_one_network_on_the_real_scans(tmp_path, shared_data):
    """``--real-only --no-ensemble``: the real scans alone, scored with the folder's own network (not
    the ensemble), in a file the comparison refuses to judge."""
    from mrseg.demo import per_class_dice
    from mrseg.inference.segmenter import Segmenter
    from mrseg.io.resample import resample_labels

    out = tmp_path / "real.json"
    done = subprocess.run([sys.executable, str(EVALUATE), "--model", "demo", "--real-only", "--no-ensemble",
                           "--data", str(shared_data), "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    evaluation = json.loads(out.read_text())
    assert not [key for key in evaluation if key.startswith("phantom")]
    assert "removed organ" not in evaluation and "deformed phantoms" not in evaluation
    assert not evaluation["small-kidney phantoms"]
    scans = {"real mr/example_mr_sm.nii.gz", "real ct/example_ct.nii.gz", "real ct/thorax_cta.nii.gz",
             "real ct/example_ct_sm.nii.gz", "real dicom/example_ct_series"}
    assert scans <= evaluation.keys()
    # the DICOM series' reference is TotalSegmentator's 117-class index, mapped to the 40 classes
    series = evaluation["real dicom/example_ct_series"]
    assert {"liver", "spleen", "aorta", "spine"} <= series.keys() and all(0 <= v <= 1 for v in series.values())
    assert len(evaluation["real ct/example_ct_sm.nii.gz"]) == 22
    assert len(evaluation["real MR field-of-view versions"]) == 8
    # the series cropped to the body with 40 and 80 mm of air, beside it as acquired (the scored numbers)
    margins = evaluation["DICOM series air margins"]
    assert list(margins) == ["as acquired", "body + 40 mm of air", "body + 80 mm of air"]
    assert margins["as acquired"]["mean"] == pytest.approx(np.mean(list(series.values())), abs=1e-9)
    assert margins["as acquired"]["liver"] == pytest.approx(series["liver"], abs=1e-9)
    assert all(0 <= row["liver"] <= 1 and row["classes"] >= 10 for row in margins.values())

    scan = read_image(shared_data / "mr" / "example_mr_sm.nii.gz")
    reference = resample_labels(read_image(shared_data / "labels" / "example_mr_sm__ref40.nii.gz"), scan.geometry)
    alone = Segmenter(bundled_model_folder("demo"), precision="fp32", ensemble=False).run(scan).labels.array
    as_acquired = evaluation["real MR field-of-view versions"]["as acquired"]
    expected = per_class_dice(alone, reference.array)
    assert as_acquired["liver"] == pytest.approx(expected["liver"], abs=1e-9)
    assert as_acquired["left_kidney"] == pytest.approx(expected["left_kidney"], abs=1e-9)
    assert evaluation["real mr/example_mr_sm.nii.gz"]["liver"] > 0.5

    refused = subprocess.run([sys.executable, str(COMPARE), str(out), f"cand={out}"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "not an evaluation of the demo model (no 'removed organ')" in refused.stderr


@needs_demo
def test_evaluate_demo_model_small_kidneys_only_sizes_kidneys_made_smaller(tmp_path):
    """``--small-kidneys-only``: both kidneys of held-out subjects made smaller (0.8 and 0.65 on every
    length), each kidney's Dice and predicted / true volume, and nothing else."""
    from mrseg.demo import per_class_dice
    from mrseg.inference.segmenter import Segmenter
    from mrseg.phantom.cases import make_case

    out = tmp_path / "kidneys.json"
    done = subprocess.run([sys.executable, str(EVALUATE), "--model", "demo", "--small-kidneys-only", "--no-ensemble",
                           "--cases", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (evaluation,) = json.loads(out.read_text()).values()
    assert list(evaluation) == ["mr dixon_fat kidneys x0.8", "mr dixon_fat kidneys x0.65", "mr t2_haste kidneys x0.8",
                                "mr t2_haste kidneys x0.65", "mean kidney Dice"]
    case = make_case(seed=90_000, modality="mr", sequence="t2_haste", fov="trunk", spacing=(3.0, 3.0, 3.0),
                     organ_scales={"right_kidney": 0.65, "left_kidney": 0.65})
    predicted = Segmenter(bundled_model_folder("demo"), precision="fp32", ensemble=False).run(case.image).labels.array
    row = evaluation["mr t2_haste kidneys x0.65"]
    assert row["left_kidney"] == pytest.approx(per_class_dice(predicted, case.labels.array)["left_kidney"], abs=1e-9)
    left = BASE.index_of("left_kidney")
    truth = case.labels.array
    assert row["left_kidney volume ratio"] == pytest.approx((predicted == left).sum() / (truth == left).sum())
    assert row["left_kidney volume ratio"] > 1  # drawn at the size it always saw
    assert "small-kidney phantoms: Dice" in done.stdout


@needs_demo
def test_evaluate_demo_model_contrast_scores_the_phantoms_of_that_contrast_alone(tmp_path):
    """``--contrast``: the held-out phantoms of the named contrast and nothing else, the same numbers
    the whole evaluation gives that contrast, in a file the comparison refuses to judge."""
    from mrseg.demo import per_class_dice
    from mrseg.inference.segmenter import Segmenter
    from mrseg.phantom.cases import make_case

    out = tmp_path / "fat_suppressed.json"
    done = subprocess.run([sys.executable, str(EVALUATE), "--model", "demo", "--contrast", "mr t2_tse fat-suppressed",
                           "--no-ensemble", "--cases", "1", "--json", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    evaluation = json.loads(out.read_text())
    assert list(evaluation) == ["phantom mr t2_tse fat-suppressed"]
    case = make_case(seed=90_000, modality="mr", sequence="t2_tse", fat_suppression=0.95, fov="trunk",
                     spacing=(3.0, 3.0, 3.0))
    predicted = Segmenter(bundled_model_folder("demo"), precision="fp32", ensemble=False).run(case.image).labels.array
    expected = per_class_dice(predicted, case.labels.array)
    assert evaluation["phantom mr t2_tse fat-suppressed"] == pytest.approx(expected, abs=1e-9)
    assert "phantom mr t2_tse fat-suppressed: mean Dice" in done.stdout

    refused = subprocess.run([sys.executable, str(COMPARE), str(out), f"cand={out}"], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "not an evaluation of the demo model (no '" in refused.stderr


def test_evaluate_demo_model_contrast_refuses_a_name_it_does_not_know():
    done = subprocess.run([sys.executable, str(EVALUATE), "--contrast", "mr t2_spir"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'mr t2_spir'" in done.stderr
    assert "'mr t2_tse fat-suppressed'" in done.stderr and "Traceback" not in done.stderr
    both = subprocess.run([sys.executable, str(EVALUATE), "--contrast", "mr t1_in", "--real-only"],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "argument --real-only: not allowed with argument --contrast" in both.stderr


@needs_demo
def test_evaluate_demo_model_table_from_renders_the_model_cards_table(tmp_path):
    """``--table-from``: the per-class table of an evaluation already written, with no model run; from
    the bundled ``evaluation.json`` it is the table the model card shows."""
    folder = bundled_model_folder("demo")
    done = subprocess.run([sys.executable, str(EVALUATE), "--table-from", str(folder / "evaluation.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    table = done.stdout
    lines = table.splitlines()
    assert lines[0].startswith("| class | phantom ct native |") and len(lines) == 2 + 40 + 1
    assert table in (folder / "MODEL_CARD.md").read_text()

    written = tmp_path / "table.md"
    again = subprocess.run([sys.executable, str(EVALUATE), "--table-from", str(folder / "evaluation.json"),
                            "--markdown", str(written)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "" and written.read_text() == table


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "not an evaluation of the demo model (not a JSON object)"),
    ('{"phantom mr t1_in": {"liver": "high"}}',
     "not an evaluation of the demo model ('phantom mr t1_in' is not class names and Dice values)"),
    ('{"removed organ": {}}', "not an evaluation of the demo model (no per-class Dice in it)"),
    ("{", "cannot read it as JSON (JSONDecodeError)"),
])
def test_evaluate_demo_model_table_from_refuses_a_file_that_is_not_an_evaluation(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    table = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(EVALUATE), "--table-from", str(bad), "--markdown", str(table)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == "" and not table.exists()
    assert done.stderr == f"error: {bad}: {message}; make one with scripts/evaluate_demo_model.py --json FILE\n"
