"""The test rig of bench_perf.py: a file pool, network namespaces, one state
directory per rex under test, their agents and unbound, and the teardown of all
of it.

Every process the bench starts inherits the network namespace of the thread
that starts it (setns(2) changes the calling thread only; fork and vfork copy
the caller's namespaces), so each namespace gets threads of its own
(``Netns.call``, ``Netns.parallel``) and the bench itself stays in the
machine's namespace, where it changes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from perfstats import interpreter

T = TypeVar("T")
R = TypeVar("R")
CLONE_NEWNET = 0x40000000  # linux/sched.h
COMMAND_TIMEOUT = 900.0  # only against a hung command: no measured step comes near


class BenchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Done:
    argv: tuple[str, ...]
    elapsed: float  # seconds, from before the fork to after the wait
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Done:
        if self.returncode != 0:
            raise BenchError(f"{' '.join(self.argv)} exited {self.returncode}:\n"
                             f"{(self.stderr or self.stdout).strip()[-3000:]}")  # fmt: skip
        return self


def run(argv: Sequence[str | Path], env: dict[str, str] | None = None, check: bool = True,
        timeout: float = COMMAND_TIMEOUT) -> Done:  # fmt: skip
    """Run ``argv`` to completion; ``elapsed`` is what the bench reports."""
    args = tuple(str(a) for a in argv)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(args)} did not finish within {timeout:.0f} s") from exc
    done = Done(args, time.perf_counter() - t0, proc.returncode, proc.stdout, proc.stderr)
    return done.check() if check else done


def _enter(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


class Netns:
    """A network namespace this bench made, and threads that live in it."""

    def __init__(self, name: str) -> None:
        self.name = name
        run(["ip", "netns", "add", name])
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        self._one = self._executor(1)

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(workers, thread_name_prefix=self.name, initializer=_enter,
                                  initargs=(self.name,))  # fmt: skip

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self._one.submit(fn, *args).result()

    def parallel(self, fn: Callable[[R], T], items: Iterable[R], workers: int) -> list[T]:
        """fn over items from ``workers`` threads in the namespace, in order."""
        with self._executor(workers) as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        self._one.shutdown()
        run(["ip", "netns", "del", self.name], check=False)


@dataclass
class Side:
    """One rex under test ("this", or the --baseline one): its own namespace,
    state directory, dataset, unbound and, when asked, agent."""

    key: str
    rex: str
    work: Path
    netns: Netns
    env: dict[str, str]
    agent: subprocess.Popen[bytes] | None = None
    image: str = ""
    python: str | None = field(init=False)

    def __post_init__(self) -> None:
        with open(self.rex, "rb") as f:
            self.python = interpreter(f.read(512))

    def argv(self, *args: str | Path) -> list[str]:
        return [self.rex, *map(str, args)]

    def run(self, *args: str | Path, check: bool = True) -> Done:
        """``rex ARGS`` in this side's namespace."""
        return self.netns.call(run, self.argv(*args), self.env, check)

    def run_here(self, *args: str | Path, check: bool = True) -> Done:
        """``rex ARGS`` from the calling thread, which must be in the namespace."""
        return run(self.argv(*args), self.env, check)

    def jails(self) -> list[str]:
        listing = self.run("-o", "json", "ls", check=False)
        if listing.returncode != 0:
            return []
        return [str(j["name"]) for j in json.loads(listing.stdout)]

    # -- the agent ---------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return Path(self.env["REX_AGENT_SOCKET"])

    def start_agent(self) -> None:
        log = (self.work / "agent.log").open("ab")

        def spawn() -> subprocess.Popen[bytes]:
            # its own session: a Ctrl-C on the bench's terminal reaches the
            # bench, which stops the agent by PID in its cleanup
            argv = self.argv("agent", "--no-api", "--idle", "5")
            return subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

        self.agent = self.netns.call(spawn)
        log.close()
        deadline = time.monotonic() + 60
        while not _answers(self.socket_path):
            if self.agent.poll() is not None:
                raise BenchError(f"rex agent ({self.key}) exited {self.agent.returncode}: "
                                 f"{self.agent_log()[-2000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise BenchError(f"rex agent ({self.key}) did not answer on {self.socket_path}")
            time.sleep(0.02)

    def stop_agent(self) -> None:
        proc, self.agent = self.agent, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while self.socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # it removes its socket on the way out
        if _answers(self.socket_path):
            raise BenchError(f"something still answers on {self.socket_path}")

    def agent_log(self) -> str:
        try:
            return (self.work / "agent.log").read_text(errors="replace")
        except OSError:
            return ""


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def rss(pid: int, key: str = "VmRSS") -> int | None:
    from perfstats import proc_status_bytes

    try:
        return proc_status_bytes(Path(f"/proc/{pid}/status").read_text(), key)
    except OSError:
        return None


# -- the pool ------------------------------------------------------------------------


def make_pool(name: str, work: Path, size: str = "6G") -> None:
    img = work / "pool.img"
    run(["truncate", "-s", size, img])
    for _ in range(5):  # zfs-fuse may refuse while it is busy elsewhere
        made = run(["zpool", "create", "-o", "cachefile=none", "-m", work / "mnt", name, img],
                   check=False)  # fmt: skip
        # a failure reported for a pool it did create: the name is ours alone
        if made.returncode == 0 or run(["zpool", "list", name], check=False).returncode == 0:
            return
        time.sleep(1)
    raise BenchError(f"zpool create {name} failed: {made.stderr.strip()}")


def destroy_dataset(name: str, lock: Callable[[], contextlib.AbstractContextManager[object]],
                    tries: int = 100) -> None:  # fmt: skip
    """zfs-fuse says "busy" for a moment after the last process in a clone exits."""
    for _ in range(tries):
        with lock():
            done = run(["zfs", "destroy", "-r", name], check=False)
        if done.returncode == 0 or "does not exist" in done.stderr:
            return
        time.sleep(0.05)
    raise BenchError(f"zfs destroy {name}: {done.stderr.strip()}")


# -- teardown ------------------------------------------------------------------------


class Cleanup:
    """What to undo, undone in reverse order; each step runs even when one
    before it failed, and a second Ctrl-C does not cut it short."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, what: str, fn: Callable[[], object]) -> None:
        self.steps.append((what, fn))

    def run(self) -> list[str]:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        problems = []
        try:
            for what, fn in reversed(self.steps):
                try:
                    fn()
                except Exception as exc:
                    problems.append(f"cleanup: {what}: {exc}")
                    print(problems[-1], file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old)
        return problems


def teardown_side(side: Side, workers: int) -> None:
    """Stop the agent, destroy every jail, stop unbound; then kill by PID what
    rex left of its jails, if anything (the run files name their PIDs)."""
    with contextlib.suppress(BenchError):
        side.stop_agent()
    names = side.jails()
    if names:
        chunks = [names[i::workers] for i in range(min(workers, len(names)))]
        side.netns.parallel(lambda c: side.run_here("destroy", *c, check=False), chunks, workers)
    side.run("host", "serve", "--stop", check=False)
    state = Path(side.env["REX_ROOT"])
    for path in (state / "run").glob("*.json"):
        _kill_recorded(path, ("init_pid", "init_start"), ("unshare_pid", None))
    serve = state / "unbound" / "serve.json"
    with contextlib.suppress(OSError, ValueError):
        for proc in json.loads(serve.read_text()).values():
            _kill_exact(int(proc["pid"]), int(proc["start"]))


def _kill_recorded(path: Path, *keys: tuple[str, str | None]) -> None:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(path.read_text())
        for pid_key, start_key in keys:
            pid = info.get(pid_key)
            if isinstance(pid, int):
                _kill_exact(pid, info.get(start_key) if start_key else None)


def _kill_exact(pid: int, start: int | None) -> None:
    """SIGKILL ``pid`` only if it is still the process recorded (same start time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return
    if start is not None and int(fields[19]) != start:  # field 22, starttime (proc(5))
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def sweep_netns(prefix: str) -> None:
    listed = run(["ip", "netns", "list"], check=False).stdout.splitlines()
    for line in listed:
        name = line.split(" ")[0]
        if name.startswith(prefix):
            run(["ip", "netns", "del", name], check=False)


def destroy_pool(name: str, work: Path) -> None:
    for _ in range(50):
        if run(["zpool", "destroy", "-f", name], check=False).returncode == 0:
            break
        if run(["zpool", "list", name], check=False).returncode != 0:
            break
        _unmount_below(work / "mnt")
        time.sleep(0.2)
    else:
        raise BenchError(f"zpool destroy {name} failed")
    _unmount_below(work / "mnt")


def _unmount_below(top: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(top))]  # fmt: skip
    for mnt in sorted(mounts, reverse=True):
        run(["umount", "-l", mnt], check=False)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def side_token(state: Path) -> str:
    """The token rex puts in its jails' namespace names for this state directory."""
    from rexcarcer.platform.linux import instance_token

    return instance_token(state)


def kill_leftovers(work: Path) -> list[int]:
    """SIGKILL what the bench started and something failed to stop: processes
    whose command line or REX_ROOT names ``work`` (a directory of this run
    alone), or whose root lies under it (a jail's)."""
    mine = {os.getpid(), os.getppid()}
    top, marker = str(work), f"REX_ROOT={work}".encode()
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            root = os.readlink(proc / "root")
        except OSError:
            continue
        if top.encode() in cmdline or marker in environ or root.startswith(top + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed
