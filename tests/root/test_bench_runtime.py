"""`netsim bench runtime` end to end, small: both sides really run (netsim's containers and
`docker run --rm` on a dockerd the bench starts in a throwaway lab namespace), the JSON has the
keys the issue names, and nothing of either side is left (processes, labs, data-roots, bench
state).  Timings are the bench's business, not this test's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("NETSIM_STATE_ROOT", "/run/netsim"))
DATA_ROOT = Path(os.environ.get("NETSIM_DOCKER_ROOT", "/var/lib/netsim/docker"))
pytestmark = pytest.mark.root


def _bench_things() -> set[str]:
    found = {f"lab {p.name}" for p in (STATE / "labs").glob("benchdk*")}
    found |= {f"data-root {p.name}" for p in DATA_ROOT.glob("benchdk*")}
    found |= {f"bench state {p.name}" for p in (STATE / "bench").glob("*")}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "benchdk" in cmd or "netsim-bench" in cmd:
            found.add(f"process {pid}: {cmd[:100]}")
    return found


def test_bench_runtime_times_both_sides_and_leaves_nothing() -> None:
    if not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("dockerd is not installed: `sudo make setup` installs docker.io when no Docker engine is present")
    before = _bench_things()
    p = subprocess.run([sys.executable, "-m", "netsim.cli", "bench", "runtime", "--n", "2", "--up", "4",
                        "--workers", "2", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=180,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    r = json.loads(p.stdout)
    assert r["n"] == 2
    for key in ("netsim_median_s", "netsim_p95_s", "docker_median_s", "up_100_s", "down_100_s"):
        assert isinstance(r[key], float) and r[key] > 0, (key, r)
    # the ratio of the unrounded medians, to 0.1: within 0.1 of the ratio of the printed ones
    assert abs(r["ratio"] - r["docker_median_s"] / r["netsim_median_s"]) <= 0.1
    assert "dockerd" in p.stderr   # the docker side's dockerd was started (and reported) ...
    assert _bench_things() == before   # ... and, like everything of the netsim side, is gone
