"""The review server over HTTP on 127.0.0.1: the API answers, the folder's files and nothing else
can be read, foreign hosts and pages are refused, a token guards a server reachable from elsewhere."""

from __future__ import annotations

import http.client
import json
import os
import threading
from urllib.parse import urlsplit

import numpy as np
import pytest

from mrseg.errors import InputError
from mrseg.review import ReviewApp, ReviewSettings, make_server
from mrseg.review.server import address
from mrseg.review.volumes import load_volume


def request(base: str, path: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as given (no normalisation of ``..`` or escapes)."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_the_api_lists_cases_and_serves_their_slices(running, review_folder):
    status, _, body = request(running, "/api/cases")
    listing = json.loads(body)
    assert status == 200 and listing["kind"] == "segment"
    assert [c["case"] for c in listing["cases"]][0] == "broken_case"
    status, _, body = request(running, "/api/cases/ras_case")
    meta = json.loads(body)
    assert status == 200 and meta["spacing"] == [6.0, 5.0, 4.0]
    assert {"liver", "spleen"} <= {c["name"] for c in meta["classes"]}
    axial = meta["centre"][2]
    status, headers, body = request(running, f"/api/cases/ras_case/slice?plane=axial&index={axial}&layer=labels")
    rows, columns = int(headers["X-Rows"]), int(headers["X-Columns"])
    served = np.frombuffer(body, dtype=np.uint8).reshape(rows, columns)
    volume = load_volume(review_folder / "inputs" / "ras_case.nii.gz", review_folder / "ras_case_seg.nii.gz")
    assert np.array_equal(served, volume.plane("axial", axial, layer="labels").array)
    status, headers, body = request(running, "/api/cases/ras_case/slice?plane=coronal&index=3&layer=image")
    assert status == 200 and headers["X-Dtype"] == "float32" and len(body) == 4 * int(headers["X-Rows"]) * int(
        headers["X-Columns"])
    assert request(running, "/api/cases/broken_case")[0] == 409  # failed: nothing to show
    assert request(running, "/api/cases/nobody")[0] == 404
    assert request(running, "/api/cases/ras_case/slice?plane=axial&index=9999")[0] == 400
    assert request(running, "/api/cases/ras_case/warm")[0] == 202
    page = request(running, "/")
    assert page[0] == 200 and b"review.js" in page[2] and "default-src 'self'" in page[1]["Content-Security-Policy"]


def test_decisions_need_json_from_this_page(running, review_folder):
    sent = json.dumps({"decision": "flag", "note": "check the spleen"}).encode()
    status, _, body = request(running, "/api/cases/pir_case/decision", method="POST", body=sent,
                              headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["decision"] == "flag"
    assert "pir_case,flag,check the spleen," in (review_folder / "review.csv").read_text()
    assert request(running, "/api/cases/pir_case/decision", method="POST", body=sent,
                   headers={"Content-Type": "text/plain"})[0] == 415  # what a cross-site form could send
    assert request(running, "/api/cases/pir_case/decision", method="POST", body=sent,
                   headers={"Content-Type": "application/json", "Origin": "http://evil.example"})[0] == 403
    assert request(running, "/api/cases/pir_case/decision", method="POST", body=b'{"decision": "maybe"}',
                   headers={"Content-Type": "application/json"})[0] == 422
    assert request(running, "/api/cases/nobody/decision", method="POST", body=sent,
                   headers={"Content-Type": "application/json"})[0] == 404


TRAVERSALS = [
    "/files/../../etc/passwd", "/files/..%2F..%2Fetc%2Fpasswd", "/files/%2e%2e/%2e%2e/etc/passwd",
    "/files/%252e%252e/%252e%252e/etc/passwd", "/files//etc/passwd", "/files/%2Fetc%2Fpasswd",
    "/files/inputs/..%5C..%5Cetc%5Cpasswd", "/static/../server.py", "/static/..%2F__init__.py",
    "/static/%2e%2e%2fserver.py", "/api/cases/..%2F..%2Fetc%2Fpasswd", "/api/cases/../../etc/passwd/slice",
    "/files/.review.lock", "/files/inputs/%00ras_case.nii.gz", "/etc/passwd",
    "/files/" + os.path.abspath("/etc/passwd"),
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_out_of_the_folder_are_refused(running, path):
    status, _, body = request(running, path)
    assert status in (403, 404), (path, status)
    assert b"root:" not in body


def test_folder_files_are_served_and_symlinks_out_of_it_refused(running, review_folder, tmp_path):
    assert request(running, "/files/ras_case_seg_stats.json")[0] == 200
    assert request(running, "/files/inputs/ras_case.nii.gz")[0] == 200
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (review_folder / "link.txt").symlink_to(secret)
    (review_folder / "linked").symlink_to(tmp_path)
    assert request(running, "/files/link.txt")[0] == 403
    assert request(running, "/files/linked/secret.txt")[0] == 403


def test_a_foreign_host_name_is_refused_on_loopback(running):
    assert request(running, "/api/cases", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    assert request(running, "/api/cases", headers={"Host": f"localhost:{urlsplit(running).port}"})[0] == 200


def test_another_address_needs_the_token(review_folder):
    app = ReviewApp(review_folder)
    with pytest.raises(InputError, match="token is required"):
        make_server(app, ReviewSettings(host="0.0.0.0", port=0))
    settings = ReviewSettings(host="0.0.0.0", port=0, token="s3cret-token")
    server = make_server(app, settings)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        shown = address(server, settings)
        assert shown.endswith("/?token=s3cret-token")
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert request(base, "/api/cases")[0] == 403
        assert request(base, "/api/cases?token=wrong")[0] == 403
        assert request(base, "/api/cases", headers={"X-Review-Token": "s3cret-token"})[0] == 200
        status, headers, _ = request(base, "/?token=s3cret-token")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"]
        assert request(base, "/static/review.js", headers={"Cookie": headers["Set-Cookie"].split(";")[0]})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def test_the_log_names_routes_not_cases(running, caplog):
    caplog.set_level("DEBUG", logger="mrseg.review.server")
    request(running, "/api/cases/ras_case")
    request(running, "/files/../../etc/passwd")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "GET case 200" in logged and "ras_case" not in logged and "passwd" not in logged
