"""The cluster test bed: three hosts, each a network namespace with an address
on a bridge in a fourth "switch" namespace (198.51.100.0/24), each running an
etcd member (fast election timings) and the real ``rex`` CLI; jail subnets
are cut from 203.0.113.0/24. Nothing is routed out: no default route, and
every interface lives in a namespace made here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.capability import require_tools
from tests.etcd_support import EtcdCluster, Member, require_etcd
from tests.integration.conftest import TOKEN, _unmount_below, require, sh

SWITCH = "198.51.100"
CIDR = "203.0.113.0/24"


@dataclass
class ClusterHost:
    name: str
    netns: str
    address: str
    root: Path
    dataset: str
    endpoints: list[str]

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "REX_ROOT": str(self.root), "REX_DATASET": self.dataset, "REX_RUNTIME": "linux",
            "REX_HOST": self.name, "REX_ETCD": ",".join(self.endpoints),
            "PYTHONDONTWRITEBYTECODE": "1",
        }  # fmt: skip

    def argv(self, *args: str | Path) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--",
                sys.executable, "-m", "rexcarcer", *map(str, args)]  # fmt: skip

    def rex(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env,
                              timeout=300)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"[{self.name}] rex {' '.join(map(str, args))} exited "
                                 f"{done.returncode}\n{done.stdout}\n{done.stderr}")  # fmt: skip
        return done

    def popen(self, *args: str | Path) -> subprocess.Popen[str]:
        log = (self.root / "agent.log").open("a")
        return subprocess.Popen(self.argv(*args), stdout=log, stderr=log, text=True,
                                env=self.env)  # fmt: skip

    def hosts(self) -> dict[str, dict[str, object]]:
        return {h["name"]: h for h in json.loads(self.rex("-o", "json", "hosts").stdout)}

    def skydns(self) -> dict[str, dict[str, object]]:
        """The keys under /skydns/ and their JSON values, read back with etcdctl."""
        done = self.ns("env", "ETCDCTL_API=3", "etcdctl", f"--endpoints={self.endpoints[0]}",
                       "get", "--prefix", "/skydns/")  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        return {k: json.loads(v) for k, v in zip(lines[::2], lines[1::2], strict=True)}

    def ns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("nsenter", f"--net=/run/netns/{self.netns}", "--", *argv, check=False)


@dataclass
class Testbed:
    __test__ = False
    hosts: list[ClusterHost]
    etcd: EtcdCluster
    switch: str


def _network(switch: str, hosts: list[str]) -> None:
    sh("ip", "netns", "add", switch)
    sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", switch, "link", "set", "br0", "up")
    for i, ns in enumerate(hosts, start=1):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"h{i}",
           "netns", switch)  # fmt: skip
        sh("ip", "-n", switch, "link", "set", f"h{i}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{SWITCH}.{10 + i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    require("root", "namespaces", "iproute2")
    require_etcd()
    require_tools("curl")
    work = tmp_path_factory.mktemp("cluster")
    names = [f"{TOKEN}-c{i}" for i in (1, 2, 3)]
    switch = f"{TOKEN}-sw"
    members = [
        Member(f"e{i}", f"http://{SWITCH}.{10 + i}:2379", f"http://{SWITCH}.{10 + i}:2380",
               work / f"etcd{i}", netns=ns)
        for i, ns in enumerate(names, start=1)
    ]  # fmt: skip
    etcd = EtcdCluster(members)
    try:
        _network(switch, names)
        etcd.start()
        etcd.wait_healthy()
        yield Testbed(_hosts(work, names, etcd), etcd, switch)
    finally:
        etcd.stop()
        for ns in [*names, switch]:
            sh("ip", "netns", "del", ns, check=False)


def _hosts(work: Path, names: list[str], etcd: EtcdCluster) -> list[ClusterHost]:
    out = []
    for i, ns in enumerate(names, start=1):
        # each host talks to its own member first, the others after
        eps = etcd.endpoints[i - 1 :] + etcd.endpoints[: i - 1]
        out.append(ClusterHost(f"h{i}", ns, f"{SWITCH}.{10 + i}", work / f"h{i}",
                               f"{TOKEN}/c{i}", eps))  # fmt: skip
    join_all(out)
    return out


def join_all(hosts: list[ClusterHost]) -> None:
    """As an administrator does it: `rex cluster init` on h1 (the CA host; it keeps
    the CA's key) prints a token, h1 joins (signing its own certificates), its
    agent runs to sign the others' requests, and each other host joins with a
    token of its own (`rex cluster token` makes more)."""
    ca_host, others = hosts[0], hosts[1:]
    init = json.loads(ca_host.rex("-o", "json", "cluster", "init", "--cidr", CIDR,
                                  "--host-prefix", "26").stdout)  # fmt: skip
    ca_host.rex("cluster", "join")
    tokens = [init["token"]] + [new_token(ca_host) for _ in others[1:]]
    signer = ca_host.popen("agent", "--no-api", "--no-routes", "--no-jails", "--lease-ttl", "2",
                           "--idle", "1")  # fmt: skip
    try:
        for h, token in zip(others, tokens, strict=True):
            h.rex("cluster", "join", "--token", token, "--wait", "60")
    finally:
        stop(signer)


def new_token(ca_host: ClusterHost, ttl: str = "10m") -> str:
    return str(
        json.loads(ca_host.rex("-o", "json", "cluster", "token", "--ttl", ttl).stdout)["token"]
    )


@pytest.fixture(scope="module")
def zfs_hosts(testbed: Testbed, pool: str, busybox_root: Path) -> Iterator[list[ClusterHost]]:
    """The hosts with a dataset each and the busybox base imported."""
    from tests.conftest import revive_zfs

    revive_zfs(pool)
    for h in testbed.hosts:
        h.rex("base", "import", busybox_root, "busybox", "--version", "1")
    yield testbed.hosts
    for h in testbed.hosts:
        listing = h.rex("-o", "json", "ls", check=False)
        for jail in json.loads(listing.stdout or "[]"):
            if jail.get("host") == h.name:
                h.rex("destroy", jail["name"], check=False)
        for _ in range(30):
            if sh("zfs", "destroy", "-r", h.dataset, check=False).returncode == 0:
                break
            _unmount_below(h.dataset)
            time.sleep(0.1)


def stop(proc: subprocess.Popen[str], sig: int = 15) -> None:
    """Stop a process this test started, by PID."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
