"""The model store: names → folders, and installs against a real HTTP server on 127.0.0.1.

The published archives cannot be downloaded here, so the registry entry under test gets the
checksum of the archive the server serves; everything else (HTTP, sha256, extraction, atomic
rename, manifest) is the real code path. The download itself is tested in test_download.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from archive_server import ArchiveServer, published_zip
from mrseg.errors import ModelError
from mrseg.model import load_model, store
from mrseg.model.store import WEIGHTS_ENV, resolve_model_folder

DEMO_FOLDER = Path(store.__file__).resolve().parent.parent / "models" / "demo"


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty working folder: no ./demo or ./base there that would make a name a path."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def store_contents(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


# --------------------------------------------------------------------------- names → folders


def test_explicit_model_path_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "from_env"))
    assert resolve_model_folder(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_model_folder(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_model_folder("models/demo") == Path("models/demo")  # a separator makes it a path


def test_a_name_that_exists_on_disk_is_a_path(elsewhere):
    (elsewhere / "demo").mkdir()
    assert resolve_model_folder("demo") == Path("demo")


def test_bundled_demo_resolves_to_the_package_folder(elsewhere):
    if not (DEMO_FOLDER / "fold_0" / "checkpoint_final.pth").is_file():
        pytest.skip("this installation was built without the demo model")
    folder = resolve_model_folder("demo")
    assert folder == store.bundled_model_folder("demo") == store.model_path("demo") == DEMO_FOLDER
    assert load_model(folder, folds=[0]).folds == ("0",)


def test_unknown_bundled_model():
    with pytest.raises(ModelError, match=r"unknown bundled model 'nope'; bundled: demo"):
        store.bundled_model_folder("nope")


def test_environment_variable_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MRSEG_WEIGHTS_PATH", str(tmp_path / "from_env"))
    assert resolve_model_folder(None) == tmp_path / "from_env"


@pytest.mark.parametrize("env", [None, ""])
def test_no_model_anywhere(monkeypatch, env):
    if env is None:
        monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    else:
        monkeypatch.setenv(WEIGHTS_ENV, env)
    with pytest.raises(ModelError, match=r"no model given: pass --model.*MRSEG_WEIGHTS_PATH=DIR.*weights\.zip"):
        resolve_model_folder(None)


def test_no_model_and_the_base_install_fails(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(ModelError, match=r"no model given and the base model could not be installed: "
                                         r"MRSEG_OFFLINE is set.*Or pass --model"):
        resolve_model_folder(None, install_missing=True)


@pytest.mark.parametrize("typo, guess", [("demoo", "demo"), ("Base", "base"), ("bodycomp", "body_comp"),
                                         ("mien", "mine")])
def test_a_typo_gets_the_closest_names(elsewhere, model_dir, typo, guess):
    store.import_model(model_dir(), name="mine")
    with pytest.raises(ModelError, match=rf"unknown model '{typo}'; did you mean {guess}\? Known models: base, "
                                         r"body_comp, demo, mine; or give a model folder path"):
        resolve_model_folder(typo)


def test_several_close_names_are_all_offered(elsewhere, model_dir):
    store.import_model(model_dir(), name="base2")
    with pytest.raises(ModelError, match=r"did you mean base or base2\?"):
        resolve_model_folder("base3")


def test_an_unknown_name_without_a_close_match_lists_the_known_ones(elsewhere):
    with pytest.raises(ModelError, match=r"^unknown model 'liver_ct'; known models: base, body_comp, demo; or give "
                                         r"a model folder path \(one holding plans\.json.*\), e\.g\. \./liver_ct$"):
        resolve_model_folder("liver_ct")
    with pytest.raises(ModelError, match=r"unknown model '\.hidden'; known models"):
        resolve_model_folder(".hidden")


def test_a_published_name_that_is_not_installed_says_how_to_install(elsewhere):
    with pytest.raises(ModelError, match=r"model body_comp is not installed in .*'mrseg weights install body_comp'.*"
                                         r"'mrseg weights import body_comp_weights\.zip'"):
        resolve_model_folder("body_comp")


def test_install_missing_downloads_a_published_model(server, registry, monkeypatch, private_weights_store, elsewhere):
    monkeypatch.setenv("MRSEG_MIRROR", server.url.rsplit("/", 1)[0])
    folder = resolve_model_folder("base", install_missing=True)
    assert folder == private_weights_store / "weights" / "base" and store.is_installed("base")
    assert server.requests == [None]
    assert resolve_model_folder("base") == folder  # installed now: no second download
    assert server.requests == [None]


def test_importing_the_engine_imports_neither_the_store_nor_the_downloader():
    code = ("import sys, mrseg.inference.segmenter; "
            "print([m for m in ('mrseg.model.store', 'mrseg.model.download') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- registry and installs


def test_registry_holds_the_published_archives():
    base, body = store.PUBLISHED["base"], store.PUBLISHED["body_comp"]
    assert base.url == "https://github.com/hhaentze/MRSegmentator/releases/download/v1.2.0/weights.zip"
    assert base.sha256 == "dd26c1b511908a1f2a752b7fe8f5ca9c5603fc3e69fa52f57bf3ccdd52ceb286"
    assert base.version == "1.2" and base.classes == 40
    assert "zenodo.org/records/21211879/files/body_comp_weights.zip" in body.url
    assert body.sha256 == "3ec490f641dd1aebdd4d2f497e69f8c9f2e4060a45c7d0d69c3ea0e74daf1550"
    assert body.classes == 10


def test_install_verifies_and_installs_a_loadable_model(server, registry, private_weights_store, model_dir):
    folder = store.install("base", url=server.url, progress=False)
    assert folder == private_weights_store / "weights" / "base"
    assert (folder / "plans.json").read_bytes() == (model_dir() / "plans.json").read_bytes()
    manifest = json.loads((folder / store.MANIFEST).read_text())
    assert manifest["archive_sha256"] == registry.sha256 and "fold_0/checkpoint_final.pth" in manifest["files"]
    assert store.verify("base") == []
    assert resolve_model_folder("base") == folder == resolve_model_folder(None)
    assert load_model(folder, folds=[0]).folds == ("0",)
    # Nothing else is left in the store: no archive, no part file, no staging folder.
    assert [p.name for p in (private_weights_store / "weights").iterdir()] == ["base"]
    assert list((private_weights_store / "downloads").iterdir()) == []
    assert server.requests == [None]


def test_install_of_an_unknown_name_lists_the_published_ones():
    with pytest.raises(ModelError, match=r"unknown model 'mine'; published models: base, body_comp\. "
                                         r"Use 'mrseg weights import"):
        store.install("mine")


def test_wrong_checksum_is_rejected_and_nothing_installed(server, registry, monkeypatch, private_weights_store):
    monkeypatch.setitem(store.PUBLISHED, "base", dataclasses.replace(registry, sha256="0" * 64))
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]{64}, expected 0{64}.*nothing was installed"):
        store.install("base", url=server.url, progress=False)
    assert not store.is_installed("base")
    assert store_contents(private_weights_store) == ["downloads"]


def _junk_zip(tmp_path) -> bytes:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("no model here")
    return published_zip(tmp_path / "junk", tmp_path / "junk.zip")


@pytest.mark.parametrize("payload, message", [
    (lambda tmp_path: b"PK\x03\x04 this is not really a zip archive" * 100, "not a readable zip archive"),
    (_junk_zip, "holds no nnU-Net v2 model folder"),
], ids=["corrupt-zip", "zip-without-model"])
def test_a_bad_archive_is_rejected_and_nothing_installed(payload, message, tmp_path, monkeypatch,
                                                          private_weights_store):
    monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    served_bytes = payload(tmp_path)
    monkeypatch.setitem(store.PUBLISHED, "base", dataclasses.replace(
        store.PUBLISHED["base"], sha256=hashlib.sha256(served_bytes).hexdigest()))
    served = ArchiveServer(served_bytes)
    try:
        with pytest.raises(ModelError, match=message):
            store.install("base", url=served.url, progress=False)
    finally:
        served.close()
    assert store_contents(private_weights_store) == ["downloads", "weights"]


def test_an_interrupted_install_resumes(server, registry, archive):
    server.drop_after = len(archive) // 2
    store.install("base", url=server.url, progress=False, backoff_s=0.01)
    assert server.requests == [None, f"bytes={len(archive) // 2}-"]
    assert store.verify("base") == []


def test_mirror_serves_the_archive_by_file_name(server, registry, monkeypatch):
    monkeypatch.setenv("MRSEG_MIRROR", server.url.rsplit("/", 1)[0] + "/")
    assert store.install("base", progress=False).name == "base"
    assert server.requests == [None]


def test_offline_says_what_to_download_and_how_to_import():
    with pytest.raises(ModelError, match=r"MRSEG_OFFLINE.*releases/download/v1.2.0/weights.zip.*"
                                         r"mrseg weights import weights.zip"):
        store.install("base")


def test_import_a_published_zip_offline_by_its_checksum(tmp_path, archive, registry, monkeypatch):
    monkeypatch.setenv("MRSEG_OFFLINE", "1")
    (tmp_path / "weights.zip").write_bytes(archive)
    folder = store.import_model(tmp_path / "weights.zip")
    assert folder.name == "base" and store.verify("base") == []
    with pytest.raises(ModelError, match="already exists; pass --force"):
        store.import_model(tmp_path / "weights.zip")
    assert store.import_model(tmp_path / "weights.zip", force=True) == folder


def test_import_a_folder_or_a_zip_with_a_subfolder_under_a_name(model_dir, tmp_path, elsewhere):
    folder = store.import_model(model_dir(), name="mine")
    assert resolve_model_folder("mine") == folder == store.model_path("mine")
    published_zip(model_dir(), tmp_path / "nested.zip", subfolder="Dataset001_x/")
    assert (store.import_model(tmp_path / "nested.zip", name="nested") / "plans.json").is_file()
    listed = {entry.name: entry.status for entry in store.list_models()}
    assert listed["mine"] == listed["nested"] == "installed" and listed["base"] == "not installed"
    assert store.known_models() == ["base", "body_comp", "demo", "mine", "nested"]


def test_import_errors_name_the_problem(model_dir, tmp_path, private_weights_store):
    with pytest.raises(ModelError, match="does not exist"):
        store.import_model(tmp_path / "nowhere.zip")
    with pytest.raises(ModelError, match="is a model folder; name it with --name"):
        store.import_model(model_dir())
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("plans.json", "dataset.json"):
        (incomplete / name).write_bytes((model_dir() / name).read_bytes())
    with pytest.raises(ModelError, match=r"missing fold_K/checkpoint_final.pth"):
        store.import_model(incomplete, name="broken")
    with pytest.raises(ModelError, match="not usable as a folder name"):
        store.import_model(model_dir(), name="../escape")
    assert list((private_weights_store / "weights").iterdir()) == []


def test_model_path_and_verify_of_a_model_that_is_not_installed():
    with pytest.raises(ModelError, match=r"model 'mine' is not installed in .* and is not a published model"):
        store.model_path("mine")
    with pytest.raises(ModelError, match=r"model base is not installed in .*'mrseg weights install base'"):
        store.verify("base")
    with pytest.raises(ModelError, match=r"mine is not installed in .*; 'mrseg weights list' shows what is"):
        store.remove("mine")


def test_verify_finds_a_changed_file_and_remove_deletes(model_dir):
    folder = store.import_model(model_dir(), name="mine")
    with open(folder / "fold_0" / "checkpoint_final.pth", "ab") as handle:
        handle.write(b"\0")
    (folder / "fold_1" / "checkpoint_final.pth").unlink()
    assert store.verify("mine") == ["fold_0/checkpoint_final.pth: sha256 differs from the install record",
                                    "fold_1/checkpoint_final.pth: missing"]
    assert store.remove("mine") == folder
    assert not folder.exists() and not store.is_installed("mine")
    assert [p.name for p in folder.parent.iterdir()] == []  # no half-removed folder left behind


def test_list_models_shows_installed_bundled_and_missing(server, registry):
    folder = store.install("base", url=server.url, progress=False)
    assert store.model_path("base") == folder
    entries = {entry.name: entry for entry in store.list_models()}
    assert (entries["base"].status, entries["base"].folder) == ("installed", folder)
    assert "weights 1.2" in entries["base"].description
    assert (entries["body_comp"].status, entries["body_comp"].folder) == ("not installed", None)
    assert entries["demo"].status in ("bundled", "not installed")
