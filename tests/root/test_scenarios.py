"""Every shipped scenario runs on the own engine and its expectations and model checks hold."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.relative_to(ROOT) for p in (ROOT / "scenarios" / "regression").glob("*.yaml"))
pytestmark = pytest.mark.root


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_regression_scenario_passes(scenario: Path, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "netsim.cli", "run", str(scenario), "--json",
                        "--trace-dir", str(tmp_path / "trace"), "--name", f"t-{scenario.stem}"[:24]],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert report["ok"] and report["complete"]
    assert all(c["ok"] for c in report["checks"])
    assert any(c["kind"] == "expect" for c in report["checks"])
