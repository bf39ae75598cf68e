"""Cluster DNS figures: Debian's unbound under `rex host serve`, for real.

    sudo .venv/bin/python bench/bench_dns.py [--runs 15] [--bulk 1000] [--loaded 10000]
                                             [--no-jails]

Measures (medians; in one run of this script, on one machine state):
- the time from `rex up` returning to its jail's name resolving (0 when rex
  publishes before it returns), and `rex up` with DNS against REX_DNS=off;
- publishing one jail's records through the store, the control socket and the
  include: file (Publisher.publish / withdraw), with none and with --bulk jails
  already published; the same records as one raw `local_datas`;
- --bulk jails' records at once: computing them, one `local_datas`, the file;
- query latency (dnspython, UDP, in-process) with --loaded records in unbound.
This process enters a network namespace of its own (setns on its main thread),
so unbound, the bridge address 203.0.113.1 and the jails live only there; it
makes its own file pool and state directory and removes everything at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOST = "203.0.113.1"


def sh(*argv: str | Path, check: bool = True, env: dict[str, str] | None = None) -> Any:
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True,
                          env=env)  # fmt: skip


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET, for this (main) thread
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt(name: str, xs: list[float], unit: str = "ms") -> str:
    scale = 1e3 if unit == "ms" else 1e6
    med, lo = statistics.median(xs) * scale, min(xs) * scale
    return f"{name:60} median {med:9.3f} {unit}  (min {lo:9.3f}, n={len(xs)})"


def jail(i: int) -> dict[str, Any]:
    a, b = divmod(i + 2, 250)
    svc = {"name": f"svc{i % 50}", "port": 8000 + i % 50, "proto": "tcp"}
    return {"name": f"j{i}", "address": f"10.{a // 250}.{a % 250}.{b + 1}/8",
            "hostname": f"j{i}.jail.rex.internal", "services": [svc]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--bulk", type=int, default=1000)
    ap.add_argument("--loaded", type=int, default=10000)
    ap.add_argument("--no-jails", action="store_true", help="skip the rex up figures (no ZFS)")
    args = ap.parse_args()
    tok = "rexd" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-dns-"))
    os.chmod(work, 0o755)
    sh("ip", "netns", "add", tok)
    enter_netns(tok)  # from here on, every socket and child process is in `tok`
    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(work / "state"), "REX_RUNTIME": "linux",
           "REX_SUBNET": "203.0.113.0/24", "REX_DATASET": f"{tok}/rex"}  # fmt: skip
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    rex_argv = [sys.executable, "-m", "rexcarcer"]

    def rex(*a: str | Path, check: bool = True, extra: dict[str, str] | None = None) -> Any:
        return sh(*rex_argv, *a, check=check, env={**env, **(extra or {})})

    out: list[str] = []
    try:
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "add", "rex0", "type", "bridge"],
            ["addr", "add", f"{HOST}/24", "dev", "rex0"],
            ["link", "set", "rex0", "up"],
        ):
            sh("ip", *cmd)  # fmt: skip
        rex("host", "serve", "--detach")
        out += publishing(env, args)
        out += queries(env, args)
        if not args.no_jails:
            out += ups(rex, tok, work, args)
    finally:
        rex("host", "serve", "--stop", check=False)
        cleanup(rex, tok, work)
    for line in out:
        print(line)


def _host(env: dict[str, str]) -> Any:
    from rexcarcer.engine.host import open_host

    from rexcarcer.config import load_config

    return open_host(load_config(environ=env))


def publishing(env: dict[str, str], args: argparse.Namespace) -> list[str]:
    from rexcarcer.dns.hook import publisher_for
    from rexcarcer.dns.records import jail_records, sentinel
    from rexcarcer.dns.unbound import write_data_file

    host = _host(env)
    pub = publisher_for(host)
    one = jail(args.bulk + 1)  # an address none of the bulk jails has
    out = []
    pub.publish(one)  # warm up
    pub.withdraw(one["name"])
    pub_t: list[float] = []
    wd_t: list[float] = []
    for _ in range(args.runs):
        pub_t += timed(lambda: pub.publish(one), 1)
        wd_t += timed(lambda: pub.withdraw(one["name"]), 1)
    out.append(fmt("publish one jail (store + sentinel + local_datas + file)", pub_t))
    out.append(fmt("withdraw one jail", wd_t))
    lines = [r.line() for r in jail_records(one, "rex.internal")]
    raw = timed(lambda: pub.backend.local_datas(lines), args.runs)
    out.append(fmt(f"  raw: one local_datas of its {len(lines)} records", raw))
    probe = timed(lambda: pub.backend.has(sentinel("rex.internal")), args.runs)
    out.append(fmt("  raw: sentinel probe (one UDP query)", probe))
    recs = [jail(i) for i in range(args.bulk)]
    comp: list[Any] = []
    t = timed(lambda: comp.append([r for j in recs for r in jail_records(j, "rex.internal")]), 1)
    records = comp[0]
    out.append(fmt(f"{args.bulk} jails: compute + validate {len(records)} records", t))
    push = timed(lambda: pub.backend.add(records), 1)
    out.append(fmt(f"{args.bulk} jails: one local_datas of {len(records)} records", push))
    path = Path(env["REX_ROOT"]) / "bench-data.conf"
    out.append(fmt(f"{args.bulk} jails: write the include: file", timed(
        lambda: write_data_file(path, records), 1)))  # fmt: skip
    pub.backend.remove(sorted({r.name for r in records}))
    seq = timed(lambda: [pub.publish(j) for j in recs], 1)
    out.append(fmt(f"{args.bulk} jails published one by one (rex up path), total", seq))
    pub_t, wd_t = [], []
    for _ in range(args.runs):
        pub_t += timed(lambda: pub.publish(one), 1)
        wd_t += timed(lambda: pub.withdraw(one["name"]), 1)
    out.append(fmt(f"publish one jail with {args.bulk} published", pub_t))
    out.append(fmt(f"withdraw one jail with {args.bulk} published", wd_t))
    for j in recs:
        pub.withdraw(j["name"])
    host.close()
    return out


def queries(env: dict[str, str], args: argparse.Namespace) -> list[str]:
    import dns.message
    import dns.query

    from rexcarcer.dns.hook import publisher_for
    from rexcarcer.dns.records import jail_records

    host = _host(env)
    backend = publisher_for(host).backend
    n_jails = args.loaded // 4  # A, PTR, service A, SRV per jail
    records = [r for i in range(n_jails) for r in jail_records(jail(i), "rex.internal")]
    t = timed(lambda: backend.add(records), 1)
    out = [fmt(f"load {len(records)} records (one local_datas)", t)]

    def ask(name: str, rtype: str) -> Callable[[], object]:
        q = dns.message.make_query(name, rtype)
        return lambda: dns.query.udp(q, HOST, timeout=2)

    n = 1000
    asks = [("j77.jail.rex.internal", "A"), ("_svc7._tcp.svc.rex.internal", "SRV"),
            ("svc7.svc.rex.internal", "A"), ("nope.jail.rex.internal", "A")]  # fmt: skip
    for name, rtype in asks:
        ask(name, rtype)()
        out.append(fmt(f"query {name} {rtype} ({len(records)} loaded)", timed(ask(name, rtype), n),
                       "us"))  # fmt: skip
    backend.remove(sorted({r.name for r in records}))
    host.close()
    return out


def ups(rex: Callable[..., Any], tok: str, work: Path, args: argparse.Namespace) -> list[str]:
    import dns.message
    import dns.query

    sh("truncate", "-s", "2G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
    sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
    rex("base", "import", work / "bb", "busybox", "--version", "1")
    ex = REPO / "examples" / "hello" / "hello.rex"
    rex("up", ex)
    rex("destroy", "hello")  # the image is cached from here on
    q = dns.message.make_query("hello.jail.rex.internal", "A")
    delays, tries, up_dns, up_off = [], [], [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        rex("up", ex)
        t1 = time.perf_counter()
        n = 1
        while not dns.query.udp(q, HOST, timeout=2).answer:
            n += 1
        delays.append(time.perf_counter() - t1)
        tries.append(n)
        up_dns.append(t1 - t0)
        rex("destroy", "hello")
        up_off += timed(lambda: rex("up", ex, extra={"REX_DNS": "off"}), 1)
        rex("destroy", "hello")
    return [
        fmt("rex up returned -> name resolves (query included)", delays),
        f"{'  queries needed until it resolved':60} max {max(tries)} (1 = at once)",
        fmt("rex up, DNS on (cached image)", up_dns),
        fmt("rex up, REX_DNS=off (cached image)", up_off),
    ]


def cleanup(rex: Callable[..., Any], tok: str, work: Path) -> None:
    rex("destroy", "hello", check=False)
    drop_pool_and_netns(tok, work)


def drop_pool_and_netns(tok: str, work: Path) -> None:
    """Destroy the bench's pool ``tok``, its namespace ``tok`` and ``work``."""
    for _ in range(30):  # zfs-fuse answers "busy" for a while after the last unmount
        if sh("zpool", "list", tok, check=False).returncode != 0:
            break
        if sh("zpool", "destroy", "-f", tok, check=False).returncode == 0:
            break
        time.sleep(0.2)
    sh("ip", "netns", "del", tok, check=False)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
