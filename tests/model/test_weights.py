"""The weights store against a real HTTP server on 127.0.0.1 serving a zip of a small model.

The published archives cannot be downloaded here, so the registry entry under test gets the
checksum of the archive the server serves; everything else (HTTP, Range, retries, sha256,
extraction, atomic rename) is the real code path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest
import SimpleITK as sitk

from mrseg.cli import main
from mrseg.errors import ModelError
from mrseg.io import write_image
from mrseg.model import load_model, resolve_model_folder, weights
from parity import phantom_image


class ArchiveServer:
    """Serves one byte string at /weights.zip; can drop the connection midway or ignore Range."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.drop_after: int | None = None  # bytes sent before the first response is cut
        self.honour_range = True
        self.requests: list[str | None] = []  # the Range header of each request
        self.bytes_sent = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?")[0] not in ("/weights.zip", "/body_comp_weights.zip"):
                    self.send_error(404, "no such archive")
                    return
                header = self.headers.get("Range")
                server.requests.append(header)
                start = int(header.split("=")[1].split("-")[0]) if header and server.honour_range else 0
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None:
                    cut, server.drop_after = server.drop_after, None
                    server.bytes_sent += cut  # counted before sending: the client may finish first
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                server.bytes_sent += len(body)
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def published_zip(folder: Path, target: Path, *, subfolder: str = "") -> bytes:
    """Zip ``folder`` as the published archive is laid out (files at the top level, version.json)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                bundle.write(file, f"{subfolder}{file.relative_to(folder)}")
        bundle.writestr(f"{subfolder}version.json", json.dumps({"version": "test"}))
    return target.read_bytes()


@pytest.fixture()
def archive(model_dir, tmp_path) -> bytes:
    return published_zip(model_dir(), tmp_path / "weights.zip")


@pytest.fixture()
def server(archive):
    served = ArchiveServer(archive)
    yield served
    served.close()


@pytest.fixture()
def registry(monkeypatch, archive):
    """The base entry with the served archive's checksum; downloads allowed."""
    monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    entry = dataclasses.replace(weights.PUBLISHED["base"], sha256=hashlib.sha256(archive).hexdigest())
    monkeypatch.setitem(weights.PUBLISHED, "base", entry)
    return entry


def store_contents(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def test_registry_holds_the_published_archives():
    base, body = weights.PUBLISHED["base"], weights.PUBLISHED["body_comp"]
    assert base.url == "https://github.com/hhaentze/MRSegmentator/releases/download/v1.2.0/weights.zip"
    assert base.sha256 == "dd26c1b511908a1f2a752b7fe8f5ca9c5603fc3e69fa52f57bf3ccdd52ceb286"
    assert base.version == "1.2" and base.classes == 40
    assert "zenodo.org/records/21211879/files/body_comp_weights.zip" in body.url
    assert body.sha256 == "3ec490f641dd1aebdd4d2f497e69f8c9f2e4060a45c7d0d69c3ea0e74daf1550"
    assert body.classes == 10


def test_install_verifies_and_installs_a_loadable_model(server, registry, private_weights_store, model_dir):
    folder = weights.install("base", url=server.url, progress=False)
    assert folder == private_weights_store / "weights" / "base"
    assert (folder / "plans.json").read_bytes() == (model_dir() / "plans.json").read_bytes()
    manifest = json.loads((folder / weights.MANIFEST).read_text())
    assert manifest["archive_sha256"] == registry.sha256 and "fold_0/checkpoint_final.pth" in manifest["files"]
    assert weights.verify("base") == []
    assert resolve_model_folder("base") == folder == resolve_model_folder(None)
    assert load_model(folder, folds=[0]).folds == ("0",)
    # Nothing else is left in the store: no archive, no part file, no staging folder.
    assert [p.name for p in (private_weights_store / "weights").iterdir()] == ["base"]
    assert list((private_weights_store / "downloads").iterdir()) == []
    assert server.requests == [None]


def test_download_resumes_after_the_server_drops_the_connection(server, registry, archive):
    server.drop_after = len(archive) // 2
    weights.install("base", url=server.url, progress=False, backoff_s=0.01)
    assert server.requests == [None, f"bytes={len(archive) // 2}-"]
    assert server.bytes_sent == len(archive)  # the second request sent only the rest
    assert weights.verify("base") == []


def test_a_server_that_ignores_range_sends_the_whole_file_again(server, registry, archive):
    server.drop_after, server.honour_range = 1000, False
    weights.install("base", url=server.url, progress=False, backoff_s=0.01)
    assert len(server.requests) == 2 and server.bytes_sent == 1000 + len(archive)
    assert weights.verify("base") == []


def test_wrong_checksum_is_rejected_and_nothing_installed(server, registry, monkeypatch, private_weights_store):
    monkeypatch.setitem(weights.PUBLISHED, "base", dataclasses.replace(registry, sha256="0" * 64))
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]{64}, expected 0{64}.*nothing was installed"):
        weights.install("base", url=server.url, progress=False)
    assert not weights.is_installed("base")
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
    monkeypatch.setitem(weights.PUBLISHED, "base", dataclasses.replace(
        weights.PUBLISHED["base"], sha256=hashlib.sha256(served_bytes).hexdigest()))
    served = ArchiveServer(served_bytes)
    try:
        with pytest.raises(ModelError, match=message):
            weights.install("base", url=served.url, progress=False)
    finally:
        served.close()
    assert store_contents(private_weights_store) == ["downloads", "weights"]


