"""Real etcd members for the tests: Debian's etcd-server, fast election timings
(notes/linux-testbed.md section 7: healthy in ~80 ms), optionally each inside
a network namespace. Only processes started here are stopped, by PID."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.capability import missing

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def require_etcd() -> None:
    if not Path(ETCD).exists():
        missing("etcd (Debian etcd-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    client: str  # http://ADDR:PORT
    peer: str
    data: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    # (server certificate, its key, the CA clients must be signed by): https
    # client URLs with --client-cert-auth
    tls: tuple[Path, Path, Path] | None = None

    def argv(self, cluster: str, state: str) -> list[str]:
        argv = [
            ETCD, "--name", self.name, "--data-dir", str(self.data),
            "--listen-client-urls", self.client, "--advertise-client-urls", self.client,
            "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
            "--initial-cluster", cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", "rex-test",
            "--heartbeat-interval=10", "--election-timeout=100",
            # what docs/cluster.md recommends; tests compact by hand as well
            "--auto-compaction-mode=periodic", "--auto-compaction-retention=1h",
            "--logger=zap", "--log-outputs=stderr",
        ]  # fmt: skip
        if self.tls is not None:
            cert, key, ca = self.tls
            argv += ["--cert-file", str(cert), "--key-file", str(key),
                     "--trusted-ca-file", str(ca), "--client-cert-auth"]  # fmt: skip
        if self.netns:
            return ["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv]
        return argv

    def start(self, cluster: str, state: str = "new") -> None:
        self.log = self.data.with_suffix(".log")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(cluster, state), stdout=out, stderr=out, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class EtcdCluster:
    members: list[Member]

    @property
    def endpoints(self) -> list[str]:
        return [m.client for m in self.members]

    @property
    def initial(self) -> str:
        return ",".join(f"{m.name}={m.peer}" for m in self.members)

    def start(self) -> None:
        for m in self.members:
            m.start(self.initial)

    def wait_healthy(self, member: Member | None = None, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        targets = [member] if member else self.members
        for m in targets:
            while True:
                if self._healthy(m):
                    break
                if time.monotonic() > deadline or (m.proc and m.proc.poll() is not None):
                    tail = m.log.read_text()[-2000:] if m.log.exists() else ""
                    raise AssertionError(f"etcd {m.name} not healthy:\n{tail}")
                time.sleep(0.05)

    def _healthy(self, m: Member) -> bool:
        if m.netns:
            argv = ["nsenter", f"--net=/run/netns/{m.netns}", "--", "curl", "-s", "-m", "1",
                    f"{m.client}/health"]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
            return '"health":"true"' in out
        try:
            return bool(httpx.get(f"{m.client}/health", timeout=1).json().get("health") == "true")
        except (httpx.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        for m in self.members:
            m.stop()


def local_cluster(work: Path, size: int = 1) -> EtcdCluster:
    members = [
        Member(
            name=f"m{i}",
            client=f"http://127.0.0.1:{free_port()}",
            peer=f"http://127.0.0.1:{free_port()}",
            data=work / f"m{i}",
        )
        for i in range(size)
    ]
    return EtcdCluster(members)
