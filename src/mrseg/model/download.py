"""Getting an archive's bytes: HTTP download that resumes, retries and checks a sha256.

A download goes to ``TARGET.part``, resumes with an HTTP Range request after a dropped
connection, retries with back-off, and is renamed to ``TARGET`` only when its sha256 is the
expected one. ``MRSEG_OFFLINE=1`` refuses every download at once (cluster nodes without
internet), and ``MRSEG_MIRROR`` serves the archives by file name from another base URL.

What is downloaded, and where it is installed, is :mod:`mrseg.model.store`'s business.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from mrseg._version import __version__
from mrseg.errors import ModelError

log = logging.getLogger(__name__)

MIRROR_ENV = "MRSEG_MIRROR"
"""Environment variable with the base URL of a mirror holding the published archives by file name."""

OFFLINE_ENV = "MRSEG_OFFLINE"
"""Set to 1 to never try a download (cluster nodes without internet fail at once with instructions)."""

CHUNK = 1 << 20


def is_offline() -> bool:
    """True when ``$MRSEG_OFFLINE`` forbids downloads (set to anything but empty or ``0``)."""
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def mirror_url(archive: str) -> str | None:
    """Where ``$MRSEG_MIRROR`` serves the archive file named ``archive`` (None: no mirror set)."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{archive}" if mirror else None


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    target: Path,
    *,
    sha256: str,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    offline_hint: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming and retrying; check sha256.

    A dropped connection is retried up to ``retries`` times, each time asking the server for the
    rest of the file with an HTTP Range request (a server that ignores it sends the whole file
    again, which is fine). The finished file is renamed to ``target`` only when its sha256 is
    ``sha256``; otherwise it is deleted.

    Args:
        url: where to download from.
        target: the file to write.
        sha256: the checksum the finished file must have.
        retries: how many times a dropped or failed connection is retried (resuming).
        backoff_s: first wait between retries; doubles each time, at most 30 s.
        timeout_s: socket timeout of each request.
        progress: show a progress bar.
        offline_hint: appended to every error: how to get the file without this download.
        sleep: waits between retries (tests pass a stub).

    Returns:
        ``target``.

    Raises:
        ModelError: ``$MRSEG_OFFLINE`` is set, the server cannot be reached after the retries,
            refuses the request, or the checksum does not match.
    """
    if is_offline():
        raise ModelError(f"{OFFLINE_ENV} is set, so {url} is not downloaded. {offline_hint}")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = min(30.0, backoff_s * 2 ** (attempt - 1))
            log.warning("download of %s interrupted (%s); retry %d of %d in %.1f s", url, last_error, attempt,
                        retries, wait)
            sleep(wait)
        try:
            if _fetch(url, part, timeout_s=timeout_s, progress=progress):
                break
        except urllib.error.HTTPError as err:
            if err.code == 416 and part.is_file():
                break  # the part file already holds everything the server has
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise ModelError(f"{url} answered HTTP {err.code} {err.reason}; check the URL. {offline_hint}") from err
            last_error = err
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if isinstance(getattr(err, "reason", None), socket.gaierror):
                raise ModelError(f"cannot reach {url}: the host name does not resolve (offline?). {offline_hint}"
                                 ) from err
            last_error = err
    else:
        raise ModelError(f"could not download {url} after {retries + 1} attempts ({last_error}). {offline_hint}"
                         ) from last_error
    found = sha256_of(part)
    if found != sha256:
        part.unlink()
        raise ModelError(f"the download from {url} has sha256 {found}, expected {sha256}; it was deleted and "
                         "nothing was installed. Try again, or check that the URL serves the published archive")
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, *, timeout_s: float, progress: bool) -> bool:
    """One request: append to ``part`` from where it stops. True when the file is complete."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"mrseg/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != have:
                raise http.client.HTTPException(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"  # a plain 200: the server sends the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        bar = _progress_bar(part.name.removesuffix(".part"), total, have) if progress else None
        try:
            with open(part, mode) as handle:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise http.client.IncompleteRead(b"", total - size)
    return True


def _range_start(content_range: str) -> int:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header (-1 when unreadable)."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _progress_bar(label: str, total: int | None, initial: int):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=label)
