"""Runtime (create/get/list containers) and Container (start, exec, signal, wait, delete)."""
from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import images, rootfs
from runtime.caps import cap_mask
from runtime.cgroups import (
    CgroupLayout,
    ContainerCgroup,
    FastMoves,
    container_cgroup,
    detect_layout,
)
from runtime.enter import enter_preexec
from runtime.errors import CgroupError, ContainerError, ImageError, SpecError
from runtime.forkserver import ForkServer
from runtime.oci import ImageConfig
from runtime.process import Launch, spawn, wait_exit
from runtime.spec import ContainerSpec, ExecResult, container_env
from runtime.state import (
    ContainerPaths,
    ContainerState,
    StateStamp,
    load_state_if_changed,
    proc_alive,
    proc_start_time,
    save_state,
)

__all__ = ["Container", "ContainerProcess", "OnCreate", "Runtime"]

OnCreate = Callable[[str, str], None]
DEFAULT_IMAGE_DIR = Path("/var/lib/netsim/images")
# Docker (>= 20.10) lets every group open ICMP echo sockets (SOCK_DGRAM, IPPROTO_ICMP) in a
# container's netns: ping without NET_RAW, which also works under a user namespace.
DEFAULT_SYSCTLS = {"net.ipv4.ping_group_range": "0 2147483647"}


@dataclass(frozen=True)
class _Config:
    """What every Container of one Runtime shares."""

    state_dir: Path
    dir_tmpfs: bool  # each container's directory on a tmpfs of its own (rootfs.mount_container_dir)
    image_dir: Path
    on_create: OnCreate | None
    layout: CgroupLayout
    moves: FastMoves
    forks: ForkServer | None  # None: fork setup children from this interpreter

    def announce(self, kind: str, ident: str) -> None:
        if self.on_create is not None:
            self.on_create(kind, ident)


class ContainerProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A process exec'd into a container. Signals go to its whole process group, because the
    direct child only waits for the process it forked into the container's PID namespace."""

    def send_signal(self, sig: int) -> None:
        # Even after the direct child exited, processes it started (and their background children)
        # may still be in its group; a pid is not reused while it names a live group.
        self.poll()
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Runtime:
    """Creates containers whose state lives under `state_dir` (one directory per container)."""

    def __init__(
        self,
        state_dir: Path,
        image_dir: Path = DEFAULT_IMAGE_DIR,
        on_create: OnCreate | None = None,
        fast_cgroup_moves: bool = False,
        fork_server: bool = True,
    ) -> None:
        """fast_cgroup_moves: hold the kernel's favordynmods mode while this runtime lives
        (cgroups.FastMoves).  Off by default: the mode is machine-wide (fork/exit everywhere
        get a little dearer while it is held) and it saved only ~1.6 ms per start as measured;
        a lab must not change the machine it runs on for that.

        fork_server: create containers' processes from a small helper interpreter
        (runtime.forkserver), started on the first create() and stopped by close(), when the
        runtime is garbage collected or when this process exits; False forks this interpreter."""
        state_dir = Path(state_dir).absolute()
        missing = [p for p in (state_dir, *state_dir.parents) if not p.exists()]
        for path in reversed(missing):
            if on_create is not None:
                on_create("dir", str(path))
            path.mkdir(mode=0o711, exist_ok=True)
        state_fs = rootfs.fs_type(str(state_dir))
        if state_fs == rootfs.OVERLAYFS:
            raise ContainerError(f"state dir {state_dir} is on overlayfs; overlay upper dirs cannot live there")
        self._cfg = _Config(
            state_dir=state_dir,
            dir_tmpfs=state_fs != rootfs.TMPFS,
            image_dir=Path(image_dir).absolute(),
            on_create=on_create,
            layout=detect_layout(),
            moves=FastMoves(str(state_dir), enabled=fast_cgroup_moves),
            forks=ForkServer() if fork_server else None,
        )

    @property
    def state_dir(self) -> Path:
        return self._cfg.state_dir

    def close(self) -> None:
        """Release what the runtime holds for fast starts (cgroups.FastMoves); containers keep
        running. Optional: it is released when the process exits anyway."""
        self._cfg.moves.close()
        if self._cfg.forks is not None:
            self._cfg.forks.close()

    @property
    def cgroup_version(self) -> int:
        return self._cfg.layout.version

    def create(self, spec: ContainerSpec) -> Container:
        """Mount the root fs and create the cgroups (with limits); nothing runs yet."""
        if not isinstance(spec, ContainerSpec):
            raise SpecError(f"expected a ContainerSpec, got {type(spec).__name__}")
        cfg = self._cfg
        if cfg.forks is not None:
            cfg.forks.start()  # it boots while we build the root fs; start() will use it
        paths = ContainerPaths(cfg.state_dir / spec.name)
        cfg.announce("dir", str(paths.root))
        try:
            os.mkdir(paths.root, 0o711)
        except FileExistsError:
            raise ContainerError(f"container {spec.name!r} already exists in {cfg.state_dir}") from None
        cgroup = container_cgroup(cfg.layout, spec.cgroup_parent, spec.name)
        owner = spec.idmap.outside if spec.idmap is not None else 0
        mounts = [str(paths.root), str(paths.rootfs)] if cfg.dir_tmpfs else [str(paths.rootfs)]
        state = ContainerState(spec=spec, image="", cgroups=cgroup.paths, mounts=mounts, created_at=time.time())
        container = Container(cfg, state)
        try:
            image = images.prepare_image(cfg.image_dir, spec.image, owner)
            state.image, state.binds, state.image_config = str(image.path), list(image.binds), image.config.to_dict()
            if not spec.argv and not (image.config.entrypoint or image.config.cmd):
                raise ContainerError(f"container {spec.name!r}: no argv given and image {spec.image!r} has no "
                                     "Entrypoint or Cmd")
            if cfg.dir_tmpfs:
                cfg.announce("mount", str(paths.root))
                rootfs.mount_container_dir(paths.root)
            container._stamp = save_state(paths.state, state)  # before the overlay and the cgroup: delete() can find them
            for d in (paths.upper, paths.work, paths.rootfs):
                os.mkdir(d, 0o755)
            hostname = spec.effective_hostname
            files = {
                "/etc/hostname": hostname + "\n",
                "/etc/hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n",
                **spec.files,
            }
            rootfs.prepare_upper(paths.upper, owner, files)
            cfg.announce("mount", str(paths.rootfs))
            rootfs.mount_overlay(image.path, paths.upper, paths.work, paths.rootfs)
            cgroup.create(spec.limits, cfg.on_create)
        except BaseException as exc:
            try:
                container.delete()
            except ContainerError as cleanup:
                exc.add_note(f"cleanup after the failed create also failed: {cleanup}")
            if isinstance(exc, (CgroupError, ImageError, ContainerError)):
                raise
            if isinstance(exc, OSError):
                raise ContainerError(f"cannot create container {spec.name!r}: {exc}") from exc
            raise
        return container

    def get(self, name: str) -> Container:
        """The container `name`, re-read from its state dir."""
        if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
            raise ContainerError(f"no container named {name!r}")
        paths = ContainerPaths(self._cfg.state_dir / name)
        state, stamp = load_state_if_changed(paths.state, None)
        assert state is not None
        return Container(self._cfg, state, stamp)

    def list(self) -> list[Container]:
        """Every container with a readable state file, by name."""
        out = []
        for entry in sorted(os.scandir(self._cfg.state_dir), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False) and os.path.exists(os.path.join(entry.path, "state.json")):
                try:
                    out.append(self.get(entry.name))
                except ContainerError:
                    continue
        return out


class Container:
    """One container. State is shared through state.json, so any process may drive it."""

    def __init__(self, cfg: _Config, state: ContainerState, stamp: StateStamp | None = None) -> None:
        self._cfg = cfg
        self._state = state
        self._stamp = stamp  # the version of the state file self._state is (None: not known)
        self._paths = ContainerPaths(cfg.state_dir / state.spec.name)
        self._cgroup: ContainerCgroup = container_cgroup(cfg.layout, state.spec.cgroup_parent, state.spec.name)

    def __repr__(self) -> str:
        return f"<Container {self.name} {self._state.status} pid={self._state.pid}>"

    # ---- state ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._state.spec.name

    @property
    def spec(self) -> ContainerSpec:
        return self._state.spec

    @property
    def image_config(self) -> ImageConfig:
        """The image's config (OCI images; empty otherwise)."""
        return ImageConfig.from_dict(self._state.image_config)

    @property
    def argv(self) -> tuple[str, ...]:
        """What the main process runs: as Docker does, the image's Entrypoint followed by the
        spec's argv, or by the image's Cmd when the spec's argv is empty."""
        cfg = self.image_config
        return cfg.entrypoint + (self.spec.argv or cfg.cmd)

    @property
    def workdir(self) -> str:
        """The spec's workdir; the image's WorkingDir when the spec keeps the default "/"."""
        return self.spec.workdir if self.spec.workdir != "/" else (self.image_config.workdir or "/")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of processes in the container (defaults, image Env, spec env, extra)."""
        return container_env(self.spec, extra, self.image_config.env)

    @property
    def state_path(self) -> Path:
        return self._paths.root

    @property
    def rootfs(self) -> Path:
        """The overlay mount point on the host (the container's / before pivot_root)."""
        return self._paths.rootfs

    @property
    def log_paths(self) -> tuple[Path, Path]:
        return self._paths.stdout, self._paths.stderr

    @property
    def cgroup_paths(self) -> list[str]:
        return list(self._cgroup.paths)

    @property
    def pid(self) -> int | None:
        """Host pid of the container's PID 1 while it runs, else None."""
        self._refresh()
        return self._state.pid if self._state.status == "running" else None

    @property
    def status(self) -> str:
        """'created', 'running' or 'exited'."""
        self._refresh()
        return self._state.status

    @property
    def exit_code(self) -> int | None:
        self._refresh()
        return self._state.exit_code

    @property
    def oom_killed(self) -> bool:
        """The memory cgroup recorded an OOM kill."""
        return self._cgroup.oom_kills() > 0

    def _save(self) -> None:
        if self._paths.root.is_dir():
            self._stamp = save_state(self._paths.state, self._state)

    def _reload(self) -> None:
        """Pick up what other processes (or Container objects) saved; nothing to parse when the
        file is still the version we hold."""
        try:
            state, self._stamp = load_state_if_changed(self._paths.state, self._stamp)
        except ContainerError:
            return  # deleted (or never saved): keep what we know
        if state is not None:
            self._state = state

    def _refresh(self, timeout: float | None = 0) -> None:
        """Reload state from disk; if running, check (or wait up to `timeout`) for the init's exit."""
        self._reload()
        st = self._state
        if st.status != "running" or st.pid is None:
            return
        exited, code = wait_exit(st.pid, st.pid_start, timeout)
        if not exited:
            return
        if code is None:
            code = self._exit_status_file()
        st.status, st.exit_code = "exited", code
        self._save()

    def _exit_status_file(self) -> int | None:
        try:
            text = self._paths.exit_status.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def _require_running(self, what: str) -> int:
        self._refresh()
        if self._state.status != "running" or self._state.pid is None:
            raise ContainerError(f"cannot {what} container {self.name!r}: it is {self._state.status}")
        return self._state.pid

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, netns: str | None = None) -> None:
        """Start PID 1 and the main process; return once argv has been exec'd.

        From "created", or from "exited" — a restart, as `docker start` of a stopped container:
        the same root fs and writable layer (files written before are still there), logs
        appended; the previous run's exit code, exit_status file and OOM count are gone (its
        cgroup is made afresh, with the spec's limits). Works from any process, also when an
        earlier one started the container. `netns` replaces the spec's network namespace (kept
        in the state file: others see it too)."""
        self._refresh()
        st = self._state
        if st.status not in ("created", "exited"):
            raise ContainerError(f"cannot start container {self.name!r}: it is {st.status}")
        if not os.path.ismount(self._paths.rootfs):
            raise ContainerError(f"cannot start container {self.name!r}: its root fs {self._paths.rootfs} is not mounted")
        if st.status == "exited":
            self._reset_run()
        if netns is not None:
            try:
                st.spec = dataclasses.replace(st.spec, netns=netns)
            except SpecError as exc:
                raise ContainerError(f"cannot start container {self.name!r}: {exc}") from None
            self._save()
        spec = st.spec
        launch = Launch(
            argv=self.argv,
            env=self.env(),
            workdir=self.workdir,
            hostname=spec.effective_hostname,
            rootfs=str(self._paths.rootfs),
            stdout_path=str(self._paths.stdout),
            stderr_path=str(self._paths.stderr),
            exit_path=str(self._paths.exit_status),
            netns=spec.netns,
            sysctls={**DEFAULT_SYSCTLS, **spec.sysctls},
            idmap=spec.idmap,
            caps=cap_mask(spec.capabilities),
            binds=tuple(st.binds),
        )
        self._cfg.moves.ensure()
        result = spawn(launch, self._cgroup, self._cfg.forks)
        if result.pid is not None:
            st.pid, st.pid_start, st.status = result.pid, proc_start_time(result.pid), "running"
        else:
            st.status = "exited"
        self._save()
        if result.error is not None:
            if result.pid is not None:
                self._refresh(timeout=5.0)
            raise ContainerError(f"container {self.name!r}: {result.error}")

    def _reset_run(self) -> None:
        """Forget the previous run (before a restart): its cgroup (stragglers killed, the
        directories made again with the limits: OOM and usage counters start at zero), its exit
        status, its pid."""
        st = self._state
        try:
            self._cgroup.kill_all()
            self._cgroup.remove()
            # no on_create: these are the directories create() announced (a ledger that saw them
            # then must not list them again after the container, see Runtime.create's callers)
            self._cgroup.create(st.spec.limits)
        except (CgroupError, OSError) as exc:
            raise ContainerError(f"cannot start container {self.name!r} again: {exc}") from exc
        try:
            os.unlink(self._paths.exit_status)
        except FileNotFoundError:
            pass
        st.pid = st.pid_start = st.exit_code = None
        st.status = "created"
        self._save()

    def restart(self, timeout: float = 5.0, netns: str | None = None) -> None:
        """stop(timeout) (SIGTERM, SIGKILL after `timeout` s) then start(netns); a container that
        never ran is just started."""
        self.stop(timeout)
        self.start(netns)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the container to exit; its exit code, or None on timeout / never started."""
        self._refresh(timeout=timeout)
        return self._state.exit_code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to PID 1 (which forwards SIGTERM, SIGINT, SIGHUP, ... to the main process)."""
        pid = self._require_running("signal")
        if not proc_alive(pid, self._state.pid_start):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` s. Returns the exit code."""
        self._refresh()
        if self._state.status != "running":
            return self._state.exit_code
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                self.kill(sig)
            except ContainerError:  # it exited meanwhile
                pass
            self._refresh(timeout=wait)
            if self._state.status != "running":
                break
        return self._state.exit_code

    def stats(self) -> dict[str, int]:
        """memory_bytes, pids, cpu_usage_ns from the container's cgroup."""
        return self._cgroup.stats()

    def pids(self) -> list[int]:
        """Host pids of every process in the container's cgroup."""
        return self._cgroup.pids()

    # ---- exec -------------------------------------------------------------------------------

    def popen(self, argv: Sequence[str], **popen_kwargs: Any) -> ContainerProcess:
        """Start argv inside every namespace of the container, in its root, workdir and cgroup.

        The direct child forks the process into the container's PID namespace and waits for it
        (runtime.enter): .send_signal/.terminate/.kill signal the whole process group.
        A missing program raises FileNotFoundError, as subprocess does."""
        pid = self._require_running("exec in")
        if isinstance(argv, str) or not argv:
            raise SpecError(f"argv must be a non-empty sequence of strings, got {argv!r}")
        extra_env = popen_kwargs.pop("env", None)
        if popen_kwargs.pop("preexec_fn", None) is not None:
            raise SpecError("popen: preexec_fn is not supported (it would run outside the container's limits)")
        popen_kwargs.pop("start_new_session", None)
        self._cfg.moves.ensure()
        try:
            return ContainerProcess(
                list(argv),
                env=self.env(extra_env),
                preexec_fn=enter_preexec(pid, self._cgroup, self.workdir, cap_mask(self.spec.capabilities)),
                start_new_session=True,
                **popen_kwargs,
            )
        except subprocess.SubprocessError as exc:
            raise ContainerError(f"cannot enter container {self.name!r}: {exc}") from exc

    def exec(
        self,
        argv: Sequence[str],
        timeout: float = 30.0,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run argv inside the container and collect its output. Timeout -> ContainerError."""
        started = time.monotonic()
        try:
            proc = self.popen(
                argv,
                env=env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
        except (FileNotFoundError, PermissionError) as exc:  # like a shell: 127 not found, 126 not executable
            code = 127 if isinstance(exc, FileNotFoundError) else 126
            return ExecResult(code, "", f"{argv[0]}: {exc.strerror}\n", time.monotonic() - started)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.communicate(timeout=5.0)
            except subprocess.TimeoutExpired:  # something left the group but holds our pipes
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                proc.wait()
            raise ContainerError(f"exec {list(argv)!r} in {self.name!r} timed out after {timeout} s") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return ExecResult(proc.returncode, out, err, time.monotonic() - started)

    # ---- delete -----------------------------------------------------------------------------

    def delete(self) -> None:
        """Kill, reap, remove cgroups, unmount, remove the state dir. Idempotent; one error at the end."""
        errors: list[str] = []
        self._reload()
        st = self._state
        if st.pid is not None and st.status != "exited":  # exited: its end was seen already
            try:
                if proc_alive(st.pid, st.pid_start):
                    os.kill(st.pid, signal.SIGKILL)
                exited, code = wait_exit(st.pid, st.pid_start, 10.0)
                if exited and st.status == "running":
                    st.status = "exited"
                    st.exit_code = code if code is not None else self._exit_status_file()
                elif not exited:
                    errors.append(f"init pid {st.pid} did not exit after SIGKILL")
            except OSError as exc:
                errors.append(f"cannot kill init pid {st.pid}: {exc}")
        try:
            self._cgroup.remove()  # kills what is left in it, if anything
        except (CgroupError, OSError) as exc:
            errors.append(str(exc))
        mounted = False
        for mount_point in (self._paths.rootfs, self._paths.root):  # the overlay first: it uses the tmpfs
            try:
                rootfs.unmount(str(mount_point))
            except OSError as exc:
                errors.append(f"cannot unmount {mount_point}: {exc}")
                mounted = mounted or rootfs.is_mounted(str(mount_point))
        if mounted:
            errors.append(f"left {self._paths.root} in place: its root fs is still mounted")
        else:
            try:
                try:
                    os.rmdir(self._paths.root)  # empty once its tmpfs is unmounted
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    shutil.rmtree(self._paths.root)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"cannot remove {self._paths.root}: {exc}")
        if errors:
            raise ContainerError(f"delete {self.name!r}: " + "; ".join(errors))
