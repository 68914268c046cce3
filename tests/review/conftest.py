"""Fixtures of the review tests: a review folder (see :mod:`review_factory`) and a server on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from mrseg.report.records import CaseRecord
from review_factory import truth_case


@pytest.fixture()
def review_folder(tmp_path: Path) -> Path:
    """Three viewable cases (stored RAS, LPS and with permuted axes PIR) and one failed case."""
    folder = tmp_path / "out"
    folder.mkdir()
    truth_case(folder, "ras_case", seed=93001, orientation="RAS")
    truth_case(folder, "lps_case", seed=93002, orientation="LPS")
    truth_case(folder, "pir_case", seed=93003, orientation="PIR")
    failed = CaseRecord("broken_case", str(folder / "inputs" / "broken.nii.gz"), "failed",
                        error="cannot read broken.nii.gz: not a NIfTI file")
    (folder / "broken_case_seg_record.json").write_text(failed.to_json())
    return folder


@pytest.fixture()
def running(review_folder: Path) -> Iterator[str]:
    """A review server on 127.0.0.1 (any free port) in this process; yields its address."""
    from mrseg.review import ReviewApp, ReviewSettings, make_server
    from mrseg.review.server import address

    app = ReviewApp(review_folder, reviewer="tester")
    settings = ReviewSettings(port=0)
    server = make_server(app, settings)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield address(server, settings).rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        app.close()
