"""Teardown in `finally`: nothing of the lab is left after a failed step or a Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root

SLOW = """
name: {name}
containers:
  - name: c1
    command: [sleep, "3600"]
externals:
  - name: far
    address: 198.51.100.30
steps:
  - name: hang
    from: far
    send: udp
    to: 198.51.100.31:9
    count: {count}
    timeout: 0.5
    expect: {{reply: false}}
"""


def _processes_mentioning(text: str) -> list[str]:
    """Processes whose command line names `text` (the test's trace dir: tcpdump, conntrack…)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and d.name != str(os.getpid()):
                out.append(f"{d.name}: {cmd[:120]}")
    return out


def _leftovers(lab: str) -> list[str]:
    out = [n for n in os.listdir("/run/netns") if n.startswith(f"netsim-{lab}-")] \
        if os.path.isdir("/run/netns") else []
    out += [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if f"/labs/{lab}/" in ln]
    for ctl in ("memory", "pids", "cpu"):
        p = Path("/sys/fs/cgroup") / ctl / "netsim" / lab
        if p.exists():
            out.append(str(p))
    if Path(f"/run/netsim/labs/{lab}").exists():
        out.append(f"/run/netsim/labs/{lab}")
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_run_leaves_nothing(tmp_path: Path, sig: int) -> None:
    lab = f"t-int{int(sig)}"
    sc = tmp_path / "slow.yaml"
    sc.write_text(SLOW.format(name=lab, count=60))  # 60 unanswered datagrams: 30 s
    p = subprocess.Popen([sys.executable, "-m", "netsim.cli", "run", str(sc), "--trace-dir",
                          str(tmp_path / "trace")], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (tmp_path / "trace" / "events.jsonl").exists():
                break  # the lab is up and the step has begun
            time.sleep(0.05)
        if not _leftovers(lab):
            p.kill()
            out, err = p.communicate()
            pytest.fail(f"the lab never came up: {out[-2000:]} {err[-2000:]}")
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out + err
    assert "torn down" in out + err
    assert _leftovers(lab) == []
    assert _processes_mentioning(str(tmp_path / "trace")) == []   # no tcpdump or conntrack left


def test_failed_step_still_tears_down(tmp_path: Path) -> None:
    lab = "t-fail"
    sc = tmp_path / "fail.yaml"
    sc.write_text(SLOW.format(name=lab, count=1).replace("reply: false", "reply: true"))
    p = subprocess.run([sys.executable, "-m", "netsim.cli", "run", str(sc), "--trace-dir",
                        str(tmp_path / "trace")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "hang: reply: expected true, observed false" in p.stdout
    assert _leftovers(lab) == []
