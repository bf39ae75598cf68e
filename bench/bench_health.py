"""Health and restart figures: `rex agent` supervising busybox jails, for real.

    sudo .venv/bin/python bench/bench_health.py [--runs 10] [--interval 1] [--idle 1]

Measures (in one run of this script, on one machine state):
- health failure -> DNS withdrawal: a jail with `HEALTHCHECK INTERVAL <interval>s
  RETRIES 1 TCP 80` and `SERVICE web PORT 80` has its httpd killed; the time
  until `web.svc` answers NXDOMAIN at unbound (queried every 10 ms), and back:
  httpd started again -> `web.svc` answers again;
- dead init -> running again: a jail's init killed with SIGKILL; the time until
  the agent has started it again (its /etc/rc finished: the start's health
  record says so), one fresh jail per run (so no restart backoff applies);
- the restart backoff: one jail killed again as soon as each restart is done.
This process enters a network namespace of its own (setns on its main thread),
so unbound, the agent, the bridge address 203.0.113.1 and the jails live only
there; it makes its own file pool and state directory and removes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dns import HOST, REPO, drop_pool_and_netns, enter_netns, sh


def wait(cond: Callable[[], bool], what: str, timeout: float = 120, step: float = 0.01) -> float:
    """Seconds until ``cond`` holds (polled every ``step``)."""
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"bench: not within {timeout:.0f} s: {what}")
        time.sleep(step)
    return time.perf_counter() - t0


def row(name: str, xs: list[float]) -> str:
    med, lo, worst = (round(x * 1000) for x in (statistics.median(xs), min(xs), max(xs)))
    return f"| {name} | {med} ms | {lo} ms | {worst} ms | {len(xs)} |"


class Bed:
    def __init__(self, tok: str, work: Path, idle: float) -> None:
        self.tok, self.work = tok, work
        self.env = {"PATH": os.environ["PATH"], "REX_ROOT": str(work / "state"),
                    "REX_RUNTIME": "linux", "REX_SUBNET": "203.0.113.0/24",
                    "REX_DATASET": f"{tok}/rex", "REX_HOST": "bench",
                    "REX_AGENT_SOCKET": f"/tmp/{tok}.sock"}  # fmt: skip
        if os.environ.get("PYTHONPATH"):
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.idle = idle
        self.agent: subprocess.Popen[bytes] | None = None

    def rex(self, *a: str | Path, check: bool = True) -> Any:
        return sh(sys.executable, "-m", "rexcarcer", *a, check=check, env=self.env)

    def start_agent(self) -> None:
        log = (self.work / "agent.log").open("ab")
        argv = [sys.executable, "-m", "rexcarcer", "agent", "--idle", str(self.idle)]
        self.agent = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)
        wait(lambda: Path(self.env["REX_AGENT_SOCKET"]).exists(), "the agent's socket", 30)

    def started(self, name: str) -> float:
        """When the jail last finished starting (its /etc/rc done): the health
        record the start writes, 0 when there is none."""
        db = sqlite3.connect(self.work / "state" / "state.db")
        try:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (f"health/{name}",)).fetchone()
        finally:
            db.close()
        return float(json.loads(row[0])["started"]) if row else 0.0

    def run_file(self, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.work / "state" / "run" / f"{name}.json")
                                              .read_text())  # fmt: skip
            return data
        except (OSError, ValueError):
            return None


def withdrawal(bed: Bed, runs: int, interval: float) -> list[str]:
    import dns.message
    import dns.query
    import dns.rcode

    src = bed.work / "web"
    shutil.copytree(REPO / "examples" / "hello", src)
    rexfile = src / "web.rex"
    shutil.copy(src / "hello.rex", rexfile)
    with rexfile.open("a") as f:
        f.write(f"HEALTHCHECK INTERVAL {interval:g}s TIMEOUT 500ms RETRIES 1 TCP 80\n")
    bed.rex("up", rexfile)
    q = dns.message.make_query("web.svc.rex.internal", "A")

    def listed() -> bool:
        return bool(dns.query.udp(q, HOST, timeout=2).answer)

    def gone() -> bool:
        return dns.query.udp(q, HOST, timeout=2).rcode() == dns.rcode.NXDOMAIN

    first = wait(listed, "web healthy and in web.svc")
    out, back = [], []
    for _ in range(runs):
        bed.rex("exec", "web", "--", "killall", "httpd")
        out.append(wait(gone, "web out of web.svc"))
        bed.rex("exec", "web", "--", "/usr/sbin/httpd", "-p", "80", "-h", "/var/www")
        back.append(wait(listed, "web back in web.svc"))
    bed.rex("destroy", "web")
    return [
        row(f"health failure -> web.svc withdrawn (INTERVAL {interval:g}s, RETRIES 1)", out),
        row("service fixed -> web.svc answers again", back),
        f"| `rex up` returned -> first passing probe -> web.svc answers | {first * 1000:.0f} ms "
        "| | | 1 |",
    ]


def restarts(bed: Bed, runs: int) -> list[str]:
    plain = bed.work / "plain.rex"
    plain.write_text("BASE busybox\n")
    lat = []
    for i in range(runs):
        name = f"phoenix{i}"
        bed.rex("up", plain, "--name", name)
        info = bed.run_file(name)
        assert info is not None
        before = bed.started(name)
        os.kill(info["init_pid"], signal.SIGKILL)
        t0 = time.perf_counter()
        wait(lambda n=name, b=before: bed.started(n) > b, f"{name} started again")
        lat.append(time.perf_counter() - t0)
    # one jail, killed again as soon as it is back: the backoff
    name = "phoenix0"
    gaps = []
    for _ in range(4):
        info = bed.run_file(name)
        assert info is not None
        before = bed.started(name)
        os.kill(info["init_pid"], signal.SIGKILL)
        t0 = time.perf_counter()
        wait(lambda b=before: bed.started(name) > b, "back", timeout=300)
        gaps.append(time.perf_counter() - t0)
    for i in range(runs):
        bed.rex("destroy", f"phoenix{i}", check=False)
    return [
        row(f"dead init (SIGKILL) -> running again (agent --idle {bed.idle:g})", lat),
        "| restart loop: kill right after each restart, 4 times | "
        + ", ".join(f"{g:.1f} s" for g in gaps)
        + " | | | 4 |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--idle", type=float, default=1.0)
    args = ap.parse_args()
    tok = "rexh" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-health-"))
    os.chmod(work, 0o755)
    sh("ip", "netns", "add", tok)
    enter_netns(tok)
    bed = Bed(tok, work, args.idle)
    out = ["| measure | median | min | worst | n |", "|---|---|---|---|---|"]
    try:
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "add", "rex0", "type", "bridge"],
            ["addr", "add", f"{HOST}/24", "dev", "rex0"],
            ["link", "set", "rex0", "up"],
        ):
            sh("ip", *cmd)
        bed.rex("host", "serve", "--detach")
        sh("truncate", "-s", "2G", work / "pool.img")
        sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
        sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
        bed.rex("base", "import", work / "bb", "busybox", "--version", "1")
        bed.start_agent()
        out += withdrawal(bed, args.runs, args.interval)
        out += restarts(bed, args.runs)
    finally:
        if bed.agent is not None:
            bed.agent.terminate()
            bed.agent.wait(timeout=30)
        listing = bed.rex("-o", "json", "ls", check=False)
        for jail in json.loads(listing.stdout) if listing.returncode == 0 else []:
            bed.rex("destroy", jail["name"], check=False)
        Path(bed.env["REX_AGENT_SOCKET"]).unlink(missing_ok=True)
        bed.rex("host", "serve", "--stop", check=False)
        drop_pool_and_netns(tok, work)
    for line in out:
        print(line)


if __name__ == "__main__":
    main()
