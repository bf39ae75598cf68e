"""Time to rebuild the state of N jails from their datasets' properties.

    sudo .venv/bin/python bench/bench_rebuild.py [--jails 200] [--runs 3]

Makes its own file pool, network namespace and state directory (removed at the
end). One real jail ``j0`` is made with `rex up` and keeps running; the other
N-1 are clones of its dataset made with one `zfs clone` each, carrying a record
of their own (their name, address, host name; stopped) in ``rexcarcer:record``,
as `rex up` leaves it (bench/bench_lifecycle.py makes its 200 jails with 200
`rex up`s, which takes minutes on zfs-fuse; the rebuild reads only the datasets).
Each run deletes state.db and its backups, then times `rex --debug state
rebuild` and counts the zfs processes it ran (its ``+ zfs`` lines); then times
what every record write now adds (one ``zfs set`` of a record). DNS is off
(no unbound here); the identity hook checks every jail's certificate (the
clones carry j0's, which names j0: refused and noted, as a swapped-in one would be).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
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

from rexcarcer.model import recordprop
from rexcarcer.model.jail import Desired, JailRecord

REPO = Path(__file__).resolve().parents[1]
SUBNET = "203.0.113.0/24"
Rex = Callable[..., subprocess.CompletedProcess[str]]


def sh(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], check=check, capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jails", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not 1 <= args.jails <= 250:
        ap.error("--jails: 1 to 250 (one /24 of addresses)")
    tok = "rexr" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="rexbench-"))
    state = work / "state"
    parent = f"{tok}/rex"
    env = {"PATH": os.environ["PATH"], "REX_ROOT": str(state), "REX_DATASET": parent,
           "REX_SUBNET": SUBNET, "REX_RUNTIME": "linux", "REX_DNS": "off"}  # fmt: skip
    rex_bin = [str(Path(sys.executable).parent / "rex")]

    def rex(*a: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", f"--net=/run/netns/{tok}", "--", *rex_bin, *map(str, a)]
        return subprocess.run(argv, env=env, check=check, capture_output=True, text=True)

    sh("truncate", "-s", "2G", work / "pool.img")
    sh("zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", tok, work / "pool.img")
    sh("ip", "netns", "add", tok)
    try:
        t0 = time.perf_counter()
        make_jails(rex, work, parent, args.jails)
        setup = time.perf_counter() - t0
        rows = [run_once(rex, state) for _ in range(args.runs)]
        copy = copy_cost(parent, max(args.runs, 10))
    finally:
        rex("destroy", "j0", check=False)
        sh("zpool", "destroy", "-f", tok, check=False)
        sh("ip", "netns", "del", tok, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"setup: 1 rex up + {args.jails - 1} zfs clone in {setup:.1f} s (not timed below)")
    print(f"{'jails':>6} {'rebuild s (median)':>19} {'min s':>7} {'zfs processes':>14} runs")
    secs = [r[0] for r in rows]
    zfs = sorted({r[1] for r in rows})
    print(f"{args.jails:>6} {statistics.median(secs):>19.2f} {min(secs):>7.2f} "
          f"{','.join(map(str, zfs)):>14} {len(rows)}")  # fmt: skip
    print(
        f"the copy of one record onto its dataset (one zfs set, as every record write "
        f"now adds): median {statistics.median(copy) * 1000:.0f} ms over {len(copy)}"
    )


def make_jails(rex: Rex, work: Path, parent: str, n: int) -> None:
    sh(REPO / "examples" / "make-busybox-base.sh", work / "bb")
    rex("base", "import", work / "bb", "busybox", "--version", "1")
    rexfile = work / "j0.rex"
    rexfile.write_text("BASE busybox\nENV GREETING=hello\nSERVICE web PORT 80\n")
    rex("up", rexfile)
    text = sh("zfs", "get", "-H", "-o", "value", "rexcarcer:record", f"{parent}/jails/j0").stdout
    j0 = recordprop.decode({"record": text.strip()})
    sh("zfs", "snapshot", f"{parent}/jails/j0@bench")
    used = {str(j0.address.ip)} if j0.address else set()
    free = (f"203.0.113.{i}" for i in range(2, 255) if f"203.0.113.{i}" not in used)
    for i in range(1, n):
        name = f"j{i}"
        rec: JailRecord = j0.replace(
            name=name, hostname=f"{name}.jail.rex.internal", desired=Desired.STOPPED,
            address=ipaddress.ip_interface(f"{next(free)}/24"),
        )  # fmt: skip
        props = {"jail": name, "generation": "1", **recordprop.encode(rec)}
        opts = [a for k, v in props.items() for a in ("-o", f"rexcarcer:{k}={v}")]
        sh("zfs", "clone", *opts, f"{parent}/jails/j0@bench", f"{parent}/jails/{name}")


def copy_cost(parent: str, n: int) -> list[float]:
    """What each record write now adds: `zfs set rexcarcer:record=...` of j0's record."""
    text = sh("zfs", "get", "-H", "-o", "value", "rexcarcer:record", f"{parent}/jails/j0").stdout
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sh("zfs", "set", f"rexcarcer:record={text.strip()}", f"{parent}/jails/j0")
        out.append(time.perf_counter() - t0)
    return out


def run_once(rex: Rex, state: Path) -> tuple[float, int]:
    for f in state.glob("state.db*"):
        f.unlink()
    shutil.rmtree(state / "backups", ignore_errors=True)
    t0 = time.perf_counter()
    done = rex("--debug", "-o", "json", "state", "rebuild")
    took = time.perf_counter() - t0
    report = json.loads(done.stdout)
    zfs = sum(1 for ln in done.stderr.splitlines() if ln.startswith("+ zfs "))
    assert not report["skipped"], report["skipped"]
    return took, zfs


if __name__ == "__main__":
    main()
