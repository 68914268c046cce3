"""The review web server: a page and a small JSON/binary API over one review folder.

Routes (every one read-only except the decision):

- ``GET /``, ``GET /static/NAME``: the page (files of the package, no build step, no CDN);
- ``GET /api/cases``: every case with its status, flags, uncertainty and decision;
- ``GET /api/cases/CASE``: one case's grid, default window, classes with colours and volumes;
- ``GET /api/cases/CASE/slice?plane=axial&index=N&layer=image|labels``: one slice, raw
  little-endian values (``float32`` image, ``uint8``/``uint16`` labels), its size in headers;
- ``GET /api/cases/CASE/warm``: load a case in the background (the one the reviewer opens next);
- ``POST /api/cases/CASE/decision`` (JSON ``{"decision": "accept", "note": "..."}``);
- ``GET /files/PATH``: a file under the folder (previews, tables), never outside it.

Security, as a server of medical images should have it: it binds to 127.0.0.1 unless told
otherwise, and then every request needs the random token printed with the address. On loopback
the ``Host`` header must name the loopback address (a web page elsewhere cannot reach the server
through a DNS name of its own), and a decision needs a JSON body and, where the browser sends
one, an ``Origin`` of this server. No request names a file outside the folder: cases are looked
up by name in the list the folder's source built, and ``/files`` paths are resolved (symlinks
included) and refused when they leave the folder. The log says which route answered, never a
case name or a path.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import json
import logging
import mimetypes
import secrets
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from mrseg.classes import class_colors
from mrseg.errors import InputError, MrsegError
from mrseg.report.decisions import DecisionTable
from mrseg.review.sources import ReviewCase, Source, open_source
from mrseg.review.volumes import PLANES, VolumeCache

log = logging.getLogger(__name__)

STATIC_FILES = {"index.html": "text/html; charset=utf-8", "review.js": "text/javascript; charset=utf-8",
                "review.css": "text/css; charset=utf-8"}
"""The page's files, served by name only."""

TOKEN_COOKIE = "mrseg_review_token"
LIST_SECONDS = 2.0
"""How long a scanned case list is reused before the folder is read again."""


