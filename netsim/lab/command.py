"""The one gateway to external commands (iptables-restore, nsenter, tcpdump, ...): argv lists,
a timeout, stderr surfaced in the error."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from ..errors import CommandError, EnvironmentProblem

__all__ = ["run", "in_netns", "require_tool"]

_HINTS = {
    "iptables-restore": "apt-get install iptables",
    "iptables": "apt-get install iptables",
    "conntrack": "apt-get install conntrack",
    "tcpdump": "apt-get install tcpdump",
    "nsenter": "apt-get install util-linux",
    "busybox": "apt-get install busybox-static",
}


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise EnvironmentProblem(f"{name} is not installed: {_HINTS.get(name, 'install it')} "
                                 "(or run `sudo make setup`)")
    return path


def in_netns(netns_path: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a network namespace (nsenter keeps /sys and the cgroup mounts intact)."""
    return [require_tool("nsenter"), f"--net={netns_path}", "--", *argv]


def run(argv: Sequence[str], *, timeout: float = 30.0, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = list(argv)
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        require_tool(argv[0])
        raise
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, None, f"timed out after {timeout:g}s "
                                        f"{(e.stderr or b'')[-300:]!r}") from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc
