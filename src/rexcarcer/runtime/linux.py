"""The Linux runtime: a jail is a network namespace with a veth on the host
bridge, plus pid/mount/uts/ipc namespaces and the jail's clone as root.

Start (command lines from notes/linux-testbed.md §3, which measured them):

    ip netns add NS; ip link add VETH type veth peer name eth0 netns NS; ...
    nsenter --net=/run/netns/NS -- unshare --fork --pid --mount --uts --ipc \\
        --kill-child --mount-proc=ROOT/proc /bin/sh -c SETUP rex-jail ROOT HOSTNAME

SETUP gives the jail a private minimal /dev (tmpfs plus bind-mounted device
nodes), sets the host name, makes ROOT the namespace's root with
``pivot_root . .`` + ``umount -l .`` (pivot_root(2)'s documented idiom) and
execs ``/bin/sh -c INIT``; the pivot, the unmount and the exec are done by
jailenter.py, which first drops the capabilities a jail's root must not have. A
chroot would keep a copy of every host mount in the jail's mount namespace, and
a copied zfs-fuse mount of another jail keeps that jail's dataset "busy" until
this one stops. INIT runs rex's ``/etc/rexcarcer/rc.pre`` and then
``/bin/sh /etc/rc`` when the root has them (as FreeBSD's exec.start does),
stops at the first that fails, leaves its exit status in the jail's private
/dev, then waits; SIGTERM ends it, and with it the pid namespace and every
process of the jail.

A PROVISION RUN step with a ``BuildNet`` gets a jail's network: a namespace
``rex-TOKEN-_NAME`` ('_' is never in a jail name) with a veth on the bridge and
its own address, made before the step and removed after it. Without one it
runs in an empty network namespace (``unshare --net``).

Addresses: a jail's address outside the jail subnet is accepted only when it
lies in a public range declared for jails (``public``); anything else is
refused here too, whatever the engine let through (a jail holding etcd's or
another host's address would pull that traffic to itself). Such a jail's veth
is not on the bridge: the host routes the address (a /32 or /128) to the veth
itself and answers ARP (IPv6: neighbour solicitations) for it on the range's
declared interface with a proxy neighbour entry (ip-neighbour(8) ``proxy``;
the kernel answers for it only where forwarding is on, net/ipv4/arp.c
arp_process()), so machines on that interface's network reach the jail as
if it sat there. The veth answers ARP for the host's other routes
(``proxy_arp``, ip-sysctl.rst), so the jail reaches its range's neighbours
through the host too.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from rexcarcer.errors import CommandFailed, RuntimeBackendError
from rexcarcer.fsutil import atomic_write
from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.run import Completed, OutputSink, Runner
from rexcarcer.runtime import procfs
from rexcarcer.runtime.base import BuildNet, JailSpec, JailState, JailStatus, jail_env

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Runs on the host, inside the new namespaces, before the pivot. $1 = root,
# $2 = host name, $3 = what to run in the jail, $4 $5 = the Python and the
# jailenter.py that pivot and drop the capabilities, then pairs of
# (host directory, directory inside the jail) to bind-mount: the jail's
# volumes. The mounts belong to the jail's private mount namespace and go with
# it. No value is ever pasted into the script.
SETUP = """set -e
root=$1 name=$2 init=$3 python=$4 enter=$5
shift 5
mount -t tmpfs -o mode=755,size=1m,nosuid,noexec tmpfs "$root/dev"
for d in DEVICES; do : > "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; done
ln -s /proc/self/fd "$root/dev/fd"; ln -s fd/0 "$root/dev/stdin"
ln -s fd/1 "$root/dev/stdout"; ln -s fd/2 "$root/dev/stderr"
mkdir -p "$root/dev/shm" "$root/dev/pts"
while [ $# -ge 2 ]; do mount --bind "$1" "$root$2"; shift 2; done
hostname "$name"
cd "$root"
exec "$python" -I -S "$enter" init "$init"
""".replace("DEVICES", " ".join(DEVICES))

RC_STATUS_DIR, RC_STATUS_NAME = "dev", ".rex-rc"
RC_STATUS = f"{RC_STATUS_DIR}/{RC_STATUS_NAME}"
# rex's own start-up script (syslog forwarding, logs/forward.py): the jail's
# /etc/rc is the user's, so rex's part runs first, from a file rex rewrites.
RC_PRE = "/etc/rexcarcer/rc.pre"
INIT = f"""trap 'exit 0' TERM
s=0
if [ -f {RC_PRE} ]; then /bin/sh {RC_PRE} </dev/null || s="$? {RC_PRE}"; fi
if [ "$s" = 0 ] && [ -f /etc/rc ]; then /bin/sh /etc/rc </dev/null || s="$? /etc/rc"; fi
echo "$s" > /{RC_STATUS}.tmp
mv /{RC_STATUS}.tmp /{RC_STATUS}
while :; do sleep 3600 & wait $!; done
"""

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def short_hash(*parts: str, n: int = 10) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:n]


def veth_name(token: str, name: str) -> str:
    """Deterministic and at most 15 characters (IFNAMSIZ - 1)."""
    return "rx" + short_hash(token, name)


def netns_name(token: str, name: str) -> str:
    return f"rex-{token}-{name}"


def build_netns_name(token: str, name: str) -> str:
    """A build step's namespace: '_' keeps it apart from every jail's."""
    return f"rex-{token}-_{name}"


def build_veth_name(token: str, name: str) -> str:
    return "rb" + short_hash(token, "build", name)


# The jail's first and last host code (its docstring says why and how).
ENTER = (sys.executable, str(Path(__file__).with_name("jailenter.py")))


def start_argv(
    netns: str, root: Path, hostname: str, mounts: Sequence[tuple[Path, str]] = ()
) -> list[str]:
    binds = [str(arg) for src, inside in mounts for arg in (src, inside)]
    return [
        "nsenter", f"--net=/run/netns/{netns}", "--",
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-jail", str(root), hostname, INIT, *ENTER, *binds,
    ]  # fmt: skip


def build_argv(root: Path, command: str) -> list[str]:
    return [
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-build", str(root), "build", command, *ENTER,
    ]  # fmt: skip


def build_net_argv(netns: str, root: Path, command: str) -> list[str]:
    """``build_argv`` in the step's own network namespace, made beforehand.
    nsenter(1) enters a network namespace without forking, so the runner's
    parent-death signal reaches unshare, whose --kill-child takes the step down."""
    return [
        "nsenter", f"--net=/run/netns/{netns}", "--",
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-build", str(root), "build", command, *ENTER,
    ]  # fmt: skip


# The jail's own address is the only source its packets may carry. Root in a
# jail has no net_raw (jailenter.py), but IP_FREEBIND, which needs no
# capability (ip(7)), lets any process bind a UDP socket to an address that is
# not its own and send from it: another jail's, the host's. So the jail's own
# namespace drops, on the output hook, every packet whose source is not the
# jail's address (loopback aside; for IPv6 also link-local and the unspecified
# address the kernel's neighbour discovery uses). The table is in the jail's
# namespace, where only a net_admin capability, which the jail lacks, could
# change it; the host's firewall is not touched.
SOURCE_TABLE = "rexcarcer_source"


def source_guard_argv(netns: str, address: IPInterface) -> list[str]:
    """One nft(8) run in ``netns``: its arguments form one script, applied as one
    transaction (nft(8): commands separated by ';')."""
    ip = address.ip
    v4 = f"ip saddr != {ip} drop" if ip.version == 4 else "drop"
    v6 = f"{{ {ip}, fe80::/10, :: }}" if ip.version == 6 else "{ fe80::/10, :: }"
    chain = f"inet {SOURCE_TABLE} egress"
    script = "; ".join((
        f"add table inet {SOURCE_TABLE}",
        f"add chain {chain} {{ type filter hook output priority 0; policy accept; }}",
        f'add rule {chain} oifname "lo" accept',
        f"add rule {chain} meta nfproto ipv4 {v4}",
        f"add rule {chain} meta nfproto ipv6 ip6 saddr != {v6} drop",
    ))  # fmt: skip
    return ["nsenter", f"--net=/run/netns/{netns}", "nft", script]


def public_argvs(
    netns: str, veth: str, address: IPInterface, iface: str, gateway: str
) -> list[list[str]]:
    """A jail with an address of a declared public range: the host routes the
    address to the jail's veth, answers for it on ``iface`` (proxy ARP / NDP),
    and the jail reaches the host (and, through it, its range) over the veth."""
    ip, v = address.ip, address.ip.version
    out = [
        ["ip", "route", "replace", f"{ip}/{address.max_prefixlen}", "dev", veth],
        # one proxy entry per address: the host answers for the jail's address
        # only, not (as proxy_arp on the interface would) for all it routes
        ["ip", "neigh", "replace", "proxy", str(ip), "dev", iface],
        ["ip", "-n", netns, "route", "add", gateway, "dev", "eth0"],
        # a routable address answers clients anywhere, through the host
        ["ip", "-n", netns, "route", "replace", "default", "via", gateway, "dev", "eth0"],
    ]
    if v == 6:
        # IPv6 proxy entries are used only with proxy_ndp on (ip-sysctl.rst);
        # sysctl(8) writes an interface's '.' as '/'
        out.insert(
            2, ["sysctl", "-q", "-w", f"net.ipv6.conf.{iface.replace('.', '/')}.proxy_ndp=1"]
        )
    else:
        # the jail's ARP for what lies beyond the host (its range's neighbours
        # on iface) is answered by the host on the veth
        out.append(["sysctl", "-q", "-w", f"net.ipv4.conf.{veth}.proxy_arp=1"])
    return out


def exec_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """Join the jail's namespaces and root, drop to a jail's capabilities, run."""
    return [ENTER[0], "-I", "-S", ENTER[1], "exec", str(pid), *argv]


class LinuxRuntime:
    def __init__(
        self,
        runner: Runner,
        *,
        run_dir: Path,
        bridge: str,
        host_address: IPInterface,
        token: str,
        routes: Sequence[Network] = (),
        public: Sequence[tuple[Network, str]] = (),
    ) -> None:
        self.runner = runner
        self.run_dir = run_dir
        self.bridge = bridge
        self.host_address = host_address
        self.token = token
        # Networks a jail reaches through its host (cluster mode: the cluster
        # CIDR, so a jail reaches other hosts' jails). Never a default route.
        self.routes = tuple(routes)
        # The public ranges declared for jails (config public_ips) and the
        # interface each lives on: the only addresses outside the jail subnet
        # that get a host route.
        self.public = tuple(public)

    def public_iface(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The declared interface of the public range ``ip`` lies in, if any."""
        return next((iface for net, iface in self.public if ip in net), None)

    # -- run files: what we know of a started jail ------------------------

    def _run_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _read_run(self, name: str) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(self._run_file(name).read_text())
            return data
        except (OSError, ValueError):
            return None

    def _running_pid(self, name: str) -> int | None:
        info = self._read_run(name)
        if info is None:
            return None
        pid, start = info.get("init_pid"), info.get("init_start")
        # PID plus start time names one process for the life of the system
        if isinstance(pid, int) and isinstance(start, int) and procfs.alive(pid, start):
            return pid
        return None

    # -- network ------------------------------------------------------------

    def _ip(self, *args: str, check: bool = True) -> Completed:
        try:
            return self.runner.run(["ip", *args], check=check)
        except CommandFailed as exc:
            raise RuntimeBackendError(exc.message) from exc

    def bridge_argvs(self) -> list[list[str]]:
        """Make the bridge, up, with the host's address (added last: a bridge that
        has it is ready)."""
        return [
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "link", "set", self.bridge, "up"],
            ["ip", "addr", "add", str(self.host_address), "dev", self.bridge],
        ]

    def ensure_bridge(self) -> None:
        """The bridge, up, with the host's address. Jails start in parallel: making
        it happens under a lock, and each step accepts that it is already done."""
        if self._bridge_ready():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with (self.run_dir / ".bridge.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._bridge_ready():
                return
            for argv in self.bridge_argvs():
                done = self._ip(*argv[1:], check=False)
                if not done.ok and not any(
                    t in done.stderr for t in ("exists", "already assigned")
                ):
                    raise RuntimeBackendError(
                        f"cannot set up bridge {self.bridge}: {done.stderr.strip()}"
                    )

    def _bridge_ready(self) -> bool:
        shown = self._ip("-o", "addr", "show", "dev", self.bridge, check=False)
        return shown.ok and f" {self.host_address} " in shown.stdout

    def _net_argvs(
        self, netns: str, veth: str, name: str, address: IPInterface, routes: Sequence[Network]
    ) -> list[list[str]]:
        """A veth from the bridge into ``netns``, its address, its routes."""
        gateway = str(self.host_address.ip)
        public = address.ip not in self.host_address.network
        iface = self.public_iface(address.ip) if public else None
        if public and iface is None:
            raise RuntimeBackendError(
                f"{name}: address {address.ip} lies outside the jail subnet "
                f"{self.host_address.network} and every public range declared for jails",
                hint="declare its range in public_ips (REX_PUBLIC_IPS, CIDR@interface)",
            )
        link = ["ip", "link", "set", veth, "up"]
        out = [
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
            link if public else [*link[:4], "master", self.bridge, "up"],
            ["ip", "-n", netns, "addr", "add", str(address), "dev", "eth0"],
            source_guard_argv(netns, address),  # before the link is up
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
        ]
        if iface is not None:
            out += public_argvs(netns, veth, address, iface, gateway)
        for net in routes:
            # the jail's own subnet is more specific, so it stays on-link
            out.append(["ip", "-n", netns, "route", "replace", str(net), "via", gateway,
                        "dev", "eth0"])  # fmt: skip
        return out

    def plumb_argvs(self, spec: JailSpec) -> list[list[str]]:
        """The jail's network namespace, its veth on the bridge, its address and routes."""
        netns = netns_name(self.token, spec.name)
        veth = veth_name(self.token, spec.name)
        out = [["ip", "netns", "add", netns], ["ip", "-n", netns, "link", "set", "lo", "up"]]
        if spec.address is None:
            return out
        routes = tuple(dict.fromkeys((*self.routes, *spec.routes)))
        return out + self._net_argvs(netns, veth, f"jail {spec.name}", spec.address, routes)

    def build_net_argvs(self, net: BuildNet) -> list[list[str]]:
        """A build step's namespace, plumbed like a jail's."""
        netns = build_netns_name(self.token, net.name)
        veth = build_veth_name(self.token, net.name)
        return [
            ["ip", "netns", "add", netns],
            ["ip", "-n", netns, "link", "set", "lo", "up"],
            *self._net_argvs(netns, veth, f"build step {net.name}", net.address, net.routes),
        ]

    def build_unplumb_argvs(self, net: BuildNet) -> list[list[str]]:
        """Deleting the host end removes the pair at once; then the namespace."""
        return [
            ["ip", "link", "del", build_veth_name(self.token, net.name)],
            ["ip", "netns", "del", build_netns_name(self.token, net.name)],
        ]

    def start_commands(self, spec: JailSpec) -> list[list[str]]:
        netns = netns_name(self.token, spec.name)
        bridge = [] if self._bridge_ready() else self.bridge_argvs()
        start = start_argv(netns, spec.root, spec.hostname, spec.mounts)
        return [*bridge, *self.plumb_argvs(spec), start]

    def build_commands(
        self, root: Path, command: str, env: Mapping[str, str], network: BuildNet | None = None
    ) -> list[list[str]]:
        if network is None:
            return [build_argv(root, command)]
        netns = build_netns_name(self.token, network.name)
        bridge = [] if self._bridge_ready() else self.bridge_argvs()
        return [*bridge, *self.build_net_argvs(network), build_net_argv(netns, root, command),
                *self.build_unplumb_argvs(network)]  # fmt: skip

    def _plumb(self, spec: JailSpec) -> None:
        netns = netns_name(self.token, spec.name)
        if self._ip("link", "show", "dev", veth_name(self.token, spec.name), check=False).ok:
            self._ip("link", "del", veth_name(self.token, spec.name), check=False)  # a killed run's
        for argv in self.plumb_argvs(spec):
            if argv[1:3] == ["netns", "add"] and not self._ip(*argv[1:], check=False).ok:
                self._ip("netns", "del", netns, check=False)  # left by a killed run
                self._ip(*argv[1:])
            elif argv[1:3] != ["netns", "add"]:
                self._plumb_step(argv)

    def _plumb_step(self, argv: list[str]) -> None:
        if argv[0] == "ip":
            self._ip(*argv[1:])
            return
        try:
            self.runner.run(argv)
        except CommandFailed as exc:
            raise RuntimeBackendError(exc.message) from exc

    def _unplumb(self, name: str, address: str | None) -> None:
        netns = netns_name(self.token, name)
        if Path("/run/netns", netns).exists():
            self._ip("netns", "del", netns, check=False)
        self._ip("link", "del", veth_name(self.token, name), check=False)
        if address:
            addr = ipaddress.ip_interface(address)
            iface = self.public_iface(addr.ip)
            if addr.ip not in self.host_address.network and iface is not None:
                # the /32 route went with the veth; the proxy entry stays otherwise
                self._ip("neigh", "del", "proxy", str(addr.ip), "dev", iface, check=False)

    # -- the Protocol ---------------------------------------------------------

    def start(self, spec: JailSpec) -> None:
        if self._running_pid(spec.name) is not None:
            return
        netns = netns_name(self.token, spec.name)
        for d in ("proc", "dev"):
            _ensure_dir(spec.root, d)
        self.ensure_bridge()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console = self.run_dir / f"{spec.name}.console.log"
        try:
            self._plumb(spec)
            env = jail_env(spec.env)
            argv = start_argv(netns, spec.root, spec.hostname, spec.mounts)
            upid = self.runner.spawn(argv, env=env, log_path=str(console))
            ipid = self._wait_init(upid)
            st = procfs.stat(ipid)
            info = {
                "unshare_pid": upid, "init_pid": ipid, "init_start": st.starttime if st else 0,
                "root": str(spec.root), "netns": netns,
                "address": str(spec.address) if spec.address else None,
            }  # fmt: skip
            atomic_write(self._run_file(spec.name), json.dumps(info))  # read concurrently
            self._wait_rc(spec.name, ipid, console)
        except BaseException:
            self._kill(spec.name)
            self._unplumb(spec.name, str(spec.address) if spec.address else None)
            self._run_file(spec.name).unlink(missing_ok=True)
            raise

    def _wait_init(self, upid: int) -> int:
        """The jail's init: unshare's only child (PID 1 of the new pid namespace)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for child in procfs.children(upid):
                return child
            if not procfs.alive(upid):
                procfs.reap(upid)
                raise RuntimeBackendError("the jail's init exited during start")
            time.sleep(0.002)
        raise RuntimeBackendError(f"the jail did not start within {START_TIMEOUT:.0f} s")

    def _wait_rc(self, name: str, ipid: int, console: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = read_rc_status(ipid)
            if text is None:
                if not procfs.alive(ipid):
                    raise RuntimeBackendError(
                        "the jail exited while /etc/rc ran", hint=_tail(console)
                    ) from None
                time.sleep(0.003)
                continue
            if text != "0":
                code, _, script = text.partition(" ")
                raise RuntimeBackendError(f"{script or '/etc/rc'} exited with status {code}",
                                          hint=_tail(console))  # fmt: skip
            return
        raise RuntimeBackendError(f"/etc/rc did not finish within {START_TIMEOUT:.0f} s")

    def _kill(self, name: str) -> None:
        info = self._read_run(name) or {}
        init_pid, upid = info.get("init_pid"), info.get("unshare_pid")
        start = info.get("init_start")
        if isinstance(init_pid, int) and procfs.alive(
            init_pid, start if isinstance(start, int) else None
        ):
            _signal(init_pid, signal.SIGTERM)
            if not _wait_dead(init_pid, STOP_TIMEOUT):
                _signal(init_pid, signal.SIGKILL)
                _wait_dead(init_pid, STOP_TIMEOUT)
        if isinstance(upid, int):
            _wait_dead(upid, STOP_TIMEOUT)
            procfs.reap(upid)

    def stop(self, name: str) -> None:
        info = self._read_run(name)
        if info is None:
            self._unplumb(name, None)
            return
        self._kill(name)
        address = info.get("address")
        self._unplumb(name, address if isinstance(address, str) else None)
        self._run_file(name).unlink(missing_ok=True)

    def status(self, names: Sequence[str]) -> dict[str, JailStatus]:
        out: dict[str, JailStatus] = {}
        for name in names:
            pid = self._running_pid(name)
            state = JailState.RUNNING if pid is not None else JailState.STOPPED
            out[name] = JailStatus(name, state, pid)
        return out

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
    ) -> Completed:
        pid = self._running_pid(name)
        if pid is None:
            raise RuntimeBackendError(f"jail {name} is not running", hint=f"rex start {name}")
        return self.runner.run(
            exec_argv(pid, argv), check=False, env=env, interactive=interactive, on_output=on_output
        )

    def build_run(
        self,
        root: Path,
        command: str,
        *,
        env: Mapping[str, str],
        on_output: OutputSink | None = None,
        network: BuildNet | None = None,
    ) -> Completed:
        for d in ("proc", "dev"):
            _ensure_dir(root, d)
        if network is None:
            return self.runner.run(build_argv(root, command), check=False, env=env,
                                   on_output=on_output, die_with_parent=True)  # fmt: skip
        self.ensure_bridge()
        self.build_cleanup(network)  # what a killed run left under this name
        try:
            for argv in self.build_net_argvs(network):
                self._plumb_step(argv)
            netns = build_netns_name(self.token, network.name)
            return self.runner.run(build_net_argv(netns, root, command), check=False, env=env,
                                   on_output=on_output, die_with_parent=True)  # fmt: skip
        finally:
            self.build_cleanup(network)

    def build_cleanup(self, network: BuildNet) -> None:
        veth = build_veth_name(self.token, network.name)
        if self._ip("link", "show", "dev", veth, check=False).ok:
            self._ip(*self.build_unplumb_argvs(network)[0][1:], check=False)
        if Path("/run/netns", build_netns_name(self.token, network.name)).exists():
            self._ip(*self.build_unplumb_argvs(network)[1][1:], check=False)

    def remove(self, name: str) -> None:
        self.stop(name)
        (self.run_dir / f"{name}.console.log").unlink(missing_ok=True)


def read_rc_status(pid: int) -> str | None:
    """The status INIT left in the jail's /dev, or None while there is none.

    The jail's /etc/rc runs before INIT writes it and can plant a symlink where
    INIT's ``mv`` puts the file. Read through ``/proc/PID/root``, an absolute
    symlink resolves against *this* process's root, the host's (proc(5),
    /proc/pid/root): a link to a host file would be read (and shown in an
    error), one to /dev/zero read without end. So the directory and the file are
    opened one component at a time with ``O_NOFOLLOW``, the file must be a
    regular file (``O_NONBLOCK``: a fifo does not block), and only its first
    bytes are read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        root = os.open(f"/proc/{pid}/root/.", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None  # the jail's init is gone; the caller says so
    try:
        try:
            dev = os.open(RC_STATUS_DIR, flags | os.O_DIRECTORY, dir_fd=root)
        except OSError as exc:
            raise _tampered(f"/{RC_STATUS_DIR}", exc) from exc
        try:
            fd = os.open(RC_STATUS_NAME, flags | os.O_NONBLOCK, dir_fd=dev)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _tampered(f"/{RC_STATUS}", exc) from exc
        finally:
            os.close(dev)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _tampered(f"/{RC_STATUS}", None)
            return os.read(fd, 64).decode(errors="replace").strip()
        finally:
            os.close(fd)
    finally:
        os.close(root)


def _tampered(path: str, exc: OSError | None) -> RuntimeBackendError:
    why = exc.strerror if exc is not None else "it is not a regular file"
    return RuntimeBackendError(
        f"cannot read the start status rex keeps at {path} in the jail: {why} "
        "(something in the jail replaced it: not a regular file rex wrote)",
        hint="see what the jail's /etc/rc does to /dev",
    )


def _ensure_dir(root: Path, name: str) -> None:
    """mkdir ROOT/NAME, refusing a symlink planted in the image."""
    path = root / name
    if path.is_symlink():
        raise RuntimeBackendError(f"{path} is a symlink; refusing to mount over it")
    path.mkdir(mode=0o755, exist_ok=True)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while procfs.alive(pid):
        if time.monotonic() > deadline:
            return False
        procfs.reap(pid)
        time.sleep(0.002)
    return True


def _tail(path: Path, lines: int = 20, limit: int = 1 << 16) -> str:
    """The last lines of the console log, reading at most its last ``limit``
    bytes: the jail writes that file, and may have made it huge."""
    try:
        with path.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - limit, 0))
            text = f.read(limit).decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return "no console output"
    return "console output:\n" + "\n".join(text) if text else "no console output"
