"""The package type-checks cleanly (STYLE.md: full type hints, mypy clean)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_is_mypy_clean():
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", str(ROOT / "src" / "mrseg")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
