"""The weights store: published models by name, verified downloads, offline import.

A store is a folder (``$MRSEG_HOME``, default ``~/.mrseg``) holding one nnU-Net v2 model folder per
name under ``weights/``. Each installed folder carries ``mrseg_weights.json``: where it came from,
the archive's sha256 and the sha256 of every file, so ``verify`` can tell a damaged install.

Downloads go to ``downloads/NAME.zip.part``, resume with an HTTP Range request after a dropped
connection, retry with back-off, and are checked against the registry's sha256 before anything is
extracted. Extraction goes to a hidden temporary folder next to the target, which is renamed into
place only when the model folder is complete and valid, so a failure never leaves a model folder
that looks installed.

Example:
    >>> from mrseg.model import weights
    >>> [m.name for m in weights.PUBLISHED.values()]
    ['base', 'body_comp']
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mrseg import __version__
from mrseg.errors import ModelError

log = logging.getLogger(__name__)

HOME_ENV = "MRSEG_HOME"
"""Environment variable naming the store folder (default ``~/.mrseg``)."""

MIRROR_ENV = "MRSEG_MIRROR"
"""Environment variable with the base URL of a mirror holding the published archives by file name."""

OFFLINE_ENV = "MRSEG_OFFLINE"
"""Set to 1 to never try a download (cluster nodes without internet fail at once with instructions)."""

MANIFEST = "mrseg_weights.json"
"""The record an installed model folder carries: source, archive sha256, per-file sha256."""

CHUNK = 1 << 20


@dataclass(frozen=True)
class PublishedModel:
    """A model that can be installed by name.

    Attributes:
        name: the name used with ``--model`` and ``mrseg weights``.
        description: one line for ``mrseg weights list``.
        version: the weights' version as published.
        url: where the zip archive is downloaded from.
        archive: the archive's file name (what a mirror serves).
        sha256: the archive's checksum; a download that does not match is discarded.
        classes: number of foreground classes.
    """

    name: str
    description: str
    version: str
    url: str
    archive: str
    sha256: str
    classes: int


PUBLISHED: dict[str, PublishedModel] = {
    "base": PublishedModel(
        name="base",
        description="MRSegmentator: 40 structures in MRI (any sequence) and CT, 5 folds",
        version="1.2",
        url="https://github.com/hhaentze/MRSegmentator/releases/download/v1.2.0/weights.zip",
        archive="weights.zip",
        sha256="dd26c1b511908a1f2a752b7fe8f5ca9c5603fc3e69fa52f57bf3ccdd52ceb286",
        classes=40,
    ),
    "body_comp": PublishedModel(
        name="body_comp",
        description="MRSegmentator body composition: 10 classes in MRI",
        version="1.0",
        url="https://zenodo.org/records/21211879/files/body_comp_weights.zip?download=1",
        archive="body_comp_weights.zip",
        sha256="3ec490f641dd1aebdd4d2f497e69f8c9f2e4060a45c7d0d69c3ea0e74daf1550",
        classes=10,
    ),
}
"""The published models, by name."""


@dataclass(frozen=True)
class StoreEntry:
    """One line of ``mrseg weights list``."""

    name: str
    status: str  # "installed", "bundled", "not installed"
    folder: Path | None
    description: str


def store_root(home: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``home``, else ``$MRSEG_HOME``, else ``~/.mrseg``."""
    if home is not None:
        return Path(home)
    env = os.environ.get(HOME_ENV)
    return Path(env) if env else Path.home() / ".mrseg"


def installed_folder(name: str, *, home: str | os.PathLike[str] | None = None) -> Path:
    """Where model ``name`` is (or would be) installed."""
    _check_name(name)
    return store_root(home) / "weights" / name


def is_installed(name: str, *, home: str | os.PathLike[str] | None = None) -> bool:
    """True when ``name`` is installed in the store (its manifest is the last thing written)."""
    return (installed_folder(name, home=home) / MANIFEST).is_file()


def list_models(*, home: str | os.PathLike[str] | None = None) -> list[StoreEntry]:
    """The published models, the bundled ones and anything imported into the store."""
    from mrseg.model.loader import BUNDLED_MODELS, bundled_model_folder

    entries = []
    for model in PUBLISHED.values():
        folder = installed_folder(model.name, home=home)
        installed = is_installed(model.name, home=home)
        entries.append(StoreEntry(model.name, "installed" if installed else "not installed",
                                  folder if installed else None, f"{model.description} (weights {model.version})"))
    for name in BUNDLED_MODELS:
        try:
            entries.append(StoreEntry(name, "bundled", bundled_model_folder(name), "shipped inside the package"))
        except ModelError:
            entries.append(StoreEntry(name, "not installed", None, "shipped inside the package (missing here)"))
    weights = store_root(home) / "weights"
    if weights.is_dir():
        for folder in sorted(weights.iterdir()):
            if folder.name not in PUBLISHED and not folder.name.startswith(".") and (folder / MANIFEST).is_file():
                source = json.loads((folder / MANIFEST).read_text()).get("source", "")
                entries.append(StoreEntry(folder.name, "installed", folder, f"imported from {source}"))
    return entries


