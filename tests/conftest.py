"""Shared fixtures: trained tiny nnU-Net v2 model folders and the optional real sample data."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

# Under pytest-xdist (the README's `-n 2`) the test processes share the machine's cores: each one,
# and every process it starts (mrseg, nnU-Net, Dask workers inherit the variables), gets its share
# of torch and OpenMP threads. With torch's default of all cores in each, the two processes
# oversubscribed 2 cores and the suite's CPU time rose by half. This runs before numpy and torch
# load, which read the variables once; mrseg.cohort.cluster's available_cores() and worker
# environment say the same, but importing that package loads numpy and scipy first.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _THREADS = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_variable] = _THREADS

import numpy as np
import pytest

import model_factory
from archive_server import ArchiveServer, published_zip
from mrseg.model import store

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow test files first. Under ``--dist loadfile`` each file goes whole to the next free
    process in this order: with the long files (training, cohort, annotation) at the start, the
    run ends on short files and both processes finish together, instead of one core idling while
    the other works through a two-minute file that came last in alphabetical order."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: files stay in order


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data from the project root; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def made_once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make):
    """``make()``, made once per test run: under pytest-xdist the first worker that needs it makes
    it and saves it (torch) in the run's shared temporary folder, the others load it."""
    if not os.environ.get("PYTEST_XDIST_TESTRUNUID"):  # one process: nothing to share
        return make()
    import torch
    from filelock import FileLock

    path = tmp_path_factory.getbasetemp().parent / f"{name}.pt"
    with FileLock(f"{path}.lock"):
        if not path.is_file():
            torch.save(make(), path)
        return torch.load(path, weights_only=True)


@pytest.fixture(scope="session")
def trained_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Briefly trained weights for each architecture (trained once per test run). Under xdist
    each worker starts with another architecture, so the two are trained side by side."""
    kinds = ["PlainConvUNet", "ResidualEncoderUNet"]
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    first = kinds[worker % 2:] + kinds[:worker % 2]

    def train(kind: str) -> dict:
        return model_factory.train_state_dict(model_factory.make_plans(kind=kind))

    made = {kind: made_once_per_run(tmp_path_factory, f"trained_weights_{kind}", lambda kind=kind: train(kind))
            for kind in first}
    return {kind: made[kind] for kind in kinds}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, trained_weights: dict[str, dict]):
    """Factory: ``model_dir(kind=..., **plans_options)`` → cached model folder path."""
    cache: dict[tuple, Path] = {}

    def make(kind: str = "PlainConvUNet", num_folds: int = 2, trainer_name: str = "nnUNetTrainer",
             mirror_axes: tuple[int, ...] | None = None, configuration: str = "3d_fullres",
             **plans_options: object) -> Path:
        key = (kind, num_folds, trainer_name, mirror_axes, configuration, tuple(sorted(plans_options.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"model_{kind}")
            cache[key] = model_factory.build_model(
                folder,
                weights=trained_weights[kind],
                num_folds=num_folds,
                plans_options={"kind": kind, "configuration": configuration, **plans_options},
                trainer_name=trainer_name,
                mirror_axes=mirror_axes,
                configuration=configuration,
            )
        return cache[key]

    return make


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def private_weights_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty weights store and no downloads (tests of downloads re-enable them)."""
    home = tmp_path_factory.mktemp("mrseg_home")
    monkeypatch.setenv("MRSEG_HOME", str(home))
    monkeypatch.setenv("MRSEG_OFFLINE", "1")
    monkeypatch.delenv("MRSEG_MIRROR", raising=False)
    return home


@pytest.fixture()
def archive(model_dir, tmp_path) -> bytes:
    """A tiny model zipped as the published archive is laid out."""
    return published_zip(model_dir(), tmp_path / "weights.zip")


@pytest.fixture()
def server(archive):
    """A real HTTP server on 127.0.0.1 serving ``archive`` (ranges, drops: tests/archive_server.py)."""
    served = ArchiveServer(archive)
    yield served
    served.close()


@pytest.fixture()
def registry(monkeypatch, archive):
    """The base entry with the served archive's checksum; downloads allowed."""
    monkeypatch.delenv("MRSEG_OFFLINE", raising=False)
    entry = dataclasses.replace(store.PUBLISHED["base"], sha256=hashlib.sha256(archive).hexdigest())
    monkeypatch.setitem(store.PUBLISHED, "base", entry)
    return entry
