"""The measurements of bench_perf.py: the floor and the peers, the rex rows,
the parallel clients, the growth, and where the time goes."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from perfrig import BenchError, Netns, Side, destroy_dataset, rss, run, sweep_netns
from perfstats import (
    Goal,
    GoalKind,
    Row,
    ScalePoint,
    duration,
    exec_profile,
    import_times,
    main_table,
    progress_steps,
    scale_points,
    scale_table,
)

Samples = dict[str, list[float]]


def zfs_lock() -> contextlib.AbstractContextManager[object]:
    """rex runs zfs-fuse's mounting commands one at a time under this flock
    (storage/zfs.py, serial_lock_for); the floor takes it as rex does."""
    from rexcarcer.storage.zfs import serial_lock_for

    path = serial_lock_for()
    if path is None:
        return contextlib.nullcontext()
    return _flock(path)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[object]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f


def floor_start_argv(token: str, mnt: Path, run_dir: Path, name: str) -> list[str]:
    """The runtime's own start argv for jail ``name`` under ``mnt``, with
    /bin/true as the work instead of /etc/rc and the wait; the waiter writes
    how it ended where the runtime keeps it (runtime/linux.py)."""
    from rexcarcer.runtime.linux import INIT, netns_name, start_argv

    argv = start_argv(netns_name(token, name), mnt / name, name,
                      status_file=run_dir / f"{name}.exit")  # fmt: skip
    argv[argv.index(INIT)] = "/bin/true"
    return argv


class Floor:
    """What starting a jail costs below rex: `zfs clone` of the image, the
    network namespace, veth, address (the runtime's own ``plumb_argvs``) and the
    runtime's own start argv (``start_argv``: nsenter, unshare, the SETUP
    script's /dev, pivot_root and capability drop in jailenter.py) with
    /bin/true as the work instead of the jail's init, run to completion. It
    lives in a namespace of its own, with its own bridge."""

    def __init__(self, tok: str, work: Path, image: str, subnet: str) -> None:
        from rexcarcer.run import SubprocessRunner
        from rexcarcer.runtime.linux import LinuxRuntime

        self.netns = Netns(f"{tok}f")
        self.token = tok[4:] + "f"
        net = ipaddress.ip_network(subnet)
        self.address = ipaddress.ip_interface(f"{net[2]}/{net.prefixlen}")
        host = ipaddress.ip_interface(f"{net[1]}/{net.prefixlen}")
        self.runtime = LinuxRuntime(SubprocessRunner(), run_dir=work / "floor-run", bridge="rex0",
                                    host_address=host, token=self.token)  # fmt: skip
        for argv in self.runtime.bridge_argvs():
            self.netns.call(run, argv)
        self.image, self.parent, self.mnt = image, f"{tok}/floor", work / "mnt" / "floor"
        with zfs_lock():
            run(["zfs", "clone", image, f"{self.parent}/peer"])
        self.peer_root = self.mnt / "peer"

    def start_argv(self, name: str) -> list[str]:
        self.runtime.run_dir.mkdir(parents=True, exist_ok=True)
        return floor_start_argv(self.token, self.mnt, self.runtime.run_dir, name)

    def once(self) -> dict[str, float]:
        return self.netns.call(self._once)

    def _once(self, name: str = "f") -> dict[str, float]:
        from rexcarcer.runtime.base import JailSpec, jail_env
        from rexcarcer.runtime.linux import netns_name, veth_name

        root, ds = self.mnt / name, f"{self.parent}/{name}"
        spec = JailSpec(name=name, root=root, hostname=name, address=self.address,
                        interface=self.runtime.bridge)  # fmt: skip
        start = self.start_argv(name)
        t0 = time.perf_counter()
        with zfs_lock():
            run(["zfs", "clone", self.image, ds])
        for argv in self.runtime.plumb_argvs(spec):
            run(argv)
        run(start, env=jail_env(()))
        t1 = time.perf_counter()
        run(["ip", "netns", "del", netns_name(self.token, name)])
        run(["ip", "link", "del", veth_name(self.token, name)], check=False)  # as rex does
        destroy_dataset(ds, zfs_lock)
        return {"up": t1 - t0, "down": time.perf_counter() - t1}

    def peers(self) -> dict[str, list[str] | str]:
        """name -> argv running /bin/true in a fresh environment on the floor's
        root filesystem, or why there is none."""
        root = str(self.peer_root)
        found: dict[str, list[str] | str] = {
            "systemd-nspawn": ["systemd-nspawn", "-D", root, "--private-network",
                               "--register=no", "--keep-unit", "-q", "/bin/true"],
            "bwrap": ["bwrap", "--unshare-all", "--die-with-parent", "--bind", root, "/",
                      "--proc", "/proc", "--dev", "/dev", "/bin/true"],
            "podman": ["podman", "run", "--rm", "--network=none", "--rootfs", root, "/bin/true"],
        }  # fmt: skip
        for name, argv in list(found.items()):
            if shutil.which(argv[0]) is None:
                found[name] = "not installed"
        return found

    def close(self) -> None:
        self.netns.close()
        sweep_netns(f"rex-{self.token}-")


PROBE = r"""
import ipaddress, json, os, sys, time
from rexcarcer.config import load_config
from rexcarcer.dns.hook import publisher_for
from rexcarcer.state.records import get_jail
from rexcarcer.wiring import open_host
host = open_host(load_config(environ=dict(os.environ)))
pub = publisher_for(host)
net, name = host.config.subnet, sys.argv[2]
rec = get_jail(host.store, sys.argv[1]).replace(
    name=name, hostname=f"{name}.jail.{host.config.zone}",
    address=ipaddress.ip_interface(f"{net[-2]}/{net.prefixlen}"))
print("ready", flush=True)
for _ in sys.stdin:
    t0 = time.perf_counter()
    pub.publish(rec)
    t1 = time.perf_counter()
    pub.withdraw(name)
    print(json.dumps([t1 - t0, time.perf_counter() - t1]), flush=True)
"""


class DnsProbe:
    """One jail's records published and withdrawn through the rex under test's
    own Publisher (store, sentinel check, unbound's control socket, the include:
    file), in a process of that rex's Python that stays up between runs, so
    that the figure is the publish and not Python's start. The template is a
    real jail's record under another name and a free address."""

    def __init__(self, side: Side, template: str) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.problem = "" if side.python else "n/a: not a Python console script"
        if side.python is None:
            return
        argv = [side.python, "-c", PROBE, template, "dnsprobe"]
        self.proc = side.netns.call(lambda: subprocess.Popen(
            argv, env=side.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))  # fmt: skip
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.problem = "n/a: " + self._error()

    def _error(self) -> str:
        assert self.proc is not None and self.proc.stderr is not None
        self.proc.kill()
        lines = self.proc.stderr.read().strip().splitlines()
        return lines[-1] if lines else f"exit {self.proc.wait()}"

    def once(self) -> float | None:
        if self.problem or self.proc is None:
            return None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.problem = "n/a: " + self._error()
            return None
        publish, _withdraw = json.loads(line)
        return float(publish)

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def interleave(funcs: dict[str, Callable[[], dict[str, float]]], runs: int) -> dict[str, Samples]:
    """Each function once (a warm-up, not counted), then ``runs`` rounds of
    each in turn, so that whatever else loads the machine loads all alike."""
    out: dict[str, Samples] = {k: {} for k in funcs}
    for i in range(runs + 1):
        for key, fn in funcs.items():
            got = fn()
            if i > 0:
                for what, secs in got.items():
                    out[key].setdefault(what, []).append(secs)
    return out


def yn(on: bool) -> str:
    return "yes" if on else "no"


class Bench:
    def __init__(self, args: argparse.Namespace, sides: list[Side], floor: Floor, rexfile: Path,
                 progress: Callable[[str], None]) -> None:  # fmt: skip
        self.args, self.sides, self.floor, self.rexfile = args, sides, floor, rexfile
        self.progress = progress
        self.s: Samples = {}  # "what|agent|who" -> seconds
        self.points: list[ScalePoint] = []
        self.peer_notes: dict[str, str] = {}
        self.where: list[str] = []
        self.served: dict[str, int] = {}  # requests each side's agent logged
        self.notes: list[str] = []

    def modes(self) -> list[bool]:
        return [False] if self.args.no_agent else [False, True]

    def key(self, what: str, on: bool | None, who: str) -> str:
        return f"{what}|{'-' if on is None else yn(on)}|{who}"

    def put(self, what: str, on: bool | None, who: str, xs: list[float]) -> None:
        self.s.setdefault(self.key(what, on, who), []).extend(xs)

    def get(self, what: str, on: bool | None, who: str) -> list[float]:
        return self.s.get(self.key(what, on, who), [])

    @contextlib.contextmanager
    def agents(self, on: bool) -> Iterator[None]:
        if not on:
            yield
            return
        try:
            for side in self.sides:
                side.start_agent()
            yield
        finally:
            for side in self.sides:
                side.stop_agent()
                self.served[side.key] = side.agent_log().count(" for uid ")

    @staticmethod
    def describe(side: Side) -> str:
        if side.python is None:
            return "not a Python console script"
        code = "import rexcarcer, os; print(os.path.dirname(rexcarcer.__file__))"
        where = run([side.python, "-c", code], check=False).stdout.strip()
        rev = run(["git", "-C", where, "log", "-1", "--format=%h %s"], check=False).stdout.strip()
        short = rev if len(rev) <= 72 else rev[:71] + "…"
        return f"{where}; {short or 'not a git checkout'}"

    def all(self) -> None:
        self.single()
        if not self.args.skip_parallel:
            self.parallel()
        if not self.args.skip_scale:
            self.scale()
        self.where_time_goes()

    # -- one jail ----------------------------------------------------------------------

    def single(self) -> None:
        for side in self.sides:
            side.run("up", self.rexfile, "--name", "x")
            published = side.run("-o", "json", "dns", "ls").stdout
            if "x.jail." not in published:
                raise BenchError(f"{side.key}: rex up x did not publish x.jail: {published[:300]}")
        info = json.loads((Path(self.sides[0].env["REX_ROOT"]) / "run" / "x.json").read_text())
        raw = ["nsenter", f"--target={info['init_pid']}", "--pid", "--mount", "--uts", "--ipc",
               "--net", "--root", "--wd", "/bin/true"]  # fmt: skip
        peers = self.floor.peers()
        py = [self.sides[0].python or "python3", "-c", "pass"]
        runs = self.args.runs
        for on in self.modes():
            with self.agents(on):
                self.progress(f"one jail, agent {yn(on)}: rex up, floor, peers")
                funcs: dict[str, Callable[[], dict[str, float]]] = {}
                if not on:
                    funcs["floor"] = self.floor.once
                    for name, argv in peers.items():
                        if isinstance(argv, str):
                            self.peer_notes[name] = argv
                        else:
                            funcs[f"peer {name}"] = self._peer(name, argv)
                for side in self.sides:
                    funcs[side.key] = lambda s=side: self._up_destroy(s, "u")
                got = interleave(funcs, runs)
                for who, rows in got.items():
                    for what, xs in rows.items():
                        self.put(what, None if who == "floor" or who.startswith("peer") else on,
                                 who, xs)  # fmt: skip
                self.progress(f"one jail, agent {yn(on)}: exec, --help, plan, ls")
                self._group(on, "exec", {"raw": lambda: run(raw)},
                            lambda s: s.run("exec", "x", "--", "true"))  # fmt: skip
                self._group(on, "help", {"python": lambda: run(py)}, lambda s: s.run("--help"))
                self._group(on, "plan", {}, lambda s: s.run("plan", self.rexfile, "--name", "x"))
                self._group(on, "ls", {}, lambda s: s.run("ls"))

    def _peer(self, name: str, argv: list[str]) -> Callable[[], dict[str, float]]:
        def once() -> dict[str, float]:
            if name in self.peer_notes:
                return {}
            done = self.floor.netns.call(run, argv, None, False)
            if done.returncode != 0:  # reported in its row; the others go on
                why = (done.stderr or done.stdout).strip().splitlines() or [""]
                self.peer_notes[name] = f"failed ({done.returncode}): {why[-1][:60]}"
                return {}
            return {"up": done.elapsed}

        return once

    def _up_destroy(self, side: Side, name: str) -> dict[str, float]:
        up = side.run("up", self.rexfile, "--name", name)
        return {"up": up.elapsed, "down": side.run("destroy", name).elapsed}

    def _group(self, on: bool, what: str, refs: dict[str, Callable[[], object]],
               rex: Callable[[Side], object]) -> None:  # fmt: skip
        funcs: dict[str, Callable[[], dict[str, float]]] = {}
        for name, fn in refs.items() if not on else ():
            funcs[name] = lambda fn=fn: {what: _elapsed(fn)}
        for side in self.sides:
            funcs[side.key] = lambda s=side: {what: _elapsed(lambda: rex(s))}
        for who, rows in interleave(funcs, self.args.runs).items():
            self.put(what, None if who in refs else on, who, rows.get(what, []))

    # -- parallel clients --------------------------------------------------------------

    def parallel(self) -> None:
        n, c = self.args.parallel_jails, self.args.clients
        names = [f"p{i}" for i in range(n)]
        for on in self.modes():
            with self.agents(on):
                for workers, what in ((c, "par"), (1, "seq")):
                    for side in self.sides:
                        self.progress(f"{n} x rex up by {workers} client(s), agent {yn(on)}, "
                                      f"{side.key}")  # fmt: skip
                        total, each = self.batch(side, names, workers)
                        self.put(f"{what} total", on, side.key, [total])
                        self.put(f"{what} each", on, side.key, each)
                        self.destroy(side, names)

    def batch(self, side: Side, names: list[str], workers: int) -> tuple[float, list[float]]:
        t0 = time.perf_counter()
        each = side.netns.parallel(
            lambda name: side.run_here("up", self.rexfile, "--name", name).elapsed, names, workers
        )
        return time.perf_counter() - t0, each

    def destroy(self, side: Side, names: list[str]) -> None:
        workers = min(self.args.clients, len(names))
        chunks = [names[i::workers] for i in range(workers)]
        side.netns.parallel(lambda c: side.run_here("destroy", *c), chunks, workers)

    # -- growth --------------------------------------------------------------------------

    def scale(self) -> None:
        have = {side.key: len(side.jails()) for side in self.sides}
        for n in scale_points(self.args.max_jails):
            for side in self.sides:
                new = [f"s{i}" for i in range(have[side.key], n)]
                if new:
                    c = self.args.grow_clients
                    self.progress(f"growing {side.key} to {n} jails ({len(new)} rex up, "
                                  f"{c} clients)")  # fmt: skip
                    total, _ = self.batch(side, new, c)
                    have[side.key] = n
                    self.notes.append(f"grew {side.key} to {n} jails: {len(new)} rex up from "
                                      f"{c} clients in {duration(total)}")  # fmt: skip
            for on in self.modes():
                with self.agents(on):
                    self.progress(f"{n} jails, agent {yn(on)}: rex up, rex ls, DNS publish")
                    self.points.append(self._point(n, on))

    def _point(self, n: int, on: bool) -> ScalePoint:
        p = ScalePoint(n, on)
        ups = interleave({s.key: lambda s=s: self._up_destroy(s, "probe") for s in self.sides},
                         self.args.runs)  # fmt: skip
        lss = interleave({s.key: lambda s=s: {"ls": s.run("ls").elapsed} for s in self.sides},
                         self.args.runs)  # fmt: skip
        probes = {s.key: DnsProbe(s, "x") for s in self.sides}
        try:
            dns = interleave({k: lambda pr=pr: _maybe(pr.once()) for k, pr in probes.items()},
                             self.args.runs)  # fmt: skip
        finally:
            for probe in probes.values():
                probe.close()
        for side in self.sides:
            p.up[side.key] = ups[side.key]["up"]
            p.ls[side.key] = lss[side.key]["ls"]
            if dns[side.key].get("dns"):
                p.dns[side.key] = dns[side.key]["dns"]
            else:
                p.notes[f"dns:{side.key}"] = probes[side.key].problem or "n/a"
            if on and side.agent is not None:
                got = rss(side.agent.pid)
                if got is not None:
                    p.rss[side.key] = got
        return p

    # -- where the time goes ---------------------------------------------------------------

    def where_time_goes(self) -> None:
        self.progress("where the time goes: -X importtime, strace")
        for side in self.sides:
            if side.python is not None:
                done = side.netns.call(run, [side.python, "-X", "importtime", side.rex, "--help"],
                                       side.env)  # fmt: skip
                total, top = import_times(done.stderr)
                tops = ", ".join(f"{name} {duration(t)}" for name, t in top)
                self.where.append(f"{side.key}: `rex --help` imports {duration(total)}: {tops}")
            done = side.run("up", self.rexfile, "--name", "steps")
            side.run("destroy", "steps")
            steps = "; ".join(f"{t:.2f} {step}" for t, step in progress_steps(done.stderr))
            self.where.append(f"{side.key}: `rex up` steps (s since the CLI set up its progress): "
                              f"{steps}; returned {done.elapsed:.2f} s after the fork")  # fmt: skip
            if shutil.which("strace") is None:
                self.where.append("strace: not installed")
                continue
            verbs = (("up", self.rexfile, "--name", "st"), ("ls",), ("exec", "x", "--", "true"))
            for verb in verbs:
                self.where.append(f"{side.key}: `rex {verb[0]}` runs: {self._execs(side, verb)}")
            side.run("destroy", "st")

    def _execs(self, side: Side, verb: tuple[str | Path, ...]) -> str:
        """The programs ``rex VERB`` runs, its children's included. strace -f
        follows the jail's init too, which never exits: so strace is stopped
        once rex has exited (``-I 1``: a signal makes it detach, and the jail
        runs on untraced)."""
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
            argv = ["strace", "-f", "-q", "-tt", "-I", "1", "-e", "trace=execve", "-o", out.name,
                    *side.argv(*verb)]  # fmt: skip
            quiet = subprocess.DEVNULL
            proc = side.netns.call(
                lambda: subprocess.Popen(argv, env=side.env, stdout=quiet, stderr=quiet)
            )
            try:
                text = _until_exited(Path(out.name), proc)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        got = exec_profile(text)
        took = f"{duration(got.total)} under strace" if got.total is not None else "?"
        each = [f"{name} {n}" + (f" ({duration(got.spent[name])})" if name in got.spent else "")
                for name, n in got.count.items()]  # fmt: skip
        return f"{took}; {sum(got.count.values())} programs: {', '.join(each)}"

    # -- the report ---------------------------------------------------------------------------

    def report(self) -> list[str]:
        out = ["", "## One jail", ""]
        out += main_table(self.rows(), len(self.sides) > 1)
        if self.points:
            keys = [s.key for s in self.sides]
            pair = "; this / baseline" if len(keys) > 1 else ""
            out += ["", f"## Growth (cells: median (worst){pair})", ""]
            out += scale_table(self.points, keys)
        if self.where:
            out += ["", "## Where the time goes (this run, one command each)", ""]
            out += [f"- {line}" for line in self.where]
        notes = list(self.notes)
        if self.served:
            served = ", ".join(f"{k} {v}" for k, v in self.served.items())
            notes.append(f"requests the agents logged serving (all agent rows): {served}")
        if notes:
            out += ["", *(f"- {line}" for line in notes)]
        return out

    def rows(self) -> list[Row]:
        this = self.sides[0].key
        other = self.sides[1].key if len(self.sides) > 1 else ""
        fl = self.get("up", None, "floor")
        rows = [Row("floor: zfs clone, netns, veth, address, start argv with /bin/true", this=fl)]
        for name, note in self.peer_notes.items():
            rows.append(Row(f"peer: {name} ... /bin/true", note=note))
        for key in self.s:
            what, _, who = key.split("|")
            if what == "up" and who.startswith("peer "):
                rows.append(Row(f"peer: {who[5:]} ... /bin/true", this=self.s[key]))

        def rex_rows(label: str, what: str, goal: Goal | None, ref: list[float]) -> None:
            for on in self.modes():
                mine, theirs = self.get(what, on, this), self.get(what, on, other)
                if mine:
                    rows.append(Row(label, yn(on), mine, theirs, ref, goal))

        rex_rows("rex up: cached image to running jail, DNS published", "up",
                 Goal(GoalKind.RATIO, 2.0), fl)  # fmt: skip
        fd = self.get("down", None, "floor")
        rows.append(Row("floor: ip netns del, zfs destroy (teardown)", this=fd))
        rex_rows("rex destroy", "down", None, fd)
        raw = self.get("exec", None, "raw")
        rows.append(Row("floor: nsenter --target PID --pid ... --root --wd /bin/true", this=raw))
        rex_rows("rex exec NAME -- true", "exec", Goal(GoalKind.DELTA, 0.015, "raw"), raw)
        py = self.get("help", None, "python")
        rows.append(Row("floor: python -c pass", this=py))
        rex_rows("rex --help", "help", Goal(GoalKind.RATIO, 2.0, "python"), py)
        rex_rows(
            "rex plan FILE (built, jail up, unchanged)", "plan", Goal(GoalKind.ABSOLUTE, 0.05), []
        )
        rex_rows("rex ls (1 jail)", "ls", None, [])
        if self.points:
            top = self.points[-1].jails
            goal = Goal(GoalKind.ABSOLUTE, 0.1)
            for p in (p for p in self.points if p.jails == top):
                mine, theirs = p.ls.get(this, []), p.ls.get(other, [])
                rows.append(Row(f"rex ls ({top} jails)", yn(p.agent), mine, theirs, goal=goal))
        n, c = self.args.parallel_jails, self.args.clients
        for on in self.modes():
            seq_total = self.get("seq total", on, this)
            if not seq_total:
                continue
            rows += [
                Row(f"{n} x rex up, {c} parallel clients: total", yn(on),
                    self.get("par total", on, this), self.get("par total", on, other),
                    seq_total, ref_name="of sequential"),
                Row(f"{n} x rex up, {c} parallel clients: each (worst = slowest)", yn(on),
                    self.get("par each", on, this), self.get("par each", on, other)),
                Row(f"{n} x rex up in sequence: total", yn(on), seq_total,
                    self.get("seq total", on, other)),
                Row(f"{n} x rex up in sequence: each (worst = slowest)", yn(on),
                    self.get("seq each", on, this), self.get("seq each", on, other)),
            ]  # fmt: skip
        return rows


def _until_exited(path: Path, strace: subprocess.Popen[bytes], timeout: float = 300) -> str:
    """strace's output once the first process it started has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        first = text.split(" ", 1)[0]
        # "PID  HH:MM:SS.micro +++ exited with 0 +++" (-tt puts the time between)
        if first.isdigit() and re.search(
            rf"^{first}\s+[\d:.]+\s+\+\+\+ (exited|killed)", text, re.M
        ):
            return text
        if strace.poll() is not None:
            return text
        time.sleep(0.05)
    raise BenchError(f"{' '.join(map(str, strace.args))} did not finish in {timeout:.0f} s")


def _elapsed(fn: Callable[[], object]) -> float:
    got = fn()
    elapsed = getattr(got, "elapsed", None)
    if not isinstance(elapsed, float):
        raise TypeError("expected a Done")
    return elapsed


def _maybe(x: float | None) -> dict[str, float]:
    return {} if x is None else {"dns": x}
