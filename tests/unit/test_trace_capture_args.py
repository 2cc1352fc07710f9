"""capture.py without root: the tcpdump command line, its statistics, missing tools."""
from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import EnvironmentProblem, TraceError
from netsim.trace.capture import Capture, parse_tcpdump_stats, tcpdump_argv

STDERR = """tcpdump: listening on ra, link-type EN10MB (Ethernet), snapshot length 262144 bytes
100000 packets captured
100002 packets received by filter
2 packets dropped by kernel
5 packets dropped by interface
"""


def test_argv_has_the_lossless_flags():
    argv = tcpdump_argv("/usr/bin/tcpdump", "eth0", Path("/t/eth0.pcap"), 32768, 262144)
    assert argv[:5] == ["/usr/bin/tcpdump", "-i", "eth0", "-w", "/t/eth0.pcap"]
    for flag in ("-n", "-U", "-Q"):
        assert flag in argv
    assert argv[argv.index("-B") + 1] == "32768" and argv[argv.index("-Z") + 1] == "root"
    assert "--time-stamp-precision=nano" in argv and "--immediate-mode" not in argv
    assert "--immediate-mode" in tcpdump_argv("t", "e", Path("x"), 1, 1, immediate=True)
    assert tcpdump_argv("t", "e", Path("x"), 1, 1, bpf_filter="udp")[-1] == "udp"


def test_stats_parse():
    st = parse_tcpdump_stats("ra", STDERR)
    assert st is not None
    assert (st.kept, st.received, st.kernel_drops, st.if_drops) == (100000, 100002, 2, 5)
    assert st.not_written == 0 and not st.complete
    tail = parse_tcpdump_stats("x", "99716 packets captured\n100000 packets received by filter\n"
                                    "0 packets dropped by kernel\n")
    assert tail is not None and tail.not_written == 284 and not tail.complete
    ok = parse_tcpdump_stats("x", "1 packet captured\n1 packet received by filter\n"
                                  "0 packets dropped by kernel\n")
    assert ok is not None and ok.complete
    assert parse_tcpdump_stats("x", "tcpdump: eth9: No such device exists") is None


def test_missing_tcpdump_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    import shutil as _sh
    monkeypatch.setattr(_sh, "which", lambda *a, **k: None)
    with pytest.raises(EnvironmentProblem, match="apt-get install"):
        Capture("/run/netns/x", ["eth0"], tmp_path).start()


def test_bad_arguments():
    with pytest.raises(TraceError):
        Capture("/run/netns/x", [], Path("/tmp"))
    with pytest.raises(TraceError, match="duplicate"):
        Capture("/run/netns/x", ["a", "a"], Path("/tmp"))
