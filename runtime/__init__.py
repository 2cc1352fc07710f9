"""netsim's container runtime: real Linux containers from namespaces, cgroups and overlayfs.

It knows specs, namespaces, cgroups, root filesystems and processes, and nothing about
scenarios, bridges or NAT (runtime never imports netsim).

    rt = Runtime(Path("/run/netsim/labs/lab1/runtime"), on_create=ledger.record)
    c = rt.create(ContainerSpec(name="web", argv=("httpd", "-f", "-p", "80"),
                                netns="/run/netns/lab1-c-web", files={"/www/index.html": "hi"}))
    c.start(); c.exec(["wget", "-qO-", "http://127.0.0.1/"]); c.stop(); c.delete()

Choices worth knowing (details in each module's docstring):
- Image ownership under a user namespace: the image is *built* per IdMap `outside` base
  (busybox-v1-<uid> under image_dir), every file lchown'ed to that uid/gid, so it is owned by
  root inside. No idmapped mounts (simpler, works on every kernel with overlayfs).
- Processes: a fork server (runtime.forkserver: a small `python -S -I` started on the first
  create(), gone with the Runtime or its process) clones setup children ahead of time with
  CLONE_PARENT, so each is a child of the runtime process all the same, and hands them to the
  runtime (Runtime(fork_server=False): a local fork). setup child -> PID-1 init
  (clone(CLONE_PARENT|CLONE_VM|CLONE_VFORK): a child of the caller, so its exit status is
  waited for, running in the setup child's memory; the runtime then kills the suspended setup
  child) -> main process. The init is the Python interpreter (named "netsim-init" in ps); it
  reaps, forwards TERM/INT/HUP/QUIT/USR1/USR2 and exits with the main process's code
  (128+signal if it was killed), which it also writes to the state dir.
- Restart: Container.start() also starts an exited container again (same root fs and writable
  layer, logs appended, a fresh cgroup with the same limits, optionally another netns);
  Container.restart() = stop() + start().
- State dir: each container's directory is a tmpfs of its own when the state dir is on a disk
  file system (runtime.rootfs.mount_container_dir), as it is where /run is a tmpfs.
- exec/popen: a preexec_fn joins the cgroup and every namespace of PID 1 (runtime.enter), drops
  capabilities and sets no_new_privs, and forks into the PID namespace (no nsenter).
- Parents of the container cgroup (e.g. netsim/, netsim/lab1/) are announced to on_create
  when made but never removed by delete(): several containers share them.
- The shared image cache is not announced to on_create (it belongs to no container).
- Images: busybox, host (host /usr etc. bound read-only, private /etc), oci:PATH (runtime.oci:
  docker-save or OCI layout, whiteouts, config Env/Entrypoint/Cmd/WorkingDir) — runtime.images.
- Speed: the fork server (no clone of the caller's big interpreter, nor of anything on a
  start's path: spare setup children are ready before the request) and an inline cgroup move
  (sub-ms on this kernel); cgroup moves are faster still while a FastMoves keeper (runtime.cgroups) holds the kernel's
  favordynmods mode; Runtime.close() releases it (process exit does too).
"""
from __future__ import annotations

from runtime.container import Container, ContainerProcess, Runtime
from runtime.errors import (
    CgroupError,
    ContainerError,
    ImageError,
    RuntimeErrorBase,
    SpecError,
)
from runtime.spec import ContainerSpec, ExecResult, IdMap, Limits

__all__ = [
    "CgroupError",
    "Container",
    "ContainerError",
    "ContainerProcess",
    "ContainerSpec",
    "ExecResult",
    "IdMap",
    "ImageError",
    "Limits",
    "Runtime",
    "RuntimeErrorBase",
    "SpecError",
]