def model_path(name: str, *, home: str | os.PathLike[str] | None = None) -> Path:
    """The folder of installed or bundled model ``name``.

    Raises:
        ModelError: the model is not installed; the message says how to install it.
    """
    from mrseg.model.loader import BUNDLED_MODELS, bundled_model_folder

    if name in BUNDLED_MODELS:
        return bundled_model_folder(name)
    if is_installed(name, home=home):
        return installed_folder(name, home=home)
    raise ModelError(_not_installed_message(name, home=home))


def install(
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    url: str | None = None,
    force: bool = False,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download, verify and install published model ``name``; returns its folder.

    Args:
        name: a key of :data:`PUBLISHED`.
        home: the store folder (default :func:`store_root`).
        url: download from here instead of the registry's URL (or ``$MRSEG_MIRROR``); the
            registry's sha256 is still required.
        force: reinstall over an existing install.
        retries: how many times a dropped or failed connection is retried (resuming).
        backoff_s: first wait between retries; doubles each time, at most 30 s.
        timeout_s: socket timeout of each request.
        progress: show a progress bar.

    Raises:
        ModelError: unknown name, offline, the server refuses, the checksum does not match, or
            the archive is not a model; nothing is installed in any of these cases.
    """
    if name not in PUBLISHED:
        raise ModelError(f"unknown model {name!r}; published models: {', '.join(PUBLISHED)}. "
                         "Use 'mrseg weights import ZIP_OR_DIR --name NAME' for other models")
    model = PUBLISHED[name]
    target = installed_folder(name, home=home)
    if is_installed(name, home=home) and not force:
        log.info("%s is already installed in %s", name, target)
        return target
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        hint = _not_installed_message(name, home=home)
        raise ModelError(f"{OFFLINE_ENV} is set, so {name} is not downloaded. {hint}")
    source = url or _mirror_url(model) or model.url
    downloads = store_root(home) / "downloads"
    archive = downloads / f"{name}.zip"
    download(source, archive, sha256=model.sha256, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
             progress=progress, offline_hint=_not_installed_message(name, home=home))
    try:
        folder = _install_archive(archive, target, source=source, archive_sha256=model.sha256, force=force)
    except ModelError:
        archive.unlink(missing_ok=True)
        raise
    archive.unlink(missing_ok=True)
    log.info("installed %s (weights %s) in %s", name, model.version, folder)
    return folder


def import_model(
    source: str | os.PathLike[str],
    *,
    name: str | None = None,
    home: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Install a model from a local zip archive or model folder (offline); returns its folder.

    A published archive (``weights.zip`` of MRSegmentator) is recognised by its sha256 and named
    after its registry entry unless ``name`` is given; anything else needs ``name``.

    Raises:
        ModelError: the source is missing, not a zip or model folder, or the name is taken.
    """
    path = Path(source)
    if not path.exists():
        raise ModelError(f"{path} does not exist; pass a model zip archive or an nnU-Net v2 model folder")
    archive_sha = sha256_of(path) if path.is_file() else None
    if name is None:
        match = [m.name for m in PUBLISHED.values() if m.sha256 == archive_sha]
        if not match:
            what = "is a model folder" if path.is_dir() else "is not a published archive (no registry sha256 matches)"
            raise ModelError(f"{path} {what}; name it with --name NAME")
        name = match[0]
    _check_name(name)
    if name in PUBLISHED and archive_sha is not None and archive_sha != PUBLISHED[name].sha256:
        log.warning("%s does not match the published %s archive's sha256; importing it as given", path, name)
    target = installed_folder(name, home=home)
    if path.is_file():
        return _install_archive(path, target, source=str(path.resolve()), archive_sha256=archive_sha, force=force)
    return _install_folder(path, target, source=str(path.resolve()), force=force)


def verify(name: str, *, home: str | os.PathLike[str] | None = None) -> list[str]:
    """Re-hash an installed model's files against its manifest; returns the problems (none: intact).

    Raises:
        ModelError: the model is not installed.
    """
    folder = installed_folder(name, home=home)
    if not (folder / MANIFEST).is_file():
        raise ModelError(_not_installed_message(name, home=home))
    manifest = json.loads((folder / MANIFEST).read_text())
    problems = []
    for relative, expected in sorted(manifest["files"].items()):
        file = folder / relative
        if not file.is_file():
            problems.append(f"{relative}: missing")
        elif sha256_of(file) != expected:
            problems.append(f"{relative}: sha256 differs from the install record")
    return problems


def remove(name: str, *, home: str | os.PathLike[str] | None = None) -> Path:
    """Delete an installed model; returns the folder that was removed.

    Raises:
        ModelError: the model is not installed.
    """
    folder = installed_folder(name, home=home)
    if not folder.is_dir():
        raise ModelError(f"{name} is not installed in {store_root(home)}; 'mrseg weights list' shows what is")
    # Rename first so a crash half-way never leaves a folder that still looks installed.
    doomed = folder.with_name(f".{name}.removing-{uuid.uuid4().hex[:8]}")
    folder.rename(doomed)
    shutil.rmtree(doomed)
    return folder


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

    Raises:
        ModelError: the server cannot be reached after the retries, refuses the request, or the
            checksum does not match.
    """
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


def _install_archive(archive: Path, target: Path, *, source: str, archive_sha256: str | None, force: bool) -> Path:
    """Extract ``archive`` next to ``target`` and move the model folder into place."""
    staging = _staging_folder(target)
    try:
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                        raise ModelError(f"{archive} holds an unsafe path {member!r}; not extracting it")
                bundle.extractall(staging)
        except (zipfile.BadZipFile, EOFError) as err:
            raise ModelError(f"{archive} is not a readable zip archive ({err}); download it again") from err
        root = _model_root(staging, archive)
        return _commit(root, target, source=source, archive_sha256=archive_sha256, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_folder(folder: Path, target: Path, *, source: str, force: bool) -> Path:
    staging = _staging_folder(target)
    try:
        copy = staging / "model"
        shutil.copytree(_model_root(folder, folder), copy)
        return _commit(copy, target, source=source, archive_sha256=None, force=force)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_folder(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.installing-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    return staging


def _model_root(folder: Path, source: Path) -> Path:
    """The folder holding plans.json: ``folder`` itself or its only subfolder that has one."""
    if (folder / "plans.json").is_file():
        root = folder
    else:
        found = sorted(p.parent for p in folder.glob("*/plans.json"))
        if len(found) != 1:
            raise ModelError(f"{source} holds no nnU-Net v2 model folder (plans.json, dataset.json, "
                             "fold_K/checkpoint_final.pth) at its top level or in one subfolder")
        root = found[0]
    missing = [n for n in ("plans.json", "dataset.json") if not (root / n).is_file()]
    if not any(root.glob("fold_*/checkpoint_final.pth")):
        missing.append("fold_K/checkpoint_final.pth")
    if missing:
        raise ModelError(f"{source} is not a complete nnU-Net v2 model folder: missing {', '.join(missing)}")
    return root


def _commit(root: Path, target: Path, *, source: str, archive_sha256: str | None, force: bool) -> Path:
    """Write the manifest into ``root`` and rename it to ``target`` (replacing it when ``force``)."""
    from mrseg.model.plans import read_dataset, read_plans

    read_plans(root / "plans.json")  # a readable model, or a ModelError naming the file
    read_dataset(root / "dataset.json")
    files = {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = {"name": target.name, "source": source, "archive_sha256": archive_sha256, "files": files,
                "installed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "mrseg_version": __version__}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if target.exists():
        if not force:
            raise ModelError(f"{target} already exists; pass --force to replace it or choose another --name")
        remove(target.name, home=target.parent.parent)
    os.replace(root, target)
    return target


def _mirror_url(model: PublishedModel) -> str | None:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{model.archive}" if mirror else None


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or any(c in name for c in "/\\") or name in (".", ".."):
        raise ModelError(f"model name {name!r} is not usable as a folder name; use letters, digits, '-' or '_'")


def _not_installed_message(name: str, *, home: str | os.PathLike[str] | None) -> str:
    store = store_root(home)
    if name in PUBLISHED:
        model = PUBLISHED[name]
        return (f"model {name} is not installed in {store}. Install it with 'mrseg weights install {name}' "
                f"(downloads {model.url}), or download that file on a machine with internet and run "
                f"'mrseg weights import {model.archive}'. {HOME_ENV} sets the store folder.")
    return (f"model {name!r} is not installed in {store} and is not a published model "
            f"({', '.join(PUBLISHED)}); import it with 'mrseg weights import ZIP_OR_DIR --name {name}'")
