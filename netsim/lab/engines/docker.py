"""The docker engine: a real dockerd started inside the lab's host namespace runs the scenario's
containers on its own docker0 — so the same scenario, tracer and verifier check netsim's model
and netsim's own lab against Docker itself.

How dockerd is started (all of it under the lab's name, all of it in the lab's ledger first):

    sh -c 'echo $$ > CG/cgroup.procs; exec "$@"'          joins netsim/LAB/dockerd (so containerd
      nsenter --net=/run/netns/netsim-LAB-host             and the shims, which outlive a killed
        unshare --mount --propagation slave                dockerd, can be found and ended)
          sh -c 'mount --bind EMPTY /etc/docker; ...'      its own view of /etc/docker, /run/docker
            dockerd --data-root /var/lib/netsim/docker/LAB   and /run/containerd: no system
                    --exec-root LABDIR/docker/exec           daemon.json, no system containerd,
                    -H unix://LABDIR/docker/docker.sock      no key.json or sockets left behind
                    --pidfile LABDIR/docker/dockerd.pid
                    --cgroup-parent /netsim/LAB/docker (cgroupfs driver)
                    --userland-proxy=false --bip GATEWAY/PREFIX

`nsenter --net` and not `ip netns exec` (which remounts /sys and hides the cgroup mounts).  The
private mount namespace holds every mount Docker makes (overlays, shm, netns bind mounts): they
vanish with its last process.  Docker makes docker0 and its iptables rules in the lab's host
namespace; the machine's root namespace is never touched.

userland-proxy: off by default (NETSIM_DOCKER_USERLAND_PROXY=1 turns it on).  The model assumes
kernel NAT throughout — hairpin through MASQUERADE with hairpin_mode on the bridge ports, which
is what Docker does with `--userland-proxy=false`.  With the proxy on, Docker adds `-i docker0
-j RETURN` to nat DOCKER and a docker-proxy per published port: traffic from containers to a
published port on the host, and from the host itself to 127.0.0.1, is relayed by that process
(two connections, the container sees the gateway as its peer) instead of NATed.  Traffic that
arrives on the NIC from outside is DNATed in PREROUTING either way: the proxy never sees it.

Docker of the distribution (docker.io 20.10 on Debian 12) writes the pre-28 firewall layout
(DOCKER-ISOLATION-STAGE-1/2, no DOCKER-FORWARD/DOCKER-CT chains, no raw PREROUTING drop of
packets addressed to a container from outside docker0), where the own engine writes Docker 28's.
20.10 sets the FORWARD policy to DROP only when it turns forwarding on itself, so forwarding is
switched off in the host namespace before dockerd starts, as on a fresh host.

The busybox image is imported (`docker import`) from a tarball built from the host's busybox —
no registry is reachable.  User-defined networks are made in scenario order with `docker network
create -o com.docker.network.bridge.name=BRIDGE --subnet --gateway [--internal]` (the model's
bridge names, so they need no mapping).  Containers are created and started one by one in
scenario order — `--network FIRST [--ip]`, then `docker network connect NET` for each further
network in the container's order — so Docker's IPAM hands out .2, .3, ... as the model predicts
and the container's interfaces come up as eth0, eth1, ...; each is checked against the model
(address per network, address per ethN, default route by the gateway network), and a scenario
whose fixed addresses Docker's IPAM would hand out otherwise is refused up front.  `network_mode`
is `--network host|none|container:NAME`.  Each container's own network namespace is then named
netsim-LAB-c-NAME (as the own engine's are), so probes and sysctls reach it alike.

Measured with Debian's docker.io 20.10.24: interface order and the gateway network (moby's
Endpoint.Less: non-internal first, then by name) are the model's, also when `network connect`
moves the default route to a later network.  One difference, tolerated and reported: 20.10 gives
a container on internal networks only a default route via its bridge (Docker 28: none).
"""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ...errors import EnvironmentProblem, LabError, UsageError
from .. import cgroup_tree, netns
from ..command import require_tool
from ..engine import ExecOutcome
from ..ledger import process_start_time

if TYPE_CHECKING:
    from ...model.addressing import ContainerAddr
    from ...scenario.networks import NetworkSpec
    from ...scenario.schema import Container
    from ..lab import Lab

__all__ = ["DockerEngine", "DATA_ROOT", "IMAGE", "find_dockerd"]

DATA_ROOT = Path(os.environ.get("NETSIM_DOCKER_ROOT", "/var/lib/netsim/docker"))
IMAGE = "netsim-busybox:latest"
# what a dockerd writes outside its data-root and exec-root, or reads from the machine
MASKED = ("/etc/docker", "/run/docker", "/run/containerd")
_HINT = "install the docker.io package (`sudo make setup` does) or docker-ce"
_MASK_SCRIPT = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 97; shift 2; done; shift; exec "$@"'
_JOIN_SCRIPT = 'echo $$ > "$1" || exit 97; shift; exec "$@"'


def find_dockerd() -> str | None:
    """The dockerd on PATH or in the system directories (root's PATH may lack sbin), or None."""
    return shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin:/usr/bin:/bin")


def _docker_client(dockerd: str) -> str:
    """The client that came with dockerd; any other one negotiates the API version down."""
    sibling = Path(dockerd).parent.parent / "bin" / "docker"
    for cand in (str(sibling), "/usr/bin/docker", shutil.which("docker") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise EnvironmentProblem(f"the docker client is not installed: {_HINT}")


def _busybox_tar(dest: Path, busybox: str = "/bin/busybox") -> None:
    """A root filesystem tarball: bin/busybox, one symlink per applet, a minimal /etc."""
    try:
        applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise EnvironmentProblem(f"{busybox} is not usable ({e}): apt-get install busybox-static") from None

    def entry(name: str, kind: bytes, mode: int, link: str = "", data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.linkname, ti.size, ti.mtime = kind, mode, link, len(data), 0
        return ti, data

    entries = [entry(d, tarfile.DIRTYPE, m) for d, m in (
        ("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
        ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755), ("home", 0o755))]
    entries.append(entry("bin/busybox", tarfile.REGTYPE, 0o755, data=Path(busybox).read_bytes()))
    entries += [entry(a, tarfile.SYMTYPE, 0o777, link="/bin/busybox") for a in sorted(set(applets))
                if a != "bin/busybox"]
    entries.append(entry("etc/passwd", tarfile.REGTYPE, 0o644,
                         data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
    entries.append(entry("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\nnogroup:x:65534:\n"))
    with tarfile.open(dest, "w") as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if data else None)


class DockerEngine:
    name = "docker"

    def __init__(self, userland_proxy: bool | None = None, start_timeout: float = 30.0) -> None:
        if userland_proxy is None:
            userland_proxy = os.environ.get("NETSIM_DOCKER_USERLAND_PROXY", "").lower() in ("1", "true", "yes", "on")
        self.userland_proxy = userland_proxy
        self.start_timeout = start_timeout
        self.timings: dict[str, float] = {}
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._client = ""
        self._sock: Path | None = None
        self._env: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._names: list[str] = []
        self._networks: list[str] = []
        self._lab = ""

    # -- what Docker can express -----------------------------------------------------------------
    @staticmethod
    def check_expressible(lab: "Lab") -> None:
        s = lab.scenario
        why = []
        if lab.plan.bridge != "docker0":
            why.append(f"the bridge is named {lab.plan.bridge} (Docker's default bridge is docker0)")
        default = next(iter(lab.plan.networks))
        why += [f"container {c.name} asks for a fixed ip on the default network (Docker allows --ip on "
                f"user-defined networks only)"
                for c in s.containers if c.ip is not None and lab.plan.containers[c.name].network == default]
        why += DockerEngine._ipam_disagreements(lab)
        if why:
            raise UsageError(f"scenario {s.name} cannot run on --engine docker: " + "; ".join(why))

    @staticmethod
    def _ipam_disagreements(lab: "Lab") -> list[str]:
        """Docker's IPAM hands each network's lowest free address in the order containers are
        created and connected (scenario order, a container's networks in its order), and reserves
        a fixed `--ip` only when its container is created; the model keeps fixed addresses out of
        every pool from the start.  Where the two differ the scenario cannot run alike."""
        taken: dict[str, set[object]] = {n: {spec.gateway} for n, spec in lab.plan.networks.items()}
        out: list[str] = []
        for c in lab.scenario.containers:
            addr = lab.plan.containers.get(c.name)
            if addr is None:
                continue
            for k, e in enumerate(addr.endpoints):
                spec = lab.plan.networks[e.network]
                ip: object
                if k == 0 and c.ip is not None:
                    ip = c.ip
                else:
                    ip = next((h for h in spec.subnet.hosts() if h not in taken[e.network]), None)
                taken[e.network].add(ip)
                if ip != e.ip:
                    out.append(f"container {c.name} would get {ip} on {e.network} from Docker's IPAM, "
                               f"the model gives it {e.ip} (a fixed ip reserved ahead)")
        return out

    # -- Engine ---------------------------------------------------------------------------------
    def start(self, lab: "Lab") -> None:
        try:
            self._start(lab)
        except OSError as e:  # a directory, cgroup or file of ours that cannot be made
            raise EnvironmentProblem(f"docker engine: {e}") from None

    def _start(self, lab: "Lab") -> None:
        self.check_expressible(lab)
        dockerd = find_dockerd()
        if dockerd is None:
            raise EnvironmentProblem(f"dockerd is not installed: {_HINT}")
        for tool in ("unshare", "mount", "sh"):
            require_tool(tool)
        self._client = _docker_client(dockerd)
        self._lab = lab.name
        base = lab.dir / "docker"
        exec_root, sock = base / "exec", base / "docker.sock"
        data_root = DATA_ROOT / lab.name
        self._sock = sock
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self._env["DOCKER_CONFIG"] = str(base / "client")
        for d in (base / "client", exec_root):
            d.mkdir(parents=True, exist_ok=True)
        (base / "daemon.json").write_text("{}\n")

        t0 = time.monotonic()
        # data-root on disk, not under /run (tmpfs on most machines); its parents only if empty
        for parent in reversed(data_root.parents):
            if str(parent).startswith(str(DATA_ROOT.parent)) and not parent.exists():
                lab.ledger.record("rmdir", str(parent))
                parent.mkdir()
        if data_root.exists():
            raise LabError(f"{data_root} already exists: a lab {lab.name} on --engine docker is running "
                           f"or was not cleaned up (`netsim down {lab.name}`, or remove the directory)")
        lab.ledger.record("dir", str(data_root))
        data_root.mkdir(mode=0o710)
        # processes: the containers' cgroups (made by runc) and dockerd's own, which its
        # containerd and shims inherit
        lab.ledger.record("cgroup-tree", f"netsim/{lab.name}/docker", empty_parents=2)
        lab.ledger.record("cgroup-tree", f"netsim/{lab.name}/dockerd", empty_parents=2)
        try:
            track = cgroup_tree.tracking_dir(f"netsim/{lab.name}/dockerd")
            track.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentProblem(f"cannot make a cgroup for dockerd: {e}") from None
        masks: list[str] = []
        for i, target in enumerate(MASKED):
            if not Path(target).is_dir():
                lab.ledger.record("rmdir", target)   # a mount point only; stays empty
                Path(target).mkdir(parents=True, exist_ok=True)
            src = base / "mask" / str(i)
            src.mkdir(parents=True, exist_ok=True)
            masks += [str(src), target]
        gw, prefix = lab.plan.gateway, lab.plan.subnet.prefixlen
        argv = ["sh", "-c", _JOIN_SCRIPT, "sh", str(track / "cgroup.procs"),
                require_tool("nsenter"), f"--net={lab.host_netns}", "--",
                require_tool("unshare"), "--mount", "--propagation", "slave", "--",
                "sh", "-c", _MASK_SCRIPT, "sh", *masks, "--",
                dockerd, "--data-root", str(data_root), "--exec-root", str(exec_root),
                "-H", f"unix://{sock}", "--pidfile", str(base / "dockerd.pid"),
                "--config-file", str(base / "daemon.json"),
                "--cgroup-parent", f"/netsim/{lab.name}/docker", "--exec-opt", "native.cgroupdriver=cgroupfs",
                f"--userland-proxy={'true' if self.userland_proxy else 'false'}",
                "--bip", f"{gw}/{prefix}", f"--ip-masq={'true' if lab.scenario.host.masquerade else 'false'}"]
        (base / "dockerd.argv").write_text("\n".join(argv) + "\n")
        # as on a fresh host: Docker turns forwarding on itself, and only then sets the FORWARD
        # policy to DROP (20.10 leaves it ACCEPT when it finds forwarding already on)
        netns.write_sysctls(lab.names.host, {"net.ipv4.ip_forward": "0"})
        lab.ledger.record("process-intent", "dockerd")
        with (base / "dockerd.log").open("wb") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, env=self._env)
        self._pid = self._proc.pid
        lab.ledger.record("process", self._pid, start=process_start_time(self._pid), what="dockerd")
        self._wait_ready(base / "dockerd.log")
        self.timings["dockerd_start_s"] = time.monotonic() - t0
        lab.progress(f"docker: dockerd {self.version} (pid {self._pid}) up in {self.timings['dockerd_start_s']:.2f}s "
                     f"in {lab.names.host}, userland-proxy {'on' if self.userland_proxy else 'off'}, "
                     f"data-root {data_root}")

        t0 = time.monotonic()
        tar = base / "busybox.tar"
        _busybox_tar(tar)
        self._docker("import", str(tar), IMAGE, timeout=60)
        tar.unlink()
        self.timings["image_import_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        for spec in list(lab.plan.networks.values())[1:]:   # the default network is dockerd's --bip
            self._create_network(lab, spec)
        for c in lab.scenario.containers:
            self._run_container(lab, c, base / "files" / c.name)
        self.timings["containers_s"] = time.monotonic() - t0
        lab.progress(f"docker: image {IMAGE} imported ({self.timings['image_import_s']:.2f}s), "
                     f"{len(lab.plan.networks) - 1} networks created, "
                     f"{len(self._names)} containers started ({self.timings['containers_s']:.2f}s)")

    def _create_network(self, lab: "Lab", spec: "NetworkSpec") -> None:
        """`docker network create` with the model's bridge name, subnet and gateway."""
        args = ["network", "create", "--driver", "bridge",
                "-o", f"com.docker.network.bridge.name={spec.bridge}",
                "-o", "com.docker.network.bridge.enable_ip_masquerade="
                + ("true" if lab.scenario.host.masquerade else "false"),
                "--subnet", str(spec.subnet), "--gateway", str(spec.gateway)]
        if spec.internal:
            args.append("--internal")
        self._docker(*args, spec.name)
        self._networks.append(spec.name)

    def _wait_ready(self, log: Path) -> None:
        def tail() -> str:
            lines = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            return " | ".join(lines) or "no output"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EnvironmentProblem(f"dockerd could not start in the lab's host namespace "
                                         f"(exit {self._proc.returncode}): {tail()}")
            if self._sock is not None and self._sock.exists():
                p = self._docker("version", "--format", "{{.Server.Version}}", check=False, timeout=10)
                if p.returncode == 0:
                    self.version = p.stdout.strip()
                    return
            time.sleep(0.05)
        raise EnvironmentProblem(f"dockerd did not answer on {self._sock} within {self.start_timeout:g}s: {tail()}")

    def client(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this lab's dockerd (`docker ARGS...`); LabError when it fails."""
        return self._docker(*args, timeout=timeout)

    def _docker(self, *args: str, timeout: float = 30, check: bool = True,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        argv = [self._client, "-H", f"unix://{self._sock}", *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self._env, input=input,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise LabError(f"docker {' '.join(args[:4])}: no answer within {timeout:g}s") from None
        if check and p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()
            raise LabError(f"docker {' '.join(args[:4])}: {tail[-1] if tail else f'exit {p.returncode}'}")
        return p

    def _run_container(self, lab: "Lab", c: "Container", files_dir: Path) -> None:
        """`docker create --network FIRST [--ip]`, files copied in, start, then `docker network
        connect NET` for each further network in the container's order (eth1, eth2, ...); or
        `--network host|none|container:NAME`."""
        addr = lab.plan.containers.get(c.name)
        args = ["create", "--name", c.name]
        if c.network_mode is None or not c.network_mode.startswith("container:"):
            args += ["--hostname", c.name]   # Docker: conflicting options with container:NAME
        if c.network_mode is not None:
            args += ["--network", c.network_mode]
        elif addr is not None:
            args += ["--network", addr.network]
            if c.ip is not None:
                args += ["--ip", str(c.ip)]
        if c.limits.memory_bytes is not None:
            args += ["--memory", str(c.limits.memory_bytes)]
        if c.limits.pids is not None:
            args += ["--pids-limit", str(c.limits.pids)]
        if c.limits.cpus is not None:
            args += ["--cpus", str(c.limits.cpus)]
        for p in c.publish:
            hp = f"{p.host_port}-{p.host_port + p.count - 1}" if p.count > 1 else str(p.host_port)
            cp = f"{p.container_port}-{p.container_port + p.count - 1}" if p.count > 1 else str(p.container_port)
            args += ["-p", (f"{p.host_ip}:" if p.host_ip else "") + f"{hp}:{cp}/{p.proto}"]
        self._names.append(c.name)
        self._docker(*args, IMAGE, *c.command)
        if c.files:
            for path, text in c.files.items():
                f = files_dir / path.lstrip("/")
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(text)
            self._docker("cp", f"{files_dir}/.", f"{c.name}:/")
        self._docker("start", c.name)
        for e in (addr.endpoints[1:] if addr is not None else ()):
            self._docker("network", "connect", e.network, c.name)
        fmt = "{{.State.Pid}}{{range $n, $e := .NetworkSettings.Networks}} {{$n}}={{$e.IPAddress}}{{end}}"
        pid, *nets = self._docker("inspect", "-f", fmt, c.name).stdout.split()
        if not pid.isdigit() or pid == "0":
            logs = self.logs(c.name)
            raise LabError(f"container {c.name} is not running" + (f"; its output: {logs[-300:]}" if logs else ""))
        self._pids[c.name] = int(pid)
        if addr is not None:
            got = dict(n.split("=", 1) for n in nets)
            for e in addr.endpoints:
                if got.get(e.network) != str(e.ip):
                    raise LabError(f"container {c.name}: Docker gave it {got.get(e.network) or 'no address'} on "
                                   f"{e.network}, the model predicts {e.ip}")
        if c.network_mode is None or c.network_mode == "none":   # host, container:X: not its own
            lab.ledger.record("netns", lab.names.container(c.name))
            netns.attach(lab.names.container(c.name), int(pid))
        if addr is not None:
            self._check_interfaces(lab, addr)

    def _check_interfaces(self, lab: "Lab", addr: "ContainerAddr") -> None:
        """Docker's interface names and default route inside the container are the model's:
        eth0, eth1, ... in joining order; the default route by the gateway network (moby's
        Endpoint.Less), none when the container is on internal networks only."""
        gw_net = lab.plan.networks[addr.gateway_network] if addr.gateway_network else None
        try:
            with IPRoute(netns=lab.names.container(addr.name)) as ct:
                for e in addr.endpoints:
                    links = ct.link("get", ifname=e.ifname)
                    have = {a.get_attr("IFA_ADDRESS") for a in ct.get_addr(family=2, index=links[0]["index"])}
                    if str(e.ip) not in have:
                        raise LabError(f"container {addr.name}: Docker's {e.ifname} has {sorted(have)}, the model "
                                       f"puts {e.ip} ({e.network}) there")
                gws = {r.get_attr("RTA_GATEWAY") for r in ct.get_routes(family=2, table=254)
                       if r["dst_len"] == 0}
        except (NetlinkError, IndexError, OSError) as e:
            raise LabError(f"container {addr.name}: cannot read its interfaces: {e}") from None
        want = {str(gw_net.gateway)} if gw_net is not None else set()
        internal_gws = {str(lab.plan.networks[e.network].gateway) for e in addr.endpoints}
        if gw_net is None and len(gws) == 1 and gws <= internal_gws:
            # FINDING (Docker 20.10): a container on internal networks only still gets a default
            # route via its network's gateway (Docker 28 gives it none); what it sends out is
            # dropped by DOCKER-ISOLATION-STAGE-1 (`-i BR ! -d SUBNET -j DROP`) instead of
            # failing with "network unreachable" in the container.
            lab.progress(f"docker: finding: container {addr.name} (internal networks only) has a default "
                         f"route via {next(iter(gws))} on Docker {self.version}; the model has none")
            return
        if gws != want:
            raise LabError(f"container {addr.name}: Docker's default route is via {sorted(gws) or 'nothing'}, "
                           f"the model's via {sorted(want) or 'nothing'} (gateway network "
                           f"{addr.gateway_network})")

    def interfaces(self, lab: "Lab") -> dict[str, str]:
        """Docker names its veths itself: find each endpoint's host side by its peer's index (the
        container's eth0, eth1, ... as the model names them); bridges carry the model's names."""
        out = {n.bridge: n.bridge for n in lab.plan.networks.values()}
        out[lab.plan.nic] = lab.plan.nic
        try:
            with IPRoute(netns=lab.names.host) as host:
                for name, c in lab.plan.containers.items():
                    with IPRoute(netns=lab.names.container(name)) as ct:
                        for e in c.endpoints:
                            peer = ct.link("get", ifname=e.ifname)[0].get_attr("IFLA_LINK")
                            out[e.veth] = host.link("get", index=peer)[0].get_attr("IFLA_IFNAME")
        except (NetlinkError, IndexError, OSError) as e:
            raise LabError(f"cannot map Docker's veths to the model's names: {e}") from None
        return {k: out[k] for k in lab.plan.captured_interfaces}

    def exec(self, container: str, argv: list[str], timeout: float) -> ExecOutcome:
        if container not in self._pids:
            raise LabError(f"no running container {container!r}")
        t0 = time.monotonic()
        try:
            p = subprocess.run([self._client, "-H", f"unix://{self._sock}", "exec", container, *argv],
                               capture_output=True, text=True, timeout=timeout, env=self._env,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return ExecOutcome(124, out, f"timed out after {timeout:g}s", time.monotonic() - t0)
        return ExecOutcome(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)

    def pid(self, container: str) -> int:
        try:
            return self._pids[container]
        except KeyError:
            raise LabError(f"no running container {container!r}") from None

    def logs(self, container: str) -> str:
        if self._proc is None or self._proc.poll() is not None:
            return ""
        p = self._docker("logs", container, check=False, timeout=10)
        return p.stdout + p.stderr

    def stop(self, lab: "Lab") -> None:
        """Remove the containers, stop dockerd by its pid, end what it left; idempotent.  The
        ledger teardown then removes the cgroups, the data-root and the named namespaces."""
        errors: list[str] = []
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if self._names:   # those joined to another's namespace first
                p = self._docker("rm", "-f", *reversed(self._names), check=False, timeout=30)
                if p.returncode != 0:
                    errors.append(f"docker rm: {(p.stderr or p.stdout).strip()[-200:]}")
            if self._networks:
                p = self._docker("network", "rm", *self._networks, check=False, timeout=30)
                if p.returncode != 0:
                    errors.append(f"docker network rm: {(p.stderr or p.stdout).strip()[-200:]}")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                errors.append("dockerd did not stop within 15s after SIGTERM: killed")
                proc.kill()
                proc.wait()
        self._pids.clear()
        self._names.clear()
        self._networks.clear()
        if proc is not None:
            try:  # containerd, shims: they would outlive a dockerd that died
                cgroup_tree.kill_tree(f"netsim/{lab.name}/dockerd")
                cgroup_tree.kill_tree(f"netsim/{lab.name}/docker")
            except OSError as e:
                errors.append(str(e))
        if errors:
            raise LabError("docker engine: " + "; ".join(errors))
