"""A real HTTP server on 127.0.0.1 serving one archive, for the download and model store tests."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path


class ArchiveServer:
    """Serves one byte string at /weights.zip (and /body_comp_weights.zip); can drop the connection
    midway or ignore Range. Any other path answers 404."""

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


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def published_zip(folder: Path, target: Path, *, subfolder: str = "") -> bytes:
    """Zip ``folder`` as the published archive is laid out (files at the top level, version.json)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                bundle.write(file, f"{subfolder}{file.relative_to(folder)}")
        bundle.writestr(f"{subfolder}version.json", json.dumps({"version": "test"}))
    return target.read_bytes()
