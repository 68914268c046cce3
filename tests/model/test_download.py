"""Downloads against a real HTTP server on 127.0.0.1: resume, retries, sha256, offline, mirror."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from archive_server import ArchiveServer, unused_port
from mrseg.errors import ModelError
from mrseg.model import download as dl


@pytest.fixture()
def payload() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture()
def sha256(payload) -> str:
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture()
def server(payload, monkeypatch):
    monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    served = ArchiveServer(payload)
    yield served
    served.close()


def test_download_checks_the_sha256_and_renames_into_place(server, payload, sha256, tmp_path):
    target = dl.download(server.url, tmp_path / "dl" / "weights.zip", sha256=sha256, progress=False)
    assert target == tmp_path / "dl" / "weights.zip" and target.read_bytes() == payload
    assert [p.name for p in target.parent.iterdir()] == ["weights.zip"]  # no part file left
    assert server.requests == [None]


def test_download_resumes_after_the_server_drops_the_connection(server, payload, sha256, tmp_path):
    server.drop_after = len(payload) // 2
    target = dl.download(server.url, tmp_path / "weights.zip", sha256=sha256, progress=False, sleep=lambda s: None)
    assert server.requests == [None, f"bytes={len(payload) // 2}-"]
    assert server.bytes_sent == len(payload)  # the second request sent only the rest
    assert target.read_bytes() == payload


def test_a_server_that_ignores_range_sends_the_whole_file_again(server, payload, sha256, tmp_path):
    server.drop_after, server.honour_range = 1000, False
    target = dl.download(server.url, tmp_path / "weights.zip", sha256=sha256, progress=False, sleep=lambda s: None)
    assert len(server.requests) == 2 and server.bytes_sent == 1000 + len(payload)
    assert target.read_bytes() == payload


def test_wrong_checksum_deletes_the_download(server, tmp_path):
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]{64}, expected 0{64}; it was deleted"):
        dl.download(server.url, tmp_path / "weights.zip", sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_server_down_fails_after_the_retries_with_back_off(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    waits: list[float] = []
    url = f"http://127.0.0.1:{unused_port()}/weights.zip"
    with pytest.raises(ModelError, match=r"could not download .* after 4 attempts .*\. import it by hand"):
        dl.download(url, tmp_path / "weights.zip", sha256="0" * 64, retries=3, backoff_s=1.0, progress=False,
                    offline_hint="import it by hand", sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0]
    assert "retry 3 of 3" in caplog.text


def test_http_error_is_not_retried(server, tmp_path):
    with pytest.raises(ModelError, match=r"answered HTTP 404 .*check the URL\. import it by hand"):
        dl.download(server.url.replace("weights.zip", "missing.zip"), tmp_path / "weights.zip", sha256="0" * 64,
                    progress=False, offline_hint="import it by hand")
    assert server.requests == []


def test_offline_refuses_before_any_request(server, monkeypatch, tmp_path):
    monkeypatch.setenv("MRSEG_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"MRSEG_OFFLINE is set, so http://127\.0\.0\.1:\d+/weights\.zip is not "
                                         r"downloaded\. import it by hand"):
        dl.download(server.url, tmp_path / "dl" / "weights.zip", sha256="0" * 64, offline_hint="import it by hand")
    assert server.requests == [] and not (tmp_path / "dl").exists()


@pytest.mark.parametrize("value, offline", [("1", True), ("yes", True), ("0", False), ("", False), (None, False)])
def test_offline_switch(monkeypatch, value, offline):
    if value is None:
        monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("MRSEG_OFFLINE", value)
    assert dl.is_offline() is offline


def test_mirror_serves_archives_by_file_name(monkeypatch):
    assert dl.mirror_url("weights.zip") is None
    monkeypatch.setenv("MRSEG_MIRROR", "http://mirror.example/models/")
    assert dl.mirror_url("weights.zip") == "http://mirror.example/models/weights.zip"


def test_sha256_of_a_file(tmp_path, payload, sha256):
    (tmp_path / "f").write_bytes(payload)
    assert dl.sha256_of(tmp_path / "f") == sha256
