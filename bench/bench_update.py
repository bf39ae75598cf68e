"""Update downtime and rollback times of a jail that serves a page, on zfs-fuse.

    sudo .venv/bin/python bench/bench_update.py [--updates 20] [--rollbacks 5] [--every 0.002]

A busybox httpd jail (its page and /etc/rc are COPY'd, a VOLUME is mounted) is
updated in place --updates times by changing its page; a prober polls
http://JAIL/ every --every seconds from the host side of the jails' network
(the bench's own network namespace, where rex's bridge is) and writes down
when each answer came and what page it carried. Figures:

- update downtime: the last answer with the old page to the first answer with
  the new one; `rex up` wall time (the changed COPY step's build included); `rex
  up` start to the last old answer (how long the old generation keeps serving);
- an update whose /etc/rc exits 3, rolled back by `rex up` on its own (exit
  45): the last answer of the page to the page served again, `rex up` start to
  the page served again, and `rex up` wall time;
- `rex rollback NAME` after a good update: the last answer of the new page to
  the first answer of the previous one, and its wall time.

Without an agent (the CLI runs the engine itself), DNS on (`rex host serve`).
Makes its own file pool, namespace and state directory (bench/perfrig.py) and
removes them, also after a failure. Run it under the test lock on a shared
machine: `flock -o /run/rexcarcer/tests.lock .venv/bin/python bench/bench_update.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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
from probestats import Outage, Sample, intervals, ms, outage, parse_samples, row, table

REPO = Path(__file__).resolve().parents[1]
SUBNET = "203.0.113.0/24"
REXFILE = (
    "BASE busybox\nPROVISION COPY index.html /var/www/index.html\n"
    "PROVISION COPY rc /etc/rc\nVOLUME data /srv/data 64M\nSERVICE web PORT 80\n"
)
GOOD_RC = "#!/bin/sh\n/usr/sbin/httpd -p 80 -h /var/www\n"
BAD_RC = "#!/bin/sh\nexit 3\n"
UPDATE_FAILED = 45  # errors.UpdateFailed

# Runs in the bench's namespace: one HTTP/1.0 GET per period, a line per probe
# with the CLOCK_MONOTONIC time its answer came (shared by every process of the
# machine) and the page, or "!" when there was none. The 100 ms timeout bounds
# a probe sent while the jail is gone (its address has no interface then).
PROBER = r"""
import socket, sys, time
ip, every = sys.argv[1], float(sys.argv[2])
out = sys.stdout
out.write("ready\n"); out.flush()
due = time.monotonic()
while True:
    try:
        with socket.create_connection((ip, 80), timeout=0.1) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        ok = head.split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"200"]
        page = body.decode(errors="replace").strip().replace(" ", "_") if ok else ""
    except (OSError, IndexError):
        page = ""
    out.write(f"{time.monotonic():.6f} {page or '!'}\n"); out.flush()
    due += every
    time.sleep(max(0.0, due - time.monotonic()))