class Refused(Exception):
    """A request answered with an error status (its message goes to the client, never to the log)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ReviewSettings:
    """How the server runs: address, who reviews, whether a token guards it."""

    host: str = "127.0.0.1"
    port: int = 8765
    reviewer: str = ""
    token: str | None = None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ReviewApp:
    """The server's state: the folder's source, its decisions and the loaded volumes."""

    def __init__(self, folder: str | Path, *, reviewer: str = "") -> None:
        self.folder = Path(folder).resolve()
        self.source: Source = open_source(self.folder)
        self.decisions = DecisionTable(self.folder)
        self.reviewer = reviewer or _user()
        self.volumes = VolumeCache()
        self._listed: tuple[float, dict[str, ReviewCase]] = (0.0, {})
        self._lock = threading.Lock()

    def cases(self, *, fresh: bool = False) -> dict[str, ReviewCase]:
        """Case name → case, worst first (failures, QC score, uncertainty), rescanned every few seconds."""
        with self._lock:
            stamp, listed = self._listed
            if fresh or time.monotonic() - stamp > LIST_SECONDS:
                ordered = sorted(self.source.cases(), key=lambda c: (tuple(-v for v in c.badness()), c.case))
                listed = {case.case: case for case in ordered}
                self._listed = (time.monotonic(), listed)
            return listed

    def case(self, name: str) -> ReviewCase:
        case = self.cases().get(name) or self.cases(fresh=True).get(name)
        if case is None:
            raise Refused(HTTPStatus.NOT_FOUND, "no such case")
        return case

    def listing(self) -> dict[str, Any]:
        decided = self.decisions.read()
        rows = []
        for case in self.cases().values():
            decision = decided.get(case.case)
            rows.append({**case.summary(), "decision": decision.decision if decision else "",
                         "decision_note": decision.note if decision else ""})
        return {"folder": self.folder.name, "kind": self.source.kind, "reviewer": self.reviewer, "cases": rows}

    def details(self, name: str) -> dict[str, Any]:
        case = self._viewable(name)
        volume = self.volumes.get(case.image, case.labels)  # type: ignore[arg-type]
        present = sorted(int(v) for v in np.unique(volume.labels[::2, ::2, ::2]) if v)
        shown = set(present) | {value for value, label in case.classes.items() if case.volumes.get(label, 0.0) > 0}
        names = {value: case.classes.get(value, f"label {value}") for value in sorted(shown)}
        colors = class_colors(names)
        decision = self.decisions.read().get(name)
        i, j, k = volume.shape_ijk
        return {
            **case.summary(),
            "shape": {"i": i, "j": j, "k": k}, "spacing": list(volume.spacing),
            "counts": {plane: volume.count(plane) for plane in PLANES}, "centre": list(volume.centre),
            "window": list(volume.window), "range": list(volume.value_range),
            "classes": [{"value": value, "name": label, "color": list(colors[value]),
                         "volume_ml": case.volumes.get(label)} for value, label in names.items()],
            "decision": decision.decision if decision else "", "decision_note": decision.note if decision else "",
        }

    def slice_bytes(self, name: str, plane: str, index: int, layer: str) -> tuple[bytes, dict[str, str]]:
        case = self._viewable(name)
        volume = self.volumes.get(case.image, case.labels)  # type: ignore[arg-type]
        try:
            cut = volume.plane(plane, index, layer=layer)
        except InputError as err:
            raise Refused(HTTPStatus.BAD_REQUEST, str(err)) from err
        values = cut.array.astype("<f4") if layer == "image" else cut.array.astype(f"<{cut.array.dtype.str[1:]}")
        rows, columns = values.shape
        return np.ascontiguousarray(values).tobytes(), {
            "X-Rows": str(rows), "X-Columns": str(columns), "X-Dtype": values.dtype.name,
            "X-Row-Spacing": f"{cut.row_spacing:.6g}", "X-Column-Spacing": f"{cut.column_spacing:.6g}"}

    def warm(self, name: str) -> None:
        case = self._viewable(name)
        self.volumes.warm(case.image, case.labels)  # type: ignore[arg-type]

    def decide(self, name: str, decision: str, note: str) -> dict[str, Any]:
        self.case(name)
        made = self.decisions.decide(name, decision, note=note, reviewer=self.reviewer)
        effect = None
        if made is not None:
            try:
                effect = self.source.decided(name, decision, note)
            except MrsegError as err:
                effect = f"recorded, but the {self.source.kind} did not take it: {err}"
            if effect:
                self.cases(fresh=True)
        return {"case": name, "decision": made.decision if made else "", "note": made.note if made else "",
                "time": made.time if made else "", "effect": effect or ""}

    def folder_file(self, relative: str) -> Path:
        """A file under the folder named by a request path, or Refused (404/403)."""
        parts = [unquote(part) for part in relative.split("/") if part]
        if not parts or any(p in ("", ".", "..") or p.startswith(".") or "/" in p or "\\" in p or "\x00" in p
                            for p in parts):
            raise Refused(HTTPStatus.NOT_FOUND, "no such file")
        candidate = self.folder.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise Refused(HTTPStatus.NOT_FOUND, "no such file") from None
        if not resolved.is_relative_to(self.folder):
            raise Refused(HTTPStatus.FORBIDDEN, "outside the review folder")
        if not resolved.is_file():
            raise Refused(HTTPStatus.NOT_FOUND, "no such file")
        return resolved

    def _viewable(self, name: str) -> ReviewCase:
        case = self.case(name)
        if case.image is None or case.labels is None:
            raise Refused(HTTPStatus.CONFLICT, f"nothing to show: the case is {case.status}")
        return case

    def close(self) -> None:
        self.volumes.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container: the decisions still count
        return ""


def make_server(app: ReviewApp, settings: ReviewSettings) -> ThreadingHTTPServer:
    """A threaded HTTP server for ``app`` bound to ``settings.host:settings.port`` (port 0: any free one).

    Raises:
        InputError: the address cannot be bound, or a non-loopback host without a token.
    """
    loopback = is_loopback(settings.host)
    if not loopback and not settings.token:
        raise InputError(f"--host {settings.host} is reachable from other machines; a token is required")
    handler = _handler(app, settings, loopback)
    try:
        server = ThreadingHTTPServer((settings.host, settings.port), handler)
    except OSError as err:
        raise InputError(f"cannot listen on {settings.host}:{settings.port} ({err.strerror}); pick another --port")
    server.daemon_threads = True
    return server


def address(server: ThreadingHTTPServer, settings: ReviewSettings) -> str:
    """The address to open, with the token where one guards the server."""
    host, port = server.server_address[:2]
    shown = settings.host if settings.host not in ("0.0.0.0", "::") else _this_host()
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={settings.token}" if settings.token else "")


def _this_host() -> str:
    import socket

    return socket.gethostname()


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _handler(app: ReviewApp, settings: ReviewSettings, loopback: bool) -> type[BaseHTTPRequestHandler]:
    static = resources.files("mrseg.review") / "static"

    class Handler(BaseHTTPRequestHandler):
        server_version = "mrseg-review"
        sys_version = ""
        route = "-"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # the base class would log the path, which names cases

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log.debug("%s %s %s", self.command, self.route, code)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(self._get)

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self._post)

        def _answer(self, work: Any) -> None:
            try:
                self._guard()
                work()
            except Refused as refused:
                self._send(refused.status, json.dumps({"error": str(refused)}).encode(), "application/json")
            except MrsegError as err:
                self._send(HTTPStatus.UNPROCESSABLE_ENTITY, json.dumps({"error": str(err)}).encode(),
                           "application/json")
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as err:  # one bad request never stops the server
                log.error("review request failed: %s", type(err).__name__)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error": "internal error"}', "application/json")

        def _guard(self) -> None:
            if loopback:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
                if not is_loopback(host):
                    self.route = "refused-host"
                    raise Refused(HTTPStatus.FORBIDDEN, "this server answers on its loopback address only")
            if settings.token:
                query = parse_qs(urlsplit(self.path).query)
                cookie = SimpleCookie(self.headers.get("Cookie") or "")
                given = (query.get("token", [""])[0] or self.headers.get("X-Review-Token", "")
                         or (cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else ""))
                if not hmac.compare_digest(given.encode(), settings.token.encode()):
                    self.route = "refused-token"
                    raise Refused(HTTPStatus.FORBIDDEN, "the address needs its access token (?token=...)")

        def _get(self) -> None:
            split = urlsplit(self.path)
            parts = split.path.split("/")[1:]
            query = parse_qs(split.query)
            if split.path == "/":
                self.route = "page"
                return self._static("index.html", set_cookie=bool(settings.token))
            if len(parts) == 2 and parts[0] == "static":
                self.route = "static"
                if parts[1] not in STATIC_FILES:
                    raise Refused(HTTPStatus.NOT_FOUND, "no such file")
                return self._static(parts[1])
            if parts[0] == "files":
                self.route = "files"
                path = app.folder_file("/".join(parts[1:]))
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                return self._send(HTTPStatus.OK, path.read_bytes(), kind)
            if parts[:2] == ["api", "cases"]:
                if len(parts) == 2:
                    self.route = "list"
                    return self._json(app.listing())
                name = unquote(parts[2])
                if len(parts) == 3:
                    self.route = "case"
                    return self._json(app.details(name))
                if len(parts) == 4 and parts[3] == "slice":
                    self.route = "slice"
                    plane = query.get("plane", [""])[0]
                    layer = query.get("layer", ["image"])[0]
                    try:
                        index = int(query.get("index", [""])[0])
                    except ValueError:
                        raise Refused(HTTPStatus.BAD_REQUEST, "index must be a whole number") from None
                    if plane not in PLANES:
                        raise Refused(HTTPStatus.BAD_REQUEST, f"plane must be one of {', '.join(PLANES)}")
                    data, headers = app.slice_bytes(name, plane, index, layer)
                    return self._send(HTTPStatus.OK, data, "application/octet-stream", headers)
                if len(parts) == 4 and parts[3] == "warm":
                    self.route = "warm"
                    app.warm(name)
                    return self._json({"warming": True}, HTTPStatus.ACCEPTED)
            self.route = "unknown"
            raise Refused(HTTPStatus.NOT_FOUND, "no such page")

        def _post(self) -> None:
            parts = urlsplit(self.path).path.split("/")[1:]
            if not (len(parts) == 4 and parts[:2] == ["api", "cases"] and parts[3] == "decision"):
                self.route = "unknown"
                raise Refused(HTTPStatus.NOT_FOUND, "no such page")
            self.route = "decision"
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the decision as application/json")
            origin = self.headers.get("Origin")
            if origin and urlsplit(origin).netloc != self.headers.get("Host"):
                raise Refused(HTTPStatus.FORBIDDEN, "decisions come from this server's own page only")
            length = int(self.headers.get("Content-Length") or 0)
            if length > 65536:
                raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "decision too long")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                decision, note = str(body["decision"]), str(body.get("note", ""))
            except (ValueError, KeyError, TypeError):
                raise Refused(HTTPStatus.BAD_REQUEST, 'send {"decision": "accept|flag|reject|clear", "note": ""}')
            self._json(app.decide(unquote(parts[2]), decision, note))

        def _static(self, name: str, *, set_cookie: bool = False) -> None:
            data = (static / name).read_bytes()
            headers = {}
            if set_cookie:
                headers["Set-Cookie"] = f"{TOKEN_COOKIE}={settings.token}; HttpOnly; SameSite=Strict; Path=/"
            self._send(HTTPStatus.OK, data, STATIC_FILES[name], headers)

        def _json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: HTTPStatus, data: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:")
            self.send_header("Referrer-Policy", "no-referrer")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def serve(folder: str | Path, settings: ReviewSettings, *, on_ready: Any = None) -> None:
    """Serve ``folder`` until interrupted; ``on_ready(url)`` is called once the server listens.

    Raises:
        InputError: the folder holds nothing to review, or the address cannot be bound.
    """
    app = ReviewApp(folder, reviewer=settings.reviewer)
    server = make_server(app, settings)
    try:
        if on_ready is not None:
            on_ready(address(server, settings))
        server.serve_forever(poll_interval=0.25)
    finally:
        server.server_close()
        app.close()
