"""The model store: every way a model name becomes a model folder, in one place.

A model is given as a folder, or by name:

- bundled: shipped inside the package (``demo``, under ``mrseg/models/NAME``);
- published: listed in :data:`PUBLISHED` and installed into the store by download
  (``base``, ``body_comp``);
- imported: a local zip archive or model folder copied into the store by :func:`import_model`.

Without a model, ``$MRSEG_WEIGHTS_PATH`` names the folder, else the installed ``base`` model.
:func:`resolve_model_folder` applies these rules; whether a missing published model may be
downloaded is its caller's choice (``install_missing``): the CLI and :func:`mrseg.segment` allow
it, the engine (:class:`~mrseg.inference.segmenter.Segmenter`) only ever loads a folder.

The store is a folder (``$MRSEG_HOME``, default ``~/.mrseg``) holding one nnU-Net v2 model folder
per name under ``weights/``. Each installed folder carries ``mrseg_weights.json``: where it came
from, the archive's sha256 and the sha256 of every file, so :func:`verify` can tell a damaged
install. Archives are fetched by :mod:`mrseg.model.download` (resume, retries, mirror, offline)
and checked against the registry's sha256 before anything is extracted. Extraction goes to a
hidden temporary folder next to the target, which is renamed into place only when the model
folder is complete and valid, so a failure never leaves a model folder that looks installed.

Example:
    >>> from mrseg.model import store
    >>> list(store.PUBLISHED)
    ['base', 'body_comp']
    >>> store.resolve_model_folder("demoo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mrseg.errors.ModelError: unknown model 'demoo'; did you mean demo? Known models: base, body_comp, demo...
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mrseg._version import __version__
from mrseg.errors import ModelError
from mrseg.model.download import download, mirror_url, sha256_of
from mrseg.model.plans import read_dataset, read_plans

log = logging.getLogger(__name__)

HOME_ENV = "MRSEG_HOME"
"""Environment variable naming the store folder (default ``~/.mrseg``)."""

WEIGHTS_ENV = "MRSEG_WEIGHTS_PATH"
"""Environment variable naming the model folder used when none is given (as the published MRSegmentator reads it)."""

MANIFEST = "mrseg_weights.json"
"""The record an installed model folder carries: source, archive sha256, per-file sha256."""

BUNDLED_MODELS = ("demo",)
"""Models shipped inside the package, selectable by name wherever a model is taken."""


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


# --------------------------------------------------------------------------- names → folders


def resolve_model_folder(
    model: str | os.PathLike[str] | None,
    *,
    install_missing: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """The model folder for ``model``: a path, or the name of a bundled, published or imported model.

    A string that exists on disk or holds a path separator is a path and is returned as given
    (:func:`~mrseg.model.loader.load_model` checks the folder). Without ``model``,
    ``$MRSEG_WEIGHTS_PATH`` is used when set, else the published ``base`` model from the store.

    Args:
        model: a model folder, a model name, or None.
        install_missing: download a published model that is not installed yet (``mrseg segment``
            does; offline the error says where to get the archive and how to import it).
        home: the store folder (default :func:`store_root`).

    Returns:
        The model folder.

    Raises:
        ModelError: an unknown name (the message lists the closest known names), a published
            model that is not installed (and ``install_missing`` is off or the install fails),
            or no model given and none installed.

    Example:
        >>> resolve_model_folder("demo").name  # doctest: +SKIP
        'demo'
    """
    if model is None:
        return _default_model_folder(install_missing=install_missing, home=home)
    name = os.fspath(model)
    if not name or any(sep in name for sep in "/\\") or Path(name).exists():
        return Path(model)
    if name in BUNDLED_MODELS:
        return bundled_model_folder(name)
    if _usable_name(name) and is_installed(name, home=home):
        return installed_folder(name, home=home)
    if name in PUBLISHED:
        return install(name, home=home) if install_missing else model_path(name, home=home)
    raise ModelError(_unknown_model_message(name, home=home))


def known_models(*, home: str | os.PathLike[str] | None = None) -> list[str]:
    """Every model name: the published ones, the bundled ones, then those imported into the store."""
    names = [*PUBLISHED, *BUNDLED_MODELS, *(folder.name for folder in _imported_folders(home))]
    return list(dict.fromkeys(names))


def bundled_model_folder(name: str) -> Path:
    """The folder of a model shipped inside the package (``demo``).

    Raises:
        ModelError: unknown name, or the package was built without the model's weights.
    """
    if name not in BUNDLED_MODELS:
        raise ModelError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    folder = Path(__file__).resolve().parent.parent / "models" / name
    if not (folder / "fold_0" / "checkpoint_final.pth").is_file():
        raise ModelError(
            f"the {name} model is not in this installation ({folder}); reinstall mrseg, or train it with "
            "python scripts/train_demo_model.py --out src/mrseg/models/demo"
        )
    return folder


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


def model_path(name: str, *, home: str | os.PathLike[str] | None = None) -> Path:
    """The folder of installed or bundled model ``name``.

    Raises:
        ModelError: the model is not installed; the message says how to install it.
    """
    if name in BUNDLED_MODELS:
        return bundled_model_folder(name)
    if is_installed(name, home=home):
        return installed_folder(name, home=home)
    raise ModelError(_not_installed_message(name, home=home))


def list_models(*, home: str | os.PathLike[str] | None = None) -> list[StoreEntry]:
    """The published models, the bundled ones and anything imported into the store."""
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
    for folder in _imported_folders(home):
        source = json.loads((folder / MANIFEST).read_text()).get("source", "")
        entries.append(StoreEntry(folder.name, "installed", folder, f"imported from {source}"))
    return entries


# --------------------------------------------------------------------------- changing the store


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
    source = url or mirror_url(model.archive) or model.url
    archive = store_root(home) / "downloads" / f"{name}.zip"
    download(source, archive, sha256=model.sha256, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
             progress=progress, offline_hint=_not_installed_message(name, home=home))
    try:
        folder = _install_archive(archive, target, source=source, archive_sha256=model.sha256, force=force)
    finally:
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


# --------------------------------------------------------------------------- helpers


def _default_model_folder(*, install_missing: bool, home: str | os.PathLike[str] | None) -> Path:
    """The model used when none is given: ``$MRSEG_WEIGHTS_PATH``, else the installed ``base``."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    if is_installed("base", home=home):
        return installed_folder("base", home=home)
    how = (
        "pass --model DIR (model=... in Python) pointing at an nnU-Net v2 model folder (plans.json, "
        f"dataset.json, fold_0/checkpoint_final.pth, ...), set {WEIGHTS_ENV}=DIR, or install the published "
        "MRSegmentator weights (the weights.zip of its GitHub release v1.2.0) with 'mrseg weights install base' "
        "or, offline, 'mrseg weights import weights.zip'"
    )
    if install_missing:
        try:
            return install("base", home=home)
        except ModelError as err:
            raise ModelError(f"no model given and the base model could not be installed: {err} Or {how}.") from err
    raise ModelError(f"no model given: {how}.")


def _imported_folders(home: str | os.PathLike[str] | None) -> list[Path]:
    """Installed store folders that are not published models (imported under their own name)."""
    weights = store_root(home) / "weights"
    if not weights.is_dir():
        return []
    return [folder for folder in sorted(weights.iterdir())
            if folder.name not in PUBLISHED and _usable_name(folder.name) and (folder / MANIFEST).is_file()]


def _unknown_model_message(name: str, *, home: str | os.PathLike[str] | None) -> str:
    known = known_models(home=home)
    by_lower = {k.lower(): k for k in known}
    close = [by_lower[k] for k in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]
    if close:
        guess = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
        listed = f"did you mean {guess}? Known models: "
    else:
        listed = "known models: "
    return (f"unknown model {name!r}; {listed}{', '.join(known)}; or give a model folder path "
            f"(one holding plans.json, dataset.json and fold_K/), e.g. ./{name}")


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


def _usable_name(name: str) -> bool:
    """True when ``name`` can be a folder in the store (no separator, not hidden, not empty)."""
    return bool(name) and not name.startswith(".") and not any(c in name for c in "/\\")


def _check_name(name: str) -> None:
    if not _usable_name(name):
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