"""


class Prober:
    """The prober, started in ``ns`` against ``ip``; its samples in ``path``."""

    def __init__(self, ns: Netns, ip: str, every: float, path: Path) -> None:
        self.path = path
        with path.open("w") as out:
            argv = [sys.executable, "-c", PROBER, ip, str(every)]
            self.proc: subprocess.Popen[bytes] = ns.call(
                lambda: subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL,
                                         start_new_session=True))  # fmt: skip

    def samples(self) -> list[Sample]:
        return parse_samples(self.path.read_text())

    def until(self, what: str, fn: Callable[[list[Sample]], Outage | float | None],
              timeout: float = 120) -> Outage | float:  # fmt: skip
        """Poll the samples until ``fn`` returns a result (ValueError or None: not yet)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = fn(self.samples())
                if got is not None:
                    return got
            except ValueError:
                pass
            if self.proc.poll() is not None:
                raise BenchError(f"the prober exited {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"not within {timeout:.0f} s: {what}")
            time.sleep(0.02)

    def serving(self, page: str) -> None:
        def seen(samples: list[Sample]) -> float | None:
            return samples[-1].t if samples and samples[-1].body == page else None

        self.until(f"{page!r} served", seen)

    def stop(self) -> list[Sample]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        return self.samples()


class UpdateBench:
    def __init__(self, side: Side, work: Path, every: float) -> None:
        self.side, self.work, self.every = side, work, every
        self.app = work / "app"
        self.app.mkdir()
        (self.app / "app.rex").write_text(REXFILE)
        self.page, self.rounds, self.made = "", 0, 0
        self.pages: dict[str, str] = {}  # image -> the page it serves
        self.probers: list[Prober] = []  # stopped by the cleanup, whatever happens
        self.ip = ""
        self.samples: list[Sample] = []
        self.figures: dict[str, list[float]] = {}

    def write(self, page: str, rc: str = GOOD_RC) -> None:
        (self.app / "index.html").write_text(page + "\n")
        (self.app / "rc").write_text(rc)

    def add(self, key: str, value: float) -> None:
        self.figures.setdefault(key, []).append(value)

    def up(self, check: bool = True) -> tuple[float, float, int, str]:
        """``rex up``: its start (monotonic), wall time, exit status and stderr."""
        t0 = time.monotonic()
        done = self.side.run("up", self.app / "app.rex", check=check)
        return t0, done.elapsed, done.returncode, done.stderr

    def probe(self) -> Prober:
        self.rounds += 1
        prober = Prober(self.side.netns, self.ip, self.every, self.work / f"probe{self.rounds}")
        self.probers.append(prober)
        prober.serving(self.page)
        return prober

    def stop_probers(self) -> None:
        for prober in self.probers:
            prober.stop()

    def finish(self, prober: Prober) -> list[Sample]:
        samples = prober.stop()
        self.samples += samples
        return samples

    def first(self) -> None:
        self.page = "v0"
        self.write(self.page)
        self.up()
        self.served()
        listing = json.loads(self.side.run("-o", "json", "ls").stdout)
        self.ip = str(listing[0]["ips"][0]).split("/")[0]

    def update(self, counted: bool = True) -> None:
        self.made += 1
        old, new = self.page, f"v{self.made}"
        self.write(new)
        prober = self.probe()
        t0, wall, _, _ = self.up()
        got = prober.until(f"{new!r} served", lambda s: outage(s, old, new, t0))
        self.finish(prober)
        assert isinstance(got, Outage)
        self.page = new
        self.served()
        if not counted:
            return
        self.add("downtime", got.downtime)
        self.add("up", wall)
        self.add("old serves", got.last_old - t0)
        self.add("after up", got.first_new - (t0 + wall))

    def failed_update(self) -> None:
        page = self.page
        self.write(page, BAD_RC)
        prober = self.probe()
        t0, wall, status, err = self.up(check=False)
        if status != UPDATE_FAILED or "rolled back" not in err:
            raise BenchError(f"rex up with a failing /etc/rc exited {status}: {err[-2000:]}")
        got = prober.until(f"{page!r} served again", lambda s: outage(s, page, page, t0))
        self.finish(prober)
        assert isinstance(got, Outage)
        self.write(page)  # the definition of the running generation again: no change
        self.add("failed gap", got.downtime)
        self.add("failed back", got.first_new - t0)
        self.add("failed up", wall)

    def history(self) -> list[dict[str, object]]:
        gens: list[dict[str, object]] = json.loads(self.side.run("-o", "json", "history",
                                                                 "app").stdout)  # fmt: skip
        return gens

    def served(self) -> None:
        """Note which page the current generation's image serves."""
        current = next(g for g in self.history() if g["current"])
        self.pages[str(current["image"])] = self.page

    def rollback(self) -> None:
        """`rex rollback app` after a good update, as a user runs it: to the newest
        kept generation (engine/update.py), which after earlier rollbacks is not
        always the one the update replaced; its page is known by its image."""
        self.update(counted=False)
        new = self.page
        kept = [g for g in self.history() if not g["current"]]
        newest = max(kept, key=lambda g: int(str(g["generation"])))
        previous = self.pages[str(newest["image"])]
        prober = self.probe()
        t0 = time.monotonic()
        done = self.side.run("rollback", "app")
        got = prober.until(f"{previous!r} served", lambda s: outage(s, new, previous, t0))
        self.finish(prober)
        assert isinstance(got, Outage)
        self.page = previous
        self.add("rollback", got.downtime)
        self.add("rollback wall", done.elapsed)

    def report(self) -> list[str]:
        f = self.figures.get
        gaps = intervals(sorted(self.samples, key=lambda s: s.t))
        failed = sum(1 for s in self.samples if s.body == "!")
        rows = [
            row("update: last answer of the old page -> first answer of the new one",
                f("downtime", [])),
            row("update: `rex up` wall time (the changed COPY step built)", f("up", [])),
            row("update: `rex up` start -> last answer of the old page", f("old serves", [])),
            row("update: `rex up` returned -> first answer of the new page (< 0: before)",
                f("after up", [])),
            row("failed update (/etc/rc exits 3, rolled back by rex up): last answer -> "
                "page again", f("failed gap", [])),
            row("failed update: `rex up` start -> page served again", f("failed back", [])),
            row("failed update: `rex up` wall time (exit 45)", f("failed up", [])),
            row("`rex rollback app`: last new answer -> first previous one",
                f("rollback", [])),
            row("`rex rollback app`: wall time", f("rollback wall", [])),
        ]  # fmt: skip
        note = (f"probes: {len(self.samples)} ({failed} got no page); interval median "
                f"{ms(sorted(gaps)[len(gaps) // 2]) if gaps else '-'}, worst "
                f"{ms(max(gaps)) if gaps else '-'}")  # fmt: skip
        return [*table(["measure", "n", "median", "worst"], rows), "", note]


def rig(tok: str, work: Path, cleanup: Cleanup) -> Side:
    make_pool(tok, work, "2G")
    cleanup.add(f"zpool {tok}", lambda: destroy_pool(tok, work))
    cleanup.add("processes left under " + str(work), lambda: kill_leftovers(work))
    bb = work / "busybox-root"
    run([REPO / "examples" / "make-busybox-base.sh", bb])
    ns = Netns(tok)
    state = work / "this" / "state"
    cleanup.add(f"netns {ns.name}", ns.close)
    cleanup.add("jail netns", lambda: sweep_netns(f"rex-{side_token(state)}-"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
        "REX_ROOT": str(state), "REX_DATASET": f"{tok}/rex", "REX_SUBNET": SUBNET,
        "REX_RUNTIME": "linux", "REX_HOST": "bench", "REX_DNS": "on",
        "REX_AGENT_SOCKET": str(work / "agent.sock"),
    }  # fmt: skip
    side = Side("this", str(Path(sys.executable).parent / "rex"), work / "this", ns, env)
    side.work.mkdir(parents=True)
    cleanup.add("jails and unbound", lambda: teardown_side(side, 1))
    side.run("base", "import", bb, "busybox", "--version", "1")
    side.run("host", "serve", "--detach")
    return side


T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=20, help="updates in place (20)")
    ap.add_argument("--rollbacks", type=int, default=5,
                    help="failed updates; rex rollbacks, each after an update (5)")  # fmt: skip
    ap.add_argument("--every", type=float, default=0.002, help="probe period, s (0.002)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (zfs, network namespaces)")
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    tok = "rexu" + uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix=f"{tok}-"))
    os.chmod(work, 0o755)  # unbound, when it drops to its user, must reach its files
    cleanup = Cleanup()
    cleanup.add(f"directory {work}", lambda: shutil.rmtree(work, ignore_errors=True))
    bench: UpdateBench | None = None
    failed: BaseException | None = None
    try:
        side = rig(tok, work, cleanup)
        bench = UpdateBench(side, work, args.every)
        cleanup.add("probers", bench.stop_probers)
        progress("first rex up")
        bench.first()
        for i in range(args.updates):
            progress(f"update {i + 1}/{args.updates}")
            bench.update()
        for i in range(args.rollbacks):
            progress(f"failed update and rollback {i + 1}/{args.rollbacks}")
            bench.failed_update()
            bench.rollback()
    except (Exception, KeyboardInterrupt) as exc:
        failed = exc
    finally:
        progress("cleaning up")
        problems = cleanup.run()
    print(f"# bench/bench_update.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# started {started}; {os.cpu_count()} CPUs; Linux "
          f"{platform.release()}; load average at start {load0}")  # fmt: skip
    print(f"# probe every {args.every * 1000:g} ms from the jails' host side; no agent; "
          "times: median and worst")  # fmt: skip
    if bench is not None:
        print("\n".join(bench.report()))
    for p in problems:
        print(f"# {p}")
    if failed is not None:
        print(f"# INCOMPLETE: {failed!r}", file=sys.stderr)
        if not isinstance(failed, (BenchError, KeyboardInterrupt)):
            raise failed
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
