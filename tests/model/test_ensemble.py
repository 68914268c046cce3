"""Ensemble folders (:mod:`mrseg.model.ensemble`, ``mrseg_ensemble.json`` in :mod:`mrseg.model.loader`):
the folder they make, half-precision weights, and every refusal with nothing written."""

from __future__ import annotations

import json

import pytest
import torch

import model_factory
from mrseg.cli import main
from mrseg.errors import ModelError
from mrseg.model import ENSEMBLE_FILE, ensemble_members, load_model
from mrseg.model.ensemble import extract_network, make_ensemble

FINER = (2.4, 1.2, 1.2)  # the factory's (3.0, 1.5, 1.5) made 1.25 times finer


@pytest.fixture()
def two_grids(tmp_path, weights, write_model):
    """The same trained network planned at two spacings: two models on two grids."""
    coarse = write_model(tmp_path / "coarse", weights, num_folds=2)
    fine = write_model(tmp_path / "fine", weights, num_folds=1, plans=model_factory.make_plans(spacing=FINER))
    return coarse, fine


def _unique_tensors(state):
    return {(v.data_ptr(), tuple(v.shape), tuple(v.stride())) for v in state.values()}


def test_an_ensemble_folder_holds_the_first_model_and_its_members(tmp_path, two_grids):
    coarse, fine = two_grids
    out = make_ensemble([coarse, fine], out=tmp_path / "both")

    assert out == tmp_path / "both"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "members/fine/dataset.json",
        "members/fine/fold_0/checkpoint_final.pth", "members/fine/plans.json", ENSEMBLE_FILE, "plans.json"]
    record = json.loads((out / ENSEMBLE_FILE).read_text())
    assert record["members"] == ["members/fine"] and record["weights"] == "as trained"
    assert record["sources"] == [str(coarse.resolve()), str(fine.resolve())]
    assert ensemble_members(out) == [out / "members" / "fine"]
    copied, source = (folder / "fold_0" / "checkpoint_final.pth" for folder in (out, coarse))
    assert copied.read_bytes() == source.read_bytes()

    model = load_model(out)
    assert model.folds == ("0", "1") and model.configuration.spacing == (3.0, 1.5, 1.5)
    (member,) = model.members
    assert member.folder == out / "members" / "fine" and member.configuration.spacing == FINER
    assert member.folds == ("0",) and member.members == ()
    assert load_model(out, ensemble=False).members == ()
    assert not list(tmp_path.glob(".both*"))  # no staging folder left


def test_half_precision_halves_the_weights_and_keeps_shared_tensors_shared(tmp_path, two_grids):
    coarse, fine = two_grids
    out = make_ensemble([coarse, fine], out=tmp_path / "half", half=True)
    source = torch.load(coarse / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    halved = torch.load(out / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)

    assert set(halved) == {"network_weights", "trainer_name", "inference_allowed_mirroring_axes", "init_args"}
    weights, original = halved["network_weights"], source["network_weights"]
    assert list(weights) == list(original)
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float16}
    assert len(_unique_tensors(weights)) == len(_unique_tensors(original))  # aliases stay one tensor
    for key, value in original.items():
        assert torch.equal(weights[key], value.to(torch.float16))
    size = (out / "fold_0" / "checkpoint_final.pth").stat().st_size
    full = sum(v.untyped_storage().nbytes() for v in {id(v.untyped_storage()): v for v in original.values()}.values())
    assert size < 0.6 * full + 50_000
    assert json.loads((out / ENSEMBLE_FILE).read_text())["weights"] == "float16"
    network = load_model(out).members[0].build_networks()[0]
    assert {p.dtype for p in network.parameters()} == {torch.float32}


