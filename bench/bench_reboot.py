"""Host reboot figures: the agent bringing a whole host's jails back, for real.

    sudo flock -o /run/rexcarcer/tests.lock .venv/bin/python bench/bench_reboot.py [--jails 50]
                                                                          [--small 10]

A host with --small jails, then --jails jails (busybox, each with its
`<name>.jail` DNS name; one in five with a VOLUME), the jailer services and
the agent running as their systemd units do (tests/integration/reboot.py
``JAILER_ARGV``, ``unit_argv``). Each round the host "reboots" exactly as in
tests/integration/test_faults_reboot.py (``simulate_reboot``: everything rex
runs killed at once, its namespaces, the host's network namespace, the jails'
cgroups and `$REX_ROOT/run` gone, a new boot id), then the units start again,
and the bench measures from the moment the agent is started:

- running: the jail's start finished (/etc/rc done): its health record names
  the new boot, with the time the start wrote;
- published: its DNS name answers with its address at unbound, and the address
  answers a ping from the host (rex's published names are kept in unbound's
  include file, so a name alone answers as soon as unbound does).

Printed: jails, time to all running, time to all published, median per jail
(the median gap between two consecutive jails' starts finishing). This process
enters a network namespace of its own (setns on its main thread) and makes its
own file pool and state directory; it removes everything at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dns import HOST, REPO, drop_pool_and_netns, enter_netns, sh
from tests.integration.reboot import (
    JAILER_ARGV,
    drop_cgroups,
    new_boot,
    simulate_reboot,
    token,
    unit_argv,
)

ZONE = "rex.internal"


class Bed:
    def __init__(self, tok: str, work: Path) -> None:
        self.tok, self.work = tok, work
        self.boot_file = work / "boot_id"
        new_boot(self.boot_file)
        self.env = {"PATH": os.environ["PATH"], "REX_ROOT": str(work / "state"),
                    "REX_RUNTIME": "linux", "REX_SUBNET": "203.0.113.0/24",
                    "REX_DATASET": f"{tok}/rex", "REX_HOST": "bench",
                    "REX_TESTING": "1", "REX_BOOT_ID_FILE": str(self.boot_file)}  # fmt: skip
        if os.environ.get("PYTHONPATH"):
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.units: list[subprocess.Popen[bytes]] = []
        self.log = work / "units.log"

    @property
    def root(self) -> Path:
        return self.work / "state"

    def rex(self, *a: str | Path, check: bool = True) -> Any:
        return sh(sys.executable, "-m", "rexcarcer", *a, check=check, env=self.env)

    def boot(self) -> float:
        """Start the jailer's and the agent's units; the wall time the agent started."""
        with self.log.open("ab") as out:
            serve = [sys.executable, "-m", "rexcarcer", *JAILER_ARGV]
            self.units.append(subprocess.Popen(serve, env=self.env, stdout=out, stderr=out))
            t0 = time.time()
            agent = [sys.executable, "-m", "rexcarcer", *unit_argv()]
            self.units.append(subprocess.Popen(agent, env=self.env, stdout=out, stderr=out))
        return t0

    def wait_agent(self) -> None:
        sock = self.root / "run" / "agent.sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            if time.monotonic() > deadline:
                raise SystemExit("bench: the agent did not open its socket")
            time.sleep(0.05)

    def stop_units(self) -> None:
        for p in self.units:
            if p.poll() is None:
                p.terminate()
        for p in self.units:
            p.wait(timeout=60)
        self.units = []

    def reboot(self) -> None:
        pids = [p.pid for p in self.units if p.poll() is None]
        simulate_reboot(self.root, f"{self.tok}/rex", started=pids, boot_file=self.boot_file,
                        host_netns=self.tok)  # fmt: skip
        for p in self.units:
            p.wait(timeout=30)
        self.units = []
        enter_netns(self.tok)  # this process's thread still holds the old namespace

    def health(self) -> dict[str, dict[str, Any]]:
        db = sqlite3.connect(f"file:{self.root / 'state.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT key, value FROM kv WHERE key >= 'health/' AND "
                              "key < 'health0'").fetchall()  # fmt: skip
        finally:
            db.close()
        return {k.removeprefix("health/"): json.loads(v) for k, v in rows}


def make_jails(bed: Bed, names: list[str]) -> dict[str, str]:
    plain, vol = bed.work / "plain.rex", bed.work / "vol.rex"
    plain.write_text("BASE busybox\n")
    vol.write_text("BASE busybox\nVOLUME data /srv/data 16M\n")
    for i, name in enumerate(names):
        bed.rex("up", vol if i % 5 == 0 else plain, "--name", name)
    listing = json.loads(bed.rex("-o", "json", "ls").stdout)
    return {j["name"]: str(j["ips"][0]).split("/")[0] for j in listing}


def measure(bed: Bed, ips: dict[str, str]) -> dict[str, float]:
    """Reboot, boot, and time every jail back: the row's figures."""
    import dns.exception
    import dns.message
    import dns.query

    bed.reboot()
    boot = bed.boot_file.read_text().strip()
    t0 = bed.boot()
    bed.wait_agent()
    running: dict[str, float] = {}
    published: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(published) < len(ips):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: not back within 600 s: {sorted(set(ips) - set(published))}")
        for name, h in bed.health().items():
            if name in ips and name not in running and h.get("boot") == boot:
                running[name] = float(h["started"]) - t0
        for name in sorted(set(running) - set(published)):
            try:
                reply = dns.query.udp(dns.message.make_query(f"{name}.jail.{ZONE}", "A"), HOST,
                                      timeout=0.5)  # fmt: skip
            except (dns.exception.Timeout, OSError):
                break  # unbound not answering yet
            got = [rr.to_text() for rrset in reply.answer for rr in rrset]
            if got == [ips[name]] and sh("busybox", "ping", "-c", "1", "-W", "1", ips[name],
                                         check=False).returncode == 0:  # fmt: skip
                published[name] = time.time() - t0
        time.sleep(0.05)
    listing = json.loads(bed.rex("-o", "json", "ls").stdout)
    down = [j["name"] for j in listing if j["state"] != "running"]
    if down:
        raise SystemExit(f"bench: not running after the reboot: {down}")
    starts = sorted(running.values())
    gaps = [b - a for a, b in itertools.pairwise(starts)] or starts
    return {"jails": len(ips), "running": max(starts), "published": max(published.values()),
            "per_jail": statistics.median(gaps), "first": starts[0]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jails", type=int, default=50)
    ap.add_argument("--small", type=int, default=10)
    args = ap.parse_args()
    began = time.monotonic()
    tok = "rexr" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-reboot-"))
    os.chmod(work, 0o755)
    sh("ip", "netns", "add", tok)
    enter_netns(tok)
    sh("ip", "link", "set", "lo", "up")
    bed = Bed(tok, work)
    rows = []
    try:
        sh("truncate", "-s", "4G", work / "pool.img")
        sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
        sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
        bed.rex("base", "import", work / "bb", "busybox", "--version", "1")
        bed.boot()
        bed.wait_agent()
        names = [f"j{i:03d}" for i in range(args.jails)]
        ips = make_jails(bed, names[: args.small])
        rows.append(measure(bed, ips))
        bed.wait_agent()
        ips.update(make_jails(bed, names[args.small :]))
        rows.append(measure(bed, ips))
    finally:
        bed.stop_units()
        with contextlib.suppress(OSError):
            enter_netns(tok)
        listing = bed.rex("-o", "json", "ls", check=False)
        for jail in json.loads(listing.stdout) if listing.returncode == 0 else []:
            bed.rex("destroy", jail["name"], "--volumes", check=False)
        bed.rex("host", "serve", "--stop", check=False)
        drop_cgroups(token(bed.root))  # empty once the jails are destroyed
        drop_pool_and_netns(tok, work)
    print("| jails | agent start -> all running | -> all published (DNS + ping) "
          "| median per jail | first jail running |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['jails']} | {r['running']:.1f} s | {r['published']:.1f} s "
              f"| {r['per_jail'] * 1000:.0f} ms | {r['first']:.1f} s |")  # fmt: skip
    print(f"whole run (set-up, {args.jails} jails made, two reboots, clean-up): "
          f"{time.monotonic() - began:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
