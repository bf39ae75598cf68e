"""The Linux runtime: a jail is a network namespace with a veth on the host
bridge, plus pid/mount/uts/ipc namespaces and the jail's clone as root.

Start (command lines from notes/linux-testbed.md §3, which measured them):

    ip netns add NS; ip link add VETH type veth peer name eth0 netns NS; ...
    nsenter --net=/run/netns/NS -- unshare --fork --pid --mount --uts --ipc \\
        --cgroup --kill-child --mount-proc=ROOT/proc /bin/sh -c SETUP rex-jail ROOT \\
        HOSTNAME INIT SECRETS [SRC DST]...

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

Limits (LIMIT): every jail has cgroups of its own (limits/cgroup.py,
``rexcarcer/rex-<token>/<jail>`` in each hierarchy), made before it starts with
its limits written (none: "max"). The runner's child joins them and sets
RLIMIT_NOFILE before it execs nsenter (the waiter below and unshare are in
them too), so the jail's first process and all it
forks start limited; ``rex exec`` joins them the same way. ``--cgroup`` then
gives the jail a cgroup namespace rooted at its groups: root in the jail sees
its groups as ``/``, and a cgroupfs it mounts shows only them, so it cannot
move itself out (cgroup_namespaces(7)). Stop kills what is left in the groups
and removes them.

Secrets (SECRET, runtime/secretfs.py): SECRETS is the jail's /run/secrets, or
"" for none. SETUP mounts a tmpfs there before the pivot (in the jail's mount
namespace only) and makes a FIFO in the jail's private /dev; INIT's first act
is to read one line from it. rex opens the FIFO through /proc/<init>/root once
the pivot is done (which also proves the jail's root is the one it meant),
checks that /run/secrets is that tmpfs, writes the files through jailfs, and
only then writes "go": no process of the jail runs before its secrets are in
place, and if rex dies first the FIFO closes, the read fails and the jail ends
without running /etc/rc.

A host-side shell (WAITER) runs unshare and writes its exit status to
``RUN_DIR/NAME.exit`` when the jail ends: nothing inside the jail outlives its
init, so only a process outside can tell how it ended (``status``, for the
agent's RESTART policy; docs/agent.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rexcarcer.errors import CommandFailed, RuntimeBackendError
from rexcarcer.fsutil import atomic_write, read_small
from rexcarcer.limits import LimitError, Limits
from rexcarcer.limits.cgroup import CgroupDriver, rlimits_for
from rexcarcer.rexfile.ast import IPInterface
from rexcarcer.run import Completed, OutputSink, Runner
from rexcarcer.runtime import process, procfs, secretfs
from rexcarcer.runtime.base import (
    BuildNet,
    HostFile,
    JailEnd,
    JailSpec,
    JailState,
    JailStatus,
    jail_env,
)
from rexcarcer.runtime.direct import exec_record
from rexcarcer.runtime.linux_secrets import GO_FIFO, deliver_secrets

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Runs on the host, inside the new namespaces, before the pivot. $1 = root,
# $2 = host name, $3 = what to run in the jail, $4 = the jail's secrets
# directory ("" for none), $5 $6 = the Python and the jailenter.py that pivot
# and drop the capabilities, then pairs of (host directory, directory inside
# the jail) to bind-mount: the jail's volumes. The mounts belong to the jail's
# private mount namespace and go with it. No value is ever pasted into the script.
SETUP = """set -e
root=$1 name=$2 init=$3 secrets=$4 python=$5 enter=$6
shift 6
mount -t tmpfs -o mode=755,size=1m,nosuid,noexec tmpfs "$root/dev"
for d in DEVICES; do : > "$root/dev/$d"; mount --bind "/dev/$d" "$root/dev/$d"; done
ln -s /proc/self/fd "$root/dev/fd"; ln -s fd/0 "$root/dev/stdin"
ln -s fd/1 "$root/dev/stdout"; ln -s fd/2 "$root/dev/stderr"
mkdir -p "$root/dev/shm" "$root/dev/pts"
while [ $# -ge 2 ]; do mount --bind "$1" "$root$2"; shift 2; done
if [ -n "$secrets" ]; then
    mount -t tmpfs -o SECRET_OPTIONS tmpfs "$root$secrets"
    mkfifo -m 600 "$root/GO_FIFO"
fi
hostname "$name"
cd "$root"
exec "$python" -I -S "$enter" init "$init"
"""
SETUP = (SETUP.replace("DEVICES", " ".join(DEVICES))
         .replace("SECRET_OPTIONS", secretfs.LINUX_OPTIONS)
         .replace("GO_FIFO", GO_FIFO))  # fmt: skip

RC_STATUS_DIR, RC_STATUS_NAME = "dev", ".rex-rc"
RC_STATUS = f"{RC_STATUS_DIR}/{RC_STATUS_NAME}"
# rex's own start-up script (syslog forwarding, logs/forward.py): the jail's
# /etc/rc is the user's, so rex's part runs first, from a file rex rewrites.
RC_PRE = "/etc/rexcarcer/rc.pre"
# The jail's ENV reaches /etc/rc and every daemon it starts from the file rex
# writes, sourced with `set -a` exactly as FreeBSD's exec.start does
# (runtime/freebsd.py EXEC_START), so both backends read the same file.
ENV_FILE = "/etc/rexcarcer/env"
INIT = f"""trap 'exit 0' TERM
if [ -p /{GO_FIFO} ]; then
    read -r go < /{GO_FIFO} || exit 1
    [ "$go" = go ] || exit 1
    rm -f /{GO_FIFO} 2>/dev/null
fi
if [ -f {ENV_FILE} ]; then set -a; . {ENV_FILE}; set +a; fi
s=0
if [ -f {RC_PRE} ]; then /bin/sh {RC_PRE} </dev/null || s="$? {RC_PRE}"; fi
if [ "$s" = 0 ] && [ -f /etc/rc ]; then /bin/sh /etc/rc </dev/null || s="$? /etc/rc"; fi
echo "$s" > /{RC_STATUS}.tmp
mv /{RC_STATUS}.tmp /{RC_STATUS}
while :; do sleep 3600 & wait $!; done
"""

# $1 = the status file, then unshare's argv. unshare(1) passes its child's end
# on: it exits with the child's status, or kills itself with the signal that
# killed the child, so "$?" is 0 when the jail's init ended through its TERM
# trap (`rex stop`, or `kill 1` inside the jail) and 128+N when it was killed by
# signal N. Only SIGKILL reaches a namespace's init from outside without a
# handler (pid_namespaces(7)): the OOM killer, `kill -9` on the host. unshare of
# util-linux 2.38 cannot re-raise SIGKILL ("sigprocmask unblock failed") and
# exits 1 instead: a failure all the same.
WAITER = """f=$1
shift
"$@"
s=$?
echo "$s" > "$f.tmp" && mv -f "$f.tmp" "$f"
"""
END_WAIT = 1.0  # how long `status` waits for the waiter to write what it saw

START_TIMEOUT = 60.0
# how often a start looks for the jail's init and for /etc/rc's end: each look
# is a few system calls, and a start waits half of this on average for each
POLL = 0.001
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
    netns: str,
    root: Path,
    hostname: str,
    mounts: Sequence[tuple[Path, str]] = (),
    secrets: str = "",
    *,
    status_file: Path,
) -> list[str]:
    """``secrets``: the jail's secrets directory (inside the jail), "" for none."""
    binds = [str(arg) for src, inside in mounts for arg in (src, inside)]
    return [
        "nsenter", f"--net=/run/netns/{netns}", "--",
        "/bin/sh", "-c", WAITER, "rex-wait", str(status_file),
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--cgroup", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-jail", str(root), hostname, INIT, secrets, *ENTER, *binds,
    ]  # fmt: skip


def build_argv(root: Path, command: str) -> list[str]:
    return [
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-build", str(root), "build", command, "", *ENTER,
    ]  # fmt: skip


def build_net_argv(netns: str, root: Path, command: str) -> list[str]:
    """``build_argv`` in the step's own network namespace, made beforehand.
    nsenter(1) enters a network namespace without forking, so the runner's
    parent-death signal reaches unshare, whose --kill-child takes the step down."""
    return [
        "nsenter", f"--net=/run/netns/{netns}", "--",
        "unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--kill-child",
        f"--mount-proc={root}/proc",
        "/bin/sh", "-c", SETUP, "rex-build", str(root), "build", command, "", *ENTER,
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


def _source_guard_rules(address: IPInterface) -> list[dict[str, Any]]:
    """The guard as nftables JSON commands (libnftables-json(5)), never rule text."""
    ip = address.ip
    table = {"family": "inet", "table": SOURCE_TABLE, "chain": "egress"}

    def rule(*expr: dict[str, Any]) -> dict[str, Any]:
        return {"add": {"rule": {**table, "expr": list(expr)}}}

    def saddr_not(protocol: str, right: Any) -> dict[str, Any]:
        left = {"payload": {"protocol": protocol, "field": "saddr"}}
        return {"match": {"op": "!=", "left": left, "right": right}}

    def nfproto(name: str) -> dict[str, Any]:
        return {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": name}}

    drop: dict[str, Any] = {"drop": None}
    own6 = [str(ip)] if ip.version == 6 else []
    link_local = {"prefix": {"addr": "fe80::", "len": 10}}
    return [
        {"add": {"table": {"family": "inet", "name": SOURCE_TABLE}}},
        {"add": {"chain": {"family": "inet", "table": SOURCE_TABLE, "name": "egress",
                           "type": "filter", "hook": "output", "prio": 0,
                           "policy": "accept"}}},
        rule({"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
             {"accept": None}),
        rule(nfproto("ipv4"), *([saddr_not("ip", str(ip))] if ip.version == 4 else []), drop),
        rule(nfproto("ipv6"), saddr_not("ip6", {"set": [*own6, link_local, "::"]}), drop),
    ]  # fmt: skip


def source_guard_argv(netns: str, address: IPInterface) -> list[str]:
    """One nft(8) run in ``netns``. With ``-j`` the command argument is read as
    JSON (libnftables: nft_run_cmd_from_buffer parses JSON input), one batch
    the kernel commits as one transaction."""
    script = json.dumps({"nftables": _source_guard_rules(address)}, separators=(",", ":"))
    return ["nsenter", f"--net=/run/netns/{netns}", "nft", "-j", script]


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
    """Join the jail's namespaces (its cgroup namespace too: root in the jail sees
    its own groups as ``/``) and root, drop to a jail's capabilities, run. The
    runner's child joins the jail's cgroups and rlimits before it execs this."""
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
        cgroups: Callable[[], CgroupDriver] | None = None,
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
        # made on first use (it reads /proc/self/mountinfo); None: no cgroups,
        # and a jail with LIMIT is refused
        self._make_cgroups = cgroups

    @functools.cached_property
    def cgroups(self) -> CgroupDriver | None:
        return self._make_cgroups() if self._make_cgroups is not None else None

    def _cgroups_for(self, spec: JailSpec) -> list[Path]:
        """Make (or update) the jail's cgroups; the cgroup.procs files to join."""
        if self.cgroups is None:
            if spec.limits:
                raise LimitError("LIMIT needs cgroups, and this runtime has no cgroup driver")
            return []
        return self.cgroups.create(spec.name, spec.limits)

    def _drop_cgroups(self, name: str) -> None:
        """Kill what is left in the jail's groups (a process it left behind, an
        exec that outlived it) and remove them; idempotent."""
        if self.cgroups is not None:
            self.cgroups.remove(name, kill=True)

    def public_iface(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        """The declared interface of the public range ``ip`` lies in, if any."""
        return next((iface for net, iface in self.public if ip in net), None)

    # -- run files: what we know of a started jail ------------------------

    def _run_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _exec_file(self, name: str) -> Path:
        """How `rex exec` enters the jail without the engine (runtime/direct.py)."""
        return self.run_dir / f"{name}.exec"

    def _status_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.exit"

    def _read_run(self, name: str) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads(read_small(f"{self.run_dir}/{name}.json"))
            return data
        except (OSError, ValueError):
            return None

    def _running_pid(self, name: str) -> int | None:
        info = self._read_run(name)
        return None if info is None else _live_init(info)

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
        if bridge_holds(self.bridge, self.host_address):  # the kernel says so: no `ip`
            return True
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
        # ip-link(8) `add` takes `up` and `master` as `set` does (iproute2
        # iplink_parse; the kernel's rtnl_newlink sets IFLA_MASTER and the flags
        # of a new link): one process makes the pair, up, on the bridge
        master = [] if public else ["master", self.bridge]
        pair = ["type", "veth", "peer", "name", "eth0", "netns", netns]
        out = [
            ["ip", "link", "add", veth, "up", *master, *pair],
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
        secrets = secretfs.inside_path(spec.root) if spec.secrets else ""
        start = start_argv(netns, spec.root, spec.hostname, spec.mounts, secrets,
                           status_file=self._status_file(spec.name))  # fmt: skip
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

    def start_files(self, spec: JailSpec) -> list[HostFile]:
        return []  # the run file (run_dir/NAME.json) is rex's own state, not configuration

    def build_files(self, root: Path, network: BuildNet | None = None) -> list[HostFile]:
        return []

    def _plumb(self, spec: JailSpec) -> None:
        netns = netns_name(self.token, spec.name)
        veth = veth_name(self.token, spec.name)
        if _link_exists(veth):
            self._ip("link", "del", veth, check=False)  # a killed run's
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
        secretfs.check_sizes(spec.secrets)
        secrets = secretfs.mountpoint(spec.root) if spec.secrets else ""
        self.ensure_bridge()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        console = self.run_dir / f"{spec.name}.console.log"
        status_file = self._status_file(spec.name)
        status_file.unlink(missing_ok=True)  # how an earlier run ended
        try:
            self._plumb(spec)
            procs = self._cgroups_for(spec)
            env = jail_env(spec.env)
            argv = start_argv(netns, spec.root, spec.hostname, spec.mounts, secrets,
                              status_file=status_file)  # fmt: skip
            wpid = self.runner.spawn(argv, env=env, log_path=str(console), cgroups=procs,
                                     rlimits=rlimits_for(spec.limits))  # fmt: skip
            upid, ipid = self._wait_init(wpid)
            st = procfs.stat(ipid)
            start = st.starttime if st else 0
            procs_s = [str(p) for p in procs]
            info = {
                "waiter_pid": wpid, "unshare_pid": upid, "init_pid": ipid,
                "init_start": start, "root": str(spec.root), "netns": netns,
                "address": str(spec.address) if spec.address else None,
                "limits": spec.limits.as_json(),
                # what `rex exec` needs to enter without the engine (runtime/direct.py)
                "exec_env": env, "cgroup_procs": procs_s,
            }  # fmt: skip
            atomic_write(self._run_file(spec.name), json.dumps(info))  # read concurrently
            if spec.limits.openfiles is None:  # an rlimit only the engine's runner sets
                atomic_write(self._exec_file(spec.name), exec_record(ipid, start, env, procs_s),
                             mode=0o600)  # fmt: skip
            if spec.secrets:
                deliver_secrets(spec, ipid, start, secrets, timeout=START_TIMEOUT)
            self._wait_rc(spec.name, ipid, console)
        except BaseException:
            self._kill(spec.name)
            self._drop_cgroups(spec.name)
            self._unplumb(spec.name, str(spec.address) if spec.address else None)
            self._exec_file(spec.name).unlink(missing_ok=True)
            self._run_file(spec.name).unlink(missing_ok=True)
            raise

    def _wait_init(self, wpid: int) -> tuple[int, int]:
        """unshare (the waiter's child) and the jail's init: unshare's only child,
        PID 1 of the new pid namespace."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for upid in procfs.children(wpid):
                for child in procfs.children(upid):
                    return upid, child
            if not procfs.alive(wpid):
                procfs.reap(wpid)
                raise RuntimeBackendError("the jail's init exited during start")
            time.sleep(POLL)
        raise RuntimeBackendError(f"the jail did not start within {START_TIMEOUT:.0f} s")

    def _wait_rc(self, name: str, ipid: int, console: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = read_rc_status(ipid)
            if text is None:
                if not process.alive(ipid):
                    raise RuntimeBackendError(
                        "the jail exited while /etc/rc ran", hint=_tail(console)
                    ) from None
                time.sleep(POLL)
                continue
            if text != "0":
                code, _, script = text.partition(" ")
                raise RuntimeBackendError(f"{script or '/etc/rc'} exited with status {code}",
                                          hint=_tail(console))  # fmt: skip
            return
        raise RuntimeBackendError(f"/etc/rc did not finish within {START_TIMEOUT:.0f} s")

    def _kill(self, name: str) -> None:
        info = self._read_run(name) or {}
        # the waiter outlives unshare (runs of rex before it had none)
        init_pid, upid = info.get("init_pid"), info.get("waiter_pid", info.get("unshare_pid"))
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
            process.reap(upid)

    def stop(self, name: str) -> None:
        info = self._read_run(name)
        if info is None:
            self._drop_cgroups(name)
            self._unplumb(name, None)
            self._exec_file(name).unlink(missing_ok=True)
            self._status_file(name).unlink(missing_ok=True)
            return
        self._kill(name)
        self._drop_cgroups(name)
        address = info.get("address")
        self._unplumb(name, address if isinstance(address, str) else None)
        self._exec_file(name).unlink(missing_ok=True)
        self._run_file(name).unlink(missing_ok=True)
        self._status_file(name).unlink(missing_ok=True)

    def status(self, names: Sequence[str], *, usage: bool = False) -> dict[str, JailStatus]:
        # one read of each run file and of its init's /proc/PID/stat: `rex ls`
        # pays this for every jail
        out: dict[str, JailStatus] = {}
        for name in names:
            info = self._read_run(name)
            pid = None if info is None else _live_init(info)
            if pid is None:
                out[name] = JailStatus(name, JailState.STOPPED, None, self._ended(name, info))
                continue
            used = None
            if usage:
                used = self.cgroups.usage(name) if self.cgroups is not None else {}
            out[name] = JailStatus(name, JailState.RUNNING, pid, usage=used)
        return out

    def _ended(self, name: str, info: Mapping[str, object] | None) -> JailEnd | None:
        """How the jail's run ended, when it was started and not stopped
        (``info``: its run file, None when there is none)."""
        if info is None:
            return None
        wpid = info.get("waiter_pid")
        deadline = time.monotonic() + END_WAIT
        while True:
            try:
                return JailEnd(int(self._status_file(name).read_text().strip()))
            except (OSError, ValueError):
                pass
            # the init is gone; its waiter writes the status a moment later
            if not isinstance(wpid, int) or not procfs.alive(wpid):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if isinstance(wpid, int):
            procfs.reap(wpid)  # ours when this process started the jail
        try:
            return JailEnd(int(self._status_file(name).read_text().strip()))
        except (OSError, ValueError):
            return JailEnd(None)

    def exec(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        interactive: bool = False,
        on_output: OutputSink | None = None,
        tty: int | None = None,
        timeout: float | None = None,
    ) -> Completed:
        pid = self._running_pid(name)
        if pid is None:
            raise RuntimeBackendError(f"jail {name} is not running", hint=f"rex start {name}")
        # the jail's groups and rlimits, joined before jailenter execs (run.py)
        procs = self.cgroups.procs_files(name) if self.cgroups is not None else []
        return self.runner.run(
            exec_argv(pid, argv), check=False, env=env, interactive=interactive,
            on_output=on_output, tty=tty, timeout=timeout, cgroups=procs,
            rlimits=rlimits_for(self._limits(name)),
        )  # fmt: skip

    def _limits(self, name: str) -> Limits:
        """The limits the jail was started with (its run file, written by rex)."""
        try:
            return Limits.from_json((self._read_run(name) or {}).get("limits"))
        except (ValueError, LimitError):
            return Limits()

    def usage(self, name: str) -> dict[str, int]:
        if self.cgroups is None or self._running_pid(name) is None:
            return {}
        return self.cgroups.usage(name)

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
        if _link_exists(build_veth_name(self.token, network.name)):
            self._ip(*self.build_unplumb_argvs(network)[0][1:], check=False)
        if Path("/run/netns", build_netns_name(self.token, network.name)).exists():
            self._ip(*self.build_unplumb_argvs(network)[1][1:], check=False)

    def remove(self, name: str) -> None:
        self.stop(name)
        (self.run_dir / f"{name}.console.log").unlink(missing_ok=True)


def _live_init(info: Mapping[str, object]) -> int | None:
    """The PID of the jail's init as its run file records it, while that
    process runs. PID plus start time name one process for the life of the
    system. ``start`` writes the start time as /proc/PID/stat ``starttime``
    (clock ticks after boot, as rex 0.1 did): one read of that file compares
    it (procfs.alive; psutil's Process would read it twice, and /proc/stat)."""
    pid, ticks = info.get("init_pid"), info.get("init_start")
    if not isinstance(pid, int):
        return None
    if info.get("init_created") is None and type(ticks) is int:
        return pid if procfs.alive(pid, ticks) else None
    return pid if _init(info).alive() else None


def _init(info: Mapping[str, object]) -> process.Proc:
    """The jail's init as its run file records it."""
    return process.Proc.from_json({
        "pid": info.get("init_pid"), "created": info.get("init_created"),
        "start": info.get("init_start"),
    })  # fmt: skip


# linux/sockios.h and linux/if.h (struct ifreq: the name, then the union)
SIOCGIFFLAGS, SIOCGIFADDR, SIOCGIFNETMASK, IFF_UP = 0x8913, 0x8915, 0x891B, 0x1


def bridge_holds(name: str, address: IPInterface) -> bool:
    """Whether link ``name`` of this network namespace is up with ``address``,
    asked of the kernel in this process: the SIOCGIFFLAGS ioctl (netdevice(7)),
    then for IPv4 SIOCGIFADDR and SIOCGIFNETMASK (the link's first address, the
    one rex gives the bridge) and for IPv6 /proc/net/if_inet6 (this namespace's
    addresses, ipv6(7)). False whenever it cannot tell: the caller asks `ip`.
    (/sys/class/net lists the namespace sysfs was mounted in, not ours.)"""
    ifreq = name.encode()[:15].ljust(40, b"\0")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            flags = int.from_bytes(fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq)[16:18], sys.byteorder)
            if not flags & IFF_UP:
                return False
            if address.version == 6:
                return _inet6_holds(name, address)
            ip = fcntl.ioctl(sock, SIOCGIFADDR, ifreq)[20:24]
            mask = fcntl.ioctl(sock, SIOCGIFNETMASK, ifreq)[20:24]
    except OSError:
        return False
    return (ip == address.ip.packed
            and mask == address.network.netmask.packed)  # fmt: skip


def _inet6_holds(name: str, address: IPInterface) -> bool:
    """/proc/net/if_inet6: address (32 hex digits), index, prefix length (hex),
    scope, flags, link name; one line an address."""
    want = address.ip.packed.hex()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                cols = line.split()
                if (len(cols) == 6 and cols[5] == name and cols[0] == want
                        and int(cols[2], 16) == address.network.prefixlen):  # fmt: skip
                    return True
    except (OSError, ValueError):
        return False
    return False


def _link_exists(name: str) -> bool:
    """Whether this network namespace has a link ``name``: if_nametoindex(3), a
    SIOCGIFINDEX ioctl in this process, instead of an `ip link show` process."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


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
    while process.alive(pid):
        if time.monotonic() > deadline:
            return False
        process.reap(pid)
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
