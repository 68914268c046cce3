"""``mrseg weights`` and first-use installs by ``mrseg segment``, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import SimpleITK as sitk

from mrseg.cli import main
from mrseg.io import write_image
from mrseg.model import store
from parity import phantom_image


def test_segment_installs_the_published_model_on_first_use(server, registry, monkeypatch, tmp_path):
    monkeypatch.setenv("MRSEG_MIRROR", server.url.rsplit("/", 1)[0])
    monkeypatch.delenv("MRSEG_WEIGHTS_PATH", raising=False)
    write_image(phantom_image("LPS"), tmp_path / "scan.nii.gz")
    scan, out = str(tmp_path / "scan.nii.gz"), str(tmp_path / "out")
    assert main(["segment", scan, "-o", out, "--model", "base", "--fast", "--no-progress"]) == 0
    assert store.is_installed("base")
    assert sitk.ReadImage(str(tmp_path / "out" / "scan_seg.nii.gz")).GetSize() == (40, 48, 24)


def test_verify_finds_a_changed_file_and_remove_deletes(model_dir, caplog):
    folder = store.import_model(model_dir(), name="mine")
    with open(folder / "fold_0" / "checkpoint_final.pth", "ab") as handle:
        handle.write(b"\0")
    assert main(["weights", "verify", "mine"]) == 1
    assert "damaged" in caplog.text
    assert main(["weights", "remove", "mine"]) == 0
    assert not folder.exists()
    assert main(["weights", "remove", "mine"]) == 2
    assert "is not installed" in caplog.text


def test_install_list_and_path(server, registry, capsys):
    assert main(["weights", "install", "base", "--url", server.url]) == 0
    assert main(["weights", "path", "base"]) == 0
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    folder = str(store.installed_folder("base"))
    assert out.count(folder) == 3
    assert "body_comp    not installed" in out
    assert main(["weights", "verify", "base"]) == 0