def test_a_source_whose_aliases_were_copied_is_written_with_them_shared_again(tmp_path, weights, write_model):
    # a state dict rebuilt name by name (cast by hand) holds the encoder twice: as written, a larger file
    copied = {key: value.detach().clone() for key, value in weights.items()}
    assert len(_unique_tensors(copied)) == len(copied) > len(_unique_tensors(weights))
    shared_source = write_model(tmp_path / "shared", weights, num_folds=1)
    copied_source = write_model(tmp_path / "copied", copied, num_folds=1)
    outs = [make_ensemble([source, source], out=tmp_path / f"{source.name}_half", half=True)
            for source in (shared_source, copied_source)]

    sizes = [(out / "fold_0" / "checkpoint_final.pth").stat().st_size for out in outs]
    assert abs(sizes[1] - sizes[0]) < 2_000, sizes
    written = torch.load(outs[1] / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    halved = written["network_weights"]
    assert len(_unique_tensors(halved)) <= len(_unique_tensors(weights))
    for key, value in weights.items():
        assert torch.equal(halved[key], value.to(torch.float16))


def test_refusals_write_nothing(tmp_path, two_grids, weights, write_model):
    coarse, fine = two_grids
    with pytest.raises(ModelError, match="an ensemble needs at least two model folders, got 1"):
        make_ensemble([coarse], out=tmp_path / "one")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelError, match="taken exists; choose a new folder"):
        make_ensemble([coarse, fine], out=tmp_path / "taken")
    other_input = write_model(tmp_path / "ct", weights, num_folds=1, dataset=model_factory.make_dataset(channel="CT"))
    with pytest.raises(ModelError, match=r"ct predicts other labels or takes other input channels \(dataset.json "
                                         r"differs\) against .*coarse; an ensemble's models must agree"):
        make_ensemble([coarse, other_input], out=tmp_path / "mixed")
    both = make_ensemble([coarse, fine], out=tmp_path / "both")
    with pytest.raises(ModelError, match=r"both is an ensemble itself \(mrseg_ensemble.json\); ensembles do not nest"):
        make_ensemble([both, fine], out=tmp_path / "nested")
    with pytest.raises(ModelError, match="1 descriptions for 2 model folders; give one per folder"):
        make_ensemble([coarse, fine], out=tmp_path / "described", descriptions=["the coarse network"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both", "coarse", "ct", "fine", "taken"]


def test_descriptions_replace_the_source_paths(tmp_path, two_grids):
    coarse, fine = two_grids
    lines = ["a 3 mm network, seed 1", "a 1.5 mm network fine-tuned from it"]
    out = make_ensemble([coarse, fine], out=tmp_path / "shipped", descriptions=lines)
    record = json.loads((out / ENSEMBLE_FILE).read_text())
    assert record["sources"] == lines and record["members"] == ["members/fine"]
    assert str(tmp_path) not in (out / ENSEMBLE_FILE).read_text()


def test_members_are_named_by_their_folders_and_numbered_when_two_share_a_name(tmp_path, two_grids, weights,
                                                                                 write_model):
    coarse, fine = two_grids
    twin = write_model(tmp_path / "elsewhere" / "fine", weights, num_folds=1)
    out = make_ensemble([coarse, fine, twin], out=tmp_path / "three")
    assert json.loads((out / ENSEMBLE_FILE).read_text())["members"] == ["members/fine", "members/fine_2"]
    assert [m.configuration.spacing for m in load_model(out).members] == [FINER, (3.0, 1.5, 1.5)]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"mrseg_ensemble.json is not valid JSON"),
    ('{"members": []}', r'must hold \{"members": \["FOLDER", ...\]\}'),
    ('["members/fine"]', r'must hold \{"members": \["FOLDER", ...\]\}'),
    ('{"members": ["fine", "fine"]}', r"names a member twice \(fine, fine\)"),
    ('{"members": ["../coarse"]}', r"member '../coarse' is not a folder inside"),
    ('{"members": ["/tmp"]}', r"member '/tmp' is not a folder inside"),
    ('{"members": ["absent"]}', r"names .*absent, which does not exist; restore the member or remove it"),
])
def test_a_bad_ensemble_file_is_one_clear_error(tmp_path, two_grids, content, message):
    coarse, _ = two_grids
    (coarse / ENSEMBLE_FILE).write_text(content)
    with pytest.raises(ModelError, match=message):
        load_model(coarse)
    assert load_model(coarse, ensemble=False).members == ()  # the folder alone still loads


def test_a_member_with_other_labels_axes_or_its_own_members_is_refused(tmp_path, two_grids, weights, write_model):
    coarse, fine = two_grids
    renamed = model_factory.make_dataset()
    renamed["labels"] = {"background": 0, **{f"organ_{i}": i for i in range(1, model_factory.NUM_LABELS)}}
    write_model(coarse / "members" / "renamed", weights, num_folds=1, dataset=renamed)
    (coarse / ENSEMBLE_FILE).write_text('{"members": ["members/renamed"]}')
    with pytest.raises(ModelError, match=r"ensemble member .*renamed predicts other labels .*models must agree"):
        load_model(coarse)
    write_model(coarse / "members" / "transposed", weights, num_folds=1,
                plans=model_factory.make_plans(transpose=(2, 1, 0)))
    (coarse / ENSEMBLE_FILE).write_text('{"members": ["members/transposed"]}')
    with pytest.raises(ModelError, match=r"transposed orders the axes otherwise \(transpose_forward \[2, 1, 0\] "
                                         r"against \[0, 1, 2\] in plans.json\)"):
        load_model(coarse)
    write_model(coarse / "members" / "inner", weights, num_folds=1)
    (coarse / "members" / "inner" / ENSEMBLE_FILE).write_text('{"members": ["x"]}')
    (coarse / ENSEMBLE_FILE).write_text('{"members": ["members/inner"]}')
    with pytest.raises(ModelError, match=r"inner has its own mrseg_ensemble.json; ensembles do not nest"):
        load_model(coarse)


