"""Integration harness: real ZFS, real jails, the real ``rex`` CLI, on the
platform the tests run on (``PLATFORM``: Linux namespaces on zfs-fuse here,
jail(8) on OpenZFS in the FreeBSD CI, .cirrus.yml).

Each test gets its own state directory and its own dataset under a session pool
(on a file, ``cachefile=none``). On Linux ``rex`` runs in a network namespace
of the test's own, so the bridge and jail interfaces it creates never touch the
machine's network; on FreeBSD (a disposable CI machine) the test makes its own
jail interface, a loopback clone, and removes it. Every resource name carries
the session token; teardown destroys what the test made, and a session sweep
removes anything a crashed test left. A test body that only makes sense on
Linux says so with ``tests.capability.linux_only(why)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import pytest

from tests.capability import STRICT, missing, platform

REPO = Path(__file__).resolve().parents[2]
PLATFORM = platform()
# FreeBSD: a release's base.txz (the CI downloads it), imported once per test
FREEBSD_BASE = os.environ.get("REX_TEST_FREEBSD_BASE", "")
TOKEN = "rext" + uuid.uuid4().hex[:6]
SUBNET = "203.0.113.0/24"
T = TypeVar("T")


def sh(*argv: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [str(a) for a in argv],
        check=False,
        capture_output=True,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
    if check and done.returncode != 0:  # say why, not only that
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {done.returncode}: {done.stderr or done.stdout}"
        )
    return done


@lru_cache
def capabilities() -> dict[str, bool]:
    def ok(*argv: str) -> bool:
        try:
            return sh(*argv, check=False).returncode == 0
        except FileNotFoundError:
            return False

    if PLATFORM == "freebsd":
        return {
            "root": os.geteuid() == 0,
            "zfs": ok("zpool", "list"),
            "jail": ok("jls"),
            "freebsd-base": bool(FREEBSD_BASE) and Path(FREEBSD_BASE).is_file(),
        }
    return {
        "root": os.geteuid() == 0,
        "zfs": ok("zpool", "list"),
        "namespaces": ok("unshare", "--net", "--pid", "--fork", "true"),
        "busybox-static": Path("/bin/busybox").exists(),
        "iproute2": ok("ip", "-V"),
        "nftables": ok("nft", "--version"),
    }


def pytest_report_header(config: pytest.Config) -> list[str]:
    caps = capabilities()
    on = ", ".join(k for k, v in caps.items() if v) or "none"
    off = ", ".join(k for k, v in caps.items() if not v) or "none"
    return [f"rex integration on {PLATFORM}: enabled: {on}; missing: {off}; strict={STRICT}; "
            f"token={TOKEN}"]  # fmt: skip


def require(*names: str) -> None:
    absent = [n for n in names if not capabilities().get(n)]
    if absent:
        missing(", ".join(absent))


def _sweep_netns(prefix: str) -> None:
    if PLATFORM != "linux":
        return
    for ns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name and prefix in name:
            sh("ip", "netns", "del", name, check=False)


@dataclass
class Rex:
    """The ``rex`` CLI run inside this test's network namespace (Linux), or on
    the host with the test's own jail interface (FreeBSD, ``netns`` empty)."""

    root: Path
    dataset: str
    netns: str
    env: dict[str, str] = field(default_factory=dict)
    platform: str = "linux"
    interface: str = "rex0"

    def argv(self, *args: str | Path) -> list[str]:
        rex = [sys.executable, "-m", "rexcarcer", *[str(a) for a in args]]
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *rex] if self.netns else rex

    def run(
        self, *args: str | Path, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"rex {' '.join(map(str, args))} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def popen(self, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def json(self, *args: str) -> object:
        return json.loads(self.run("-o", "json", *args).stdout)

    def jails(self) -> dict[str, dict[str, object]]:
        data = self.json("ls")
        assert isinstance(data, list)
        return {j["name"]: j for j in data}

    def ip_of(self, name: str) -> str:
        ips = self.jails()[name]["ips"]
        assert isinstance(ips, list)
        return str(ips[0]).split("/")[0]

    def in_netns(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``argv`` where the jails' host side is: the test's namespace, or the host."""
        if not self.netns:
            return sh(*argv, check=False)
        return sh("nsenter", f"--net=/run/netns/{self.netns}", "--", *argv, check=False)

    def fetch(self, url: str) -> list[str]:
        """A command that prints the page at ``url``, as a jail of the test base runs it
        (busybox wget; FreeBSD's fetch(1))."""
        return ["fetch", "-qo", "-", url] if self.platform == "freebsd" else ["wget", "-qO-", url]

    def host_fetch(self, url: str) -> list[str]:
        """The same from the jails' host side (run with ``in_netns``)."""
        return ["fetch", "-qo", "-", url] if self.platform == "freebsd" else [
            "/bin/busybox", "wget", "-qO-", url]  # fmt: skip

    @property
    def base(self) -> str:
        """The test base every test's .rex files name."""
        return "freebsd" if self.platform == "freebsd" else "busybox"

    @property
    def nothing(self) -> dict[str, list[str]]:
        """What ``leftovers`` is when nothing was left."""
        return {k: [] for k in ("netns" if self.platform == "linux" else "jails", "datasets",
                                "mounts", "processes")}  # fmt: skip

    @property
    def token(self) -> str:
        import hashlib

        return hashlib.sha256(str(self.root).encode()).hexdigest()[:6]

    def leftovers(self) -> dict[str, list[str]]:
        """What rex would have leaked: jail netns (FreeBSD: jails), datasets, mounts,
        processes."""
        ds = sh("zfs", "list", "-H", "-o", "name", "-r", f"{self.dataset}/jails", check=False)
        datasets = [d for d in ds.stdout.split() if d != f"{self.dataset}/jails"]
        if self.platform == "freebsd":
            jls = sh("jls", "name", "path", check=False).stdout.splitlines()
            jails = [ln.split()[0] for ln in jls if f"{self.mnt}/" in ln]
            mounts = [ln for ln in sh("mount", "-p").stdout.splitlines()
                      if f"{self.mnt}/jails/" in ln]  # fmt: skip
            return {"jails": jails, "datasets": datasets, "mounts": mounts, "processes": []}
        netns = [n.split(" ")[0] for n in sh("ip", "netns", "list").stdout.splitlines()
                 if n.startswith(f"rex-{self.token}-")]  # fmt: skip
        mounts = [m for m in Path("/proc/mounts").read_text().splitlines()
                  if f"{self.dataset}/jails/" in m.split(" ")[0]]  # fmt: skip
        procs = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                 and root_source(p).startswith(f"{self.dataset}/jails/")]  # fmt: skip
        return {"netns": netns, "datasets": datasets, "mounts": mounts, "processes": procs}

    @property
    def mnt(self) -> str:
        return sh("zfs", "get", "-H", "-o", "value", "mountpoint", self.dataset).stdout.strip()


@pytest.fixture
def rex(
    pool: str, busybox_root: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Rex]:
    from tests.conftest import revive_zfs

    revive_zfs(pool)
    n = uuid.uuid4().hex[:6]
    root = tmp_path / "state"
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "REX_ROOT": str(root), "REX_DATASET": f"{pool}/t{n}", "REX_SUBNET": SUBNET,
        "REX_RUNTIME": PLATFORM, "REX_HOST": "testhost", "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    if PLATFORM == "freebsd":
        r = _freebsd_rex(root, f"{pool}/t{n}", env, n)
        try:
            r.run("base", "import", FREEBSD_BASE, "freebsd")
            yield r
        finally:
            _teardown(r)
            sh("ifconfig", r.interface, "destroy", check=False)
        return
    netns = f"{TOKEN}-{n}"
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    r = Rex(root=root, dataset=f"{pool}/t{n}", netns=netns, env=env)
    r.run("base", "import", busybox_root, "busybox", "--version", "1")
    yield r
    _teardown(r)


def _freebsd_rex(root: Path, dataset: str, env: dict[str, str], n: str) -> Rex:
    """The test's jail interface: a loopback clone (``ifconfig loN create name X``
    as ``rex host setup`` makes rex0) with the host's jail-subnet address; jails
    get their addresses on it as /32 aliases."""
    iface = f"rxt{n}"  # at most 15 characters (IFNAMSIZ - 1)
    unit = next(f"lo{u}" for u in range(100, 1000)
                if sh("ifconfig", f"lo{u}", check=False).returncode != 0)  # fmt: skip
    sh("ifconfig", unit, "create", "name", iface)
    sh("ifconfig", iface, "inet", f"{SUBNET.split('/')[0][:-1]}1/24", "up")
    env = {**env, "REX_INTERFACE": iface, "REX_DNS": "off"}
    return Rex(root=root, dataset=dataset, netns="", env=env, platform="freebsd", interface=iface)


def _teardown(r: Rex) -> None:
    for _ in range(3):  # a jail others depend on (DEPENDS) goes after them
        listing = r.run("-o", "json", "ls", check=False)
        if listing.returncode != 0 or not json.loads(listing.stdout):
            break
        for jail in json.loads(listing.stdout):
            r.run("destroy", jail["name"], check=False)
    remove_cgroup_parents(r.root)
    _sweep_netns(f"rex-{r.token}-")
    for _ in range(30):
        if sh("zfs", "destroy", "-r", r.dataset, check=False).returncode == 0:
            break
        _unmount_below(r.dataset)
        time.sleep(0.1)
    if r.netns:
        sh("ip", "netns", "del", r.netns, check=False)
    shutil.rmtree(r.root, ignore_errors=True)


def remove_cgroup_parents(root: Path) -> None:
    """The Linux runtime's per-state-directory cgroup parents,
    rexcarcer/rex-<token> (platform/linux.py), left empty once its jails are
    destroyed: removed; one still in use is left alone."""
    import contextlib
    import hashlib

    token = hashlib.sha256(str(root).encode()).hexdigest()[:6]
    for controller in ("memory", "cpu", "cpuacct", "cpu,cpuacct", "pids", "unified"):
        with contextlib.suppress(OSError):
            (Path("/sys/fs/cgroup") / controller / "rexcarcer" / f"rex-{token}").rmdir()


def wait_until(cond: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    """Poll ``cond`` until it returns something true, and return that. The bound
    only keeps a broken run from hanging: it is no claim about speed (those
    figures are measured under bench/)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.05)


def root_source(proc: Path) -> str:
    """What is mounted on the process's "/" (proc_pid_mountinfo(5): the source
    after the `` - FSTYPE`` separator; zfs-fuse names the dataset). Its
    /proc/PID/root cannot tell: after pivot_root in a mount namespace of its
    own, a jail's init has "/" there."""
    try:
        lines = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return ""
    roots = [ln for ln in lines if ln.split(" ")[4] == "/"]
    if not roots:
        return ""
    after = roots[-1].split(" - ", 1)[1].split(" ")
    return after[1] if len(after) > 1 else ""


def _unmount_below(dataset: str) -> None:
    rows = sh("zfs", "list", "-H", "-o", "name", "-r", dataset, check=False).stdout.split()
    for name in sorted(rows, reverse=True):
        sh("zfs", "umount", name, check=False)


def copy_example(dest: Path, name: str = "hello") -> Path:
    """An example's directory (its .rex files name BASE busybox); on FreeBSD the
    hello example's httpd is nc(1) behind daemon(8), the base has no httpd."""
    shutil.copytree(REPO / "examples" / name, dest / name)
    if PLATFORM == "freebsd":
        for rexfile in (dest / name).glob("*.rex"):
            rexfile.write_text(rexfile.read_text().replace("BASE busybox", "BASE freebsd"))
        if (dest / name / "rc").exists():
            page = (dest / name / "index.html").read_text().strip()
            reply = f"HTTP/1.0 200 OK\\r\\n\\r\\n{page}\\n"
            (dest / name / "rc").write_text(
                "#!/bin/sh\n# a one-page web server from the base: nc(1) in a loop\n"
                "/usr/sbin/daemon /bin/sh -c "
                f"'while :; do printf \"{reply}\" | nc -N -l 80; done'\n"
            )
    return dest / name
