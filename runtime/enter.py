"""Enter a running container for exec: what `nsenter --all --root --wd` does, plus Docker's
process hardening (no_new_privs, capabilities dropped to the container's set).

`enter_preexec` returns a subprocess preexec_fn. In the forked child it:
  1. moves itself into the container cgroup (while the host's cgroupfs is still visible);
  2. opens every namespace of the container's PID 1, then setns: net (owned by the host's user
     namespace, so joined while still host root), ipc, uts, pid, mnt (root and cwd become the
     container's), and the user namespace last;
  3. becomes root of the user namespace (uid/gid 0 inside, the mapped host uid outside);
  4. chdir(workdir), no_new_privs, capabilities dropped;
  5. forks, because setns(pid) only places *children* in the PID namespace: the grandchild
     returns into subprocess and execs argv; the intermediate closes every fd (so the caller's
     pipes and subprocess's error pipe see only the grandchild) and exits as the grandchild did.
Signals: ContainerProcess signals the process group, which both share.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from runtime import caps
from runtime import namespaces as ns
from runtime.cgroups import ContainerCgroup

__all__ = ["enter_preexec"]

_ORDER = ("net", "ipc", "uts", "pid", "mnt")


def enter_preexec(pid: int, cgroup: ContainerCgroup, workdir: str, keep_caps: int) -> Callable[[], None]:
    """A preexec_fn that runs the child inside every namespace of container PID 1 `pid`."""

    def preexec() -> None:  # pragma: no cover - runs in the forked child
        cgroup.join(os.getpid())
        fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in (*_ORDER, "user")}
        own_user = os.stat("/proc/self/ns/user").st_ino
        for kind in _ORDER:
            ns.setns(fds[kind], 0)
        if os.fstat(fds["user"]).st_ino != own_user:
            ns.setns(fds["user"], ns.CLONE_NEWUSER)
            os.setresgid(0, 0, 0)
            os.setgroups([])
            os.setresuid(0, 0, 0)
        for fd in fds.values():
            os.close(fd)
        try:
            os.chdir(workdir)
        except OSError:
            os.chdir("/")
        caps.set_no_new_privs()
        caps.drop_to(keep_caps)
        child = os.fork()
        if child == 0:
            return  # the grandchild, in the PID namespace: subprocess execs argv
        os.closerange(0, 1 << 20)
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else code)

    return preexec