def test_mrseg_weights_ensemble(tmp_path, two_grids, capsys, caplog):
    coarse, fine = two_grids
    assert main(["weights", "ensemble", str(coarse), str(fine), "--out", str(tmp_path / "both"), "--half"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "both")
    assert len(load_model(tmp_path / "both").members) == 1
    assert main(["weights", "ensemble", str(coarse), "--out", str(tmp_path / "one")]) == 2
    assert "an ensemble needs at least two model folders, got 1" in caplog.text
    assert not (tmp_path / "one").exists()


def test_mrseg_weights_ensemble_describe(tmp_path, two_grids, caplog):
    coarse, fine = two_grids
    out = tmp_path / "shipped"
    assert main(["weights", "ensemble", str(coarse), str(fine), "--out", str(out),
                 "--describe", "a 3 mm network", "--describe", "a 1.5 mm network"]) == 0
    assert json.loads((out / ENSEMBLE_FILE).read_text())["sources"] == ["a 3 mm network", "a 1.5 mm network"]
    assert main(["weights", "ensemble", str(coarse), str(fine), "--out", str(tmp_path / "half-described"),
                 "--describe", "a 3 mm network"]) == 2
    assert "1 descriptions for 2 model folders" in caplog.text and not (tmp_path / "half-described").exists()


def test_extract_writes_the_folders_own_network_and_a_member_as_they_went_in(tmp_path, two_grids):
    coarse, fine = two_grids
    both = make_ensemble([coarse, fine], out=tmp_path / "both")
    own = extract_network(both, out=tmp_path / "own")
    assert own == tmp_path / "own"
    assert sorted(p.relative_to(own).as_posix() for p in own.rglob("*") if p.is_file()) == [
        "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "plans.json"]
    for name in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth"):
        assert (own / name).read_bytes() == (coarse / name).read_bytes()
    for name in ("members/fine", "fine"):  # as mrseg_ensemble.json names it, or its last part
        out = extract_network(both, out=tmp_path / f"member_{name.replace('/', '_')}", member=name)
        for file in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth"):
            assert (out / file).read_bytes() == (fine / file).read_bytes()
        assert load_model(out).configuration.spacing == FINER
    # taken apart and put together again: the same ensemble
    again = make_ensemble([own, tmp_path / "member_fine"], out=tmp_path / "again")
    for file in ("fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth", "plans.json"):
        assert (again / file).read_bytes() == (both / file).read_bytes()
    assert ((again / "members" / "member_fine" / "fold_0" / "checkpoint_final.pth").read_bytes()
            == (both / "members" / "fine" / "fold_0" / "checkpoint_final.pth").read_bytes())
    assert not list(tmp_path.glob(".own*")) and not list(tmp_path.glob(".member*"))


def test_extract_keeps_float16_weights_as_they_are(tmp_path, two_grids):
    coarse, fine = two_grids
    half = make_ensemble([coarse, fine], out=tmp_path / "half", half=True)
    own = extract_network(half, out=tmp_path / "own")
    checkpoint = "fold_0/checkpoint_final.pth"
    assert (own / checkpoint).read_bytes() == (half / checkpoint).read_bytes()
    weights = torch.load(own / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert {v.dtype for v in weights["network_weights"].values() if v.is_floating_point()} == {torch.float16}


def test_extract_refusals_write_nothing(tmp_path, two_grids):
    coarse, fine = two_grids
    both = make_ensemble([coarse, fine], out=tmp_path / "both")
    with pytest.raises(ModelError, match=r"coarse is not an ensemble folder \(no mrseg_ensemble.json\); it is a "
                                         r"model folder of its own already"):
        extract_network(coarse, out=tmp_path / "plain")
    with pytest.raises(ModelError, match=r"both has no member 'coarse'; its members are members/fine"):
        extract_network(both, out=tmp_path / "unknown", member="coarse")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelError, match="taken exists; choose a new folder for the network"):
        extract_network(both, out=tmp_path / "taken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both", "coarse", "fine", "taken"]


def test_mrseg_weights_extract(tmp_path, two_grids, capsys, caplog):
    coarse, fine = two_grids
    both = make_ensemble([coarse, fine], out=tmp_path / "both")
    assert main(["weights", "extract", str(both), "--out", str(tmp_path / "own")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "own")
    assert main(["weights", "extract", str(both), "--member", "fine", "--out", str(tmp_path / "fine_again")]) == 0
    assert load_model(tmp_path / "fine_again").configuration.spacing == FINER
    assert main(["weights", "extract", str(coarse), "--out", str(tmp_path / "plain")]) == 2
    assert "is not an ensemble folder" in caplog.text and not (tmp_path / "plain").exists()
    # the ensemble refuses an ensemble as its input and names the way out
    assert main(["weights", "ensemble", str(both), str(fine), "--out", str(tmp_path / "nested")]) == 2
    assert "'mrseg weights extract' writes its own network as one" in caplog.text
