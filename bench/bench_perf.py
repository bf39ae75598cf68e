"""rex's own cost against the floor of what it does, in one table per run.

    sudo .venv/bin/python bench/bench_perf.py [--runs 5] [--max-jails 20]
        [--clients 4] [--parallel-jails 20] [--skip-scale] [--baseline OTHER/.venv/bin/rex]

The defaults finish in one to three minutes on a 2-core machine (about twice
that with a baseline); the issue's 500-jail figures take --max-jails 500
--clients 10 --parallel-jails 100 (growing to 100 jails took 40 s).

Every figure is the median and the worst of --runs runs, each a whole command
timed from before its fork to after its wait (Python's subprocess, about 1 ms
of that is the spawn, paid by floors and rex alike). One warm-up run before
each group is not counted. Teardown is never in a figure: `rex up` is timed
alone and `rex destroy` after it separately, the floor's set-up alone and its
teardown separately.

Rows (docs/performance.md says what each means and which goal it has):
- single jail: the floor (zfs clone, netns, veth, address, the runtime's own
  start argv with /bin/true as the work), systemd-nspawn / bwrap / podman
  running /bin/true on the same root, `rex up` (cached image to a running jail
  with its DNS records published), `rex destroy`, `rex exec` against raw
  nsenter, `rex --help` against `python -c pass`, `rex plan` of an unchanged
  file, `rex ls`;
- --parallel-jails `rex up` from --clients parallel clients against the same
  number in sequence: total and each;
- growth to --max-jails jails: `rex up`, `rex ls`, one DNS publish, the agent's RSS;
- where the time goes: import times of `rex --help`, programs one `rex up` runs.
Each rex figure without and with a running `rex agent --no-api` (the CLI
uses its UNIX socket when it answers). With --baseline, every rex row is also
measured for that rex, run by run in turn with this one (this, baseline, this,
...), each with its own state directory, dataset, namespace and unbound.

The bench makes its own file pool, network namespaces and state directories,
runs everything in namespaces of its own, and removes all of it at the end,
also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from perfrig import (
    BenchError,
    Cleanup,
    Netns,
    Side,
    destroy_pool,
    kill_leftovers,
    make_pool,
    run,
    side_token,
    sweep_netns,
    teardown_side,
)
from perfrun import Bench, Floor

REPO = Path(__file__).resolve().parents[1]
REXFILE = "BASE busybox\nPROVISION RUN echo built > /built\nSERVICE s PORT 1\n"
# 203.0.113.0/24 holds 253 jails; a bigger run gets an IPv6 documentation /64
SUBNET4, SUBNET6 = "203.0.113.0/24", "2001:db8:5e::/64"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    ap.add_argument("--max-jails", type=int, default=20, help="largest jail count (20)")
    ap.add_argument("--clients", type=int, default=4, help="parallel clients (4)")
    ap.add_argument("--grow-clients", type=int,
                    help="clients that grow the jail count between growth points (--clients); "
                    "zfs-fuse stopped answering near 385 jails grown by 10")  # fmt: skip
    ap.add_argument("--parallel-jails", type=int, default=20,
                    help="jails the clients bring up (20; at most --max-jails)")  # fmt: skip
    ap.add_argument("--skip-scale", action="store_true", help="no growth table")
    ap.add_argument("--skip-parallel", action="store_true", help="no parallel table")
    ap.add_argument("--no-agent", action="store_true", help="only the figures without an agent")
    ap.add_argument("--baseline", type=Path, help="another rex executable to compare with")
    ap.add_argument("--subnet", help=f"jail subnet ({SUBNET4}; {SUBNET6} above 250 jails)")
    args = ap.parse_args()
    args.grow_clients = args.grow_clients or args.clients
    if args.runs < 1 or args.max_jails < 2 or args.clients < 1 or args.grow_clients < 1:
        ap.error("--runs and the clients must be at least 1, --max-jails at least 2")
    args.parallel_jails = min(args.parallel_jails, args.max_jails)
    if args.subnet is None:
        args.subnet = SUBNET6 if args.max_jails + 3 > 250 and not args.skip_scale else SUBNET4
    return args


def preflight(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root (zfs, network namespaces)")
    need = ["zpool", "zfs", "ip", "unshare", "nsenter", "unbound", "busybox"]
    absent = [t for t in need if shutil.which(t) is None]
    if absent:
        raise BenchError(f"missing: {', '.join(absent)} (scripts/setup installs them)")
    if args.baseline is not None and not os.access(args.baseline, os.X_OK):
        raise BenchError(f"--baseline {args.baseline}: not an executable")


def rig(args: argparse.Namespace, tok: str, work: Path, cleanup: Cleanup) -> Bench:
    make_pool(tok, work)
    cleanup.add(f"zpool {tok}", lambda: destroy_pool(tok, work))
    cleanup.add("processes left under " + str(work), lambda: kill_leftovers(work))
    run(["zfs", "create", "-o", f"mountpoint={work / 'mnt' / 'floor'}", f"{tok}/floor"])
    bb = work / "busybox-root"
    run([REPO / "examples" / "make-busybox-base.sh", bb])
    rexfile = work / "b.rex"
    rexfile.write_text(REXFILE)
    rexes = [("this", Path(sys.executable).parent / "rex")]
    if args.baseline is not None:
        rexes.append(("baseline", args.baseline.resolve()))
    sides = []
    for key, rex in rexes:
        ns = Netns(f"{tok}{key[0]}")
        state = work / key / "state"
        cleanup.add(f"netns {ns.name}", ns.close)
        cleanup.add(f"jail netns of {key}", lambda s=state: sweep_netns(f"rex-{side_token(s)}-"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "REX_ROOT": str(state), "REX_DATASET": f"{tok}/{key}", "REX_SUBNET": args.subnet,
            "REX_RUNTIME": "linux", "REX_HOST": "bench", "REX_DNS": "on",
            "REX_AGENT_SOCKET": str(work / f"{key}.sock"),
        }  # fmt: skip
        side = Side(key, str(rex), work / key, ns, env)
        side.work.mkdir(parents=True)
        sides.append(side)
        cleanup.add(f"jails, agent and unbound of {key}",
                    lambda s=side: teardown_side(s, args.clients))  # fmt: skip
        progress(f"{key}: {rex}: base import, rex host serve, build")
        side.run("base", "import", bb, "busybox", "--version", "1")
        side.run("host", "serve", "--detach")
        side.image = side.run("build", rexfile).stdout.strip().splitlines()[-1]
    floor = Floor(tok, work, sides[0].image, args.subnet)
    cleanup.add("the floor's namespaces", floor.close)
    return Bench(args, sides, floor, rexfile, progress)


T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def header(args: argparse.Namespace, bench: Bench | None) -> list[str]:
    cmd = " ".join(["bench/bench_perf.py", *sys.argv[1:]])
    out = [
        f"# {cmd}",
        f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs; Linux "
        f"{platform.release()}; load average at start {LOAD0}",
        f"# runs {args.runs}; clients {args.clients}; jail subnet {args.subnet}; times: median "
        f"and worst of the runs; no teardown in any figure",
    ]
    for side in bench.sides if bench is not None else []:
        out.append(f"# {side.key}: {side.rex} ({Bench.describe(side)})")
    return out


LOAD0 = " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    args = parse()
    preflight(args)
    tok = "rexb" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix=f"{tok}-"))
    os.chmod(work, 0o755)  # unbound, when it drops to its user, must reach its files
    cleanup = Cleanup()
    cleanup.add(f"directory {work}", lambda: shutil.rmtree(work, ignore_errors=True))
    bench: Bench | None = None
    failed: BaseException | None = None
    with _sigterm_interrupts():
        try:
            bench = rig(args, tok, work, cleanup)
            bench.all()
        except (Exception, KeyboardInterrupt) as exc:
            failed = exc
        finally:
            progress("cleaning up")
            problems = cleanup.run()
    print("\n".join(header(args, bench)))
    if bench is not None:
        print("\n".join(bench.report()))
    for p in problems:
        print(f"# {p}")
    if failed is not None:
        kind = "interrupted" if isinstance(failed, KeyboardInterrupt) else f"failed: {failed}"
        print(f"# INCOMPLETE: the bench {kind}", file=sys.stderr)
        if not isinstance(failed, (BenchError, KeyboardInterrupt)):
            raise failed
        return 1
    return 1 if problems else 0


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    import signal

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