def test_server_down_fails_after_the_retries(registry, private_weights_store, caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelError, match=r"could not download .* after 3 attempts.*mrseg weights import weights.zip"):
        weights.install("base", url=f"http://127.0.0.1:{port}/weights.zip", retries=2, backoff_s=0.01,
                        progress=False)
    assert "retry 2 of 2" in caplog.text
    assert not weights.is_installed("base")


def test_http_error_is_not_retried(server, registry):
    with pytest.raises(ModelError, match="HTTP 404"):
        weights.install("base", url=server.url.replace("weights.zip", "missing.zip"), progress=False)
    assert server.requests == []


def test_mirror_serves_the_archive_by_file_name(server, registry, monkeypatch):
    monkeypatch.setenv("MRSEG_MIRROR", server.url.rsplit("/", 1)[0] + "/")
    assert weights.install("base", progress=False).name == "base"
    assert server.requests == [None]


def test_offline_says_what_to_download_and_how_to_import():
    with pytest.raises(ModelError, match=r"MRSEG_OFFLINE.*releases/download/v1.2.0/weights.zip.*"
                                         r"mrseg weights import weights.zip"):
        weights.install("base")
    with pytest.raises(ModelError, match="mrseg weights install body_comp"):
        resolve_model_folder("body_comp")


def test_segment_installs_the_published_model_on_first_use(server, registry, monkeypatch, tmp_path):
    monkeypatch.setenv("MRSEG_MIRROR", server.url.rsplit("/", 1)[0])
    monkeypatch.delenv("MRSEG_WEIGHTS_PATH", raising=False)
    write_image(phantom_image("LPS"), tmp_path / "scan.nii.gz")
    scan, out = str(tmp_path / "scan.nii.gz"), str(tmp_path / "out")
    assert main(["segment", scan, "-o", out, "--model", "base", "--fast"]) == 0
    assert weights.is_installed("base")
    assert sitk.ReadImage(str(tmp_path / "out" / "scan_seg.nii.gz")).GetSize() == (40, 48, 24)


def test_import_a_published_zip_offline_by_its_checksum(tmp_path, archive, registry, monkeypatch):
    monkeypatch.setenv("MRSEG_OFFLINE", "1")
    (tmp_path / "weights.zip").write_bytes(archive)
    folder = weights.import_model(tmp_path / "weights.zip")
    assert folder.name == "base" and weights.verify("base") == []
    with pytest.raises(ModelError, match="already exists; pass --force"):
        weights.import_model(tmp_path / "weights.zip")
    assert weights.import_model(tmp_path / "weights.zip", force=True) == folder


def test_import_a_folder_or_a_zip_with_a_subfolder_under_a_name(model_dir, tmp_path):
    folder = weights.import_model(model_dir(), name="mine")
    assert resolve_model_folder("mine") == folder
    published_zip(model_dir(), tmp_path / "nested.zip", subfolder="Dataset001_x/")
    assert (weights.import_model(tmp_path / "nested.zip", name="nested") / "plans.json").is_file()
    listed = {entry.name: entry.status for entry in weights.list_models()}
    assert listed["mine"] == listed["nested"] == "installed" and listed["base"] == "not installed"


def test_import_errors_name_the_problem(model_dir, tmp_path, private_weights_store):
    with pytest.raises(ModelError, match="does not exist"):
        weights.import_model(tmp_path / "nowhere.zip")
    with pytest.raises(ModelError, match="is a model folder; name it with --name"):
        weights.import_model(model_dir())
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("plans.json", "dataset.json"):
        (incomplete / name).write_bytes((model_dir() / name).read_bytes())
    with pytest.raises(ModelError, match=r"missing fold_K/checkpoint_final.pth"):
        weights.import_model(incomplete, name="broken")
    with pytest.raises(ModelError, match="not usable as a folder name"):
        weights.import_model(model_dir(), name="../escape")
    assert list((private_weights_store / "weights").iterdir()) == []


def test_verify_finds_a_changed_file_and_remove_deletes(model_dir, caplog, capsys):
    folder = weights.import_model(model_dir(), name="mine")
    with open(folder / "fold_0" / "checkpoint_final.pth", "ab") as handle:
        handle.write(b"\0")
    assert weights.verify("mine") == ["fold_0/checkpoint_final.pth: sha256 differs from the install record"]
    assert main(["weights", "verify", "mine"]) == 1
    assert "damaged" in caplog.text
    assert main(["weights", "remove", "mine"]) == 0
    assert not folder.exists()
    assert main(["weights", "remove", "mine"]) == 2
    assert "is not installed" in caplog.text


def test_cli_install_list_and_path(server, registry, capsys):
    assert main(["weights", "install", "base", "--url", server.url]) == 0
    assert main(["weights", "path", "base"]) == 0
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    folder = str(weights.installed_folder("base"))
    assert out.count(folder) == 3
    assert "body_comp    not installed" in out
    assert main(["weights", "verify", "base"]) == 0
