"""The typed public API type-checks and the code passes the linter (part of the test tool chain)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_is_clean() -> None:
    p = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:]


def test_ruff_is_clean() -> None:
    p = subprocess.run([sys.executable, "-m", "ruff", "check", "netsim", "runtime", "tests"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-4000:]


def test_runtime_never_imports_netsim() -> None:
    offenders = [str(p) for p in (ROOT / "runtime").rglob("*.py")
                 if "import netsim" in p.read_text() or "from netsim" in p.read_text()]
    assert offenders == []
