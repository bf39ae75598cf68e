"""Time to apply and to remove a published port, against a raw nft baseline.

    .venv/bin/python bench/bench_publish.py [--rounds N] [--jails J]

Runs as root in a network namespace of its own (made and removed here; the
script re-runs itself inside it with ``ip netns exec``), so nothing touches
the machine's firewall. The host holds the guard and J jails with one
published port each; one more jail, ``web``, is published and unpublished
N times:

- **rex apply / rex remove**: what ``PublishHook.started`` and ``stopped`` do
  (netpolicy/hook.py): read the store and the runtime, build the ruleset,
  read the table back (``nft -j list``), and load one ``nft -j -f -`` batch
  when it differs. The jails "run" as this process (their run files name its
  PID), so the runtime counts them running without starting any.
- **raw nft**: the same two batches (``firewall/nft.py batch``) piped to
  ``nft -j -f -`` with nothing else: the floor any implementation through
  nft's JSON pays.

Every round checks that the table holds what was asked (the port is there,
then gone), so a fast wrong answer cannot pass for a fast one.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rexcarcer.config import load_config
from rexcarcer.firewall import nft
from rexcarcer.host import Host
from rexcarcer.model.jail import JailRecord, PublishEntry, Status
from rexcarcer.netpolicy.hook import default_policy
from rexcarcer.platform.linux import LinuxPlatform
from rexcarcer.run import SubprocessRunner
from rexcarcer.runtime import procfs
from rexcarcer.state import records
from rexcarcer.state.memory import MemoryStore
from rexcarcer.storage.fake import FakeStorage


def _host(work: Path) -> Host:
    config = load_config(root=work / "state", environ={
        "REX_SUBNET": "203.0.113.0/24", "REX_RUNTIME": "linux", "REX_HOST": "bench",
        "REX_DATASET": "bench/rex"})  # fmt: skip
    runner = SubprocessRunner()
    return Host(config, runner, FakeStorage(work / "zfs", config.dataset),
                LinuxPlatform(runner, config), MemoryStore())  # fmt: skip


def _jail(host: Host, name: str, n: int, port: int) -> None:
    addr = ipaddress.ip_interface(f"203.0.113.{10 + n}/24")
    rec = JailRecord(name, host=host.config.host, status=Status.READY, address=addr,
                     publish=(PublishEntry(port, 80),))  # fmt: skip
    records.put_jail(host.store, rec)
    st = procfs.stat(os.getpid())
    run = host.config.root / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / f"{name}.json").write_text(
        json.dumps(
            {"init_pid": os.getpid(), "init_start": st.starttime if st else 0, "address": str(addr)}
        )
    )


def _table() -> str:
    return subprocess.run(["nft", "list", "table", "inet", "rexcarcer"], capture_output=True,
                          text=True, check=False).stdout  # fmt: skip


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(len(xs) * 0.9))]
    return f"median {statistics.median(xs) * 1e3:7.2f} ms   p90 {p90 * 1e3:7.2f} ms"


def inner(rounds: int, others: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rexbench-") as tmp:
        host = _host(Path(tmp))
        for i in range(others):
            _jail(host, f"j{i}", i + 1, 10000 + i)
        with_web, without = default_policy(), default_policy(without=("web",))
        without.guard(host)  # the guard and the other jails' ports, as on a live host
        _jail(host, "web", 0, 8080)
        apply_t: list[float] = []
        remove_t: list[float] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            with_web.guard(host)
            apply_t.append(time.perf_counter() - t0)
            assert "publish web tcp/8080" in _table()
            t0 = time.perf_counter()
            without.guard(host)
            remove_t.append(time.perf_counter() - t0)
            assert "publish web" not in _table()
        batches = [json.dumps(nft.batch(p.ruleset(host))) for p in (with_web, without)]
        raw: list[list[float]] = [[], []]
        for _ in range(rounds):
            for i, text in enumerate(batches):
                t0 = time.perf_counter()
                subprocess.run(["nft", "-j", "-f", "-"], input=text, text=True, check=True)
                raw[i].append(time.perf_counter() - t0)
                assert ("publish web" in _table()) == (i == 0)
        subprocess.run(["nft", "delete", "table", "inet", "rexcarcer"], check=False)
    print(f"published ports: {others} other jails' + web's; {rounds} rounds each")
    print(f"  rex apply  (PublishHook.started) {_ms(apply_t)}")
    print(f"  rex remove (PublishHook.stopped) {_ms(remove_t)}")
    print(f"  raw nft -j -f - (apply batch)    {_ms(raw[0])}")
    print(f"  raw nft -j -f - (remove batch)   {_ms(raw[1])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--jails", type=int, default=20, help="other jails with a published port")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args.rounds, args.jails)
        return
    if os.geteuid() != 0:
        sys.exit("bench_publish needs root (a network namespace and nftables)")
    ns = f"rexbench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inner",
                        "--rounds", str(args.rounds), "--jails", str(args.jails)],
                       check=True)  # fmt: skip
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
