"""The one process runner: the only module that touches ``subprocess``.

Commands are argv lists, never shell strings. ``--debug`` logs ``+ argv`` for
every command; a failure raises ``CommandFailed`` with the command line, exit
status and stderr. Drivers take a ``Runner`` in their constructor; tests pass a
``ScriptedRunner`` that records every argv and replays saved output.

Between fork and exec the child can join cgroups (cgroupjoin.py: it moves
itself into each group named by a ``cgroup.procs`` file, so a jail's first
process and everything it forks start inside its limits, with no window where
they run unlimited), set rlimits, and
ask to die with its parent. If any of that fails the command never runs, and the
caller gets a ``CommandFailed`` (status 126, "could not be executed") saying which
step failed and why.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import shlex
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import IO, NoReturn, Protocol

from rexcarcer import cgroupjoin
from rexcarcer.errors import CommandFailed, NotSupported

log = logging.getLogger("rexcarcer.run")

Arg = str | os.PathLike[str]
OutputSink = Callable[[str], None]
# resource.RLIMIT_* -> (soft, hard)
RLimits = Mapping[int, tuple[int, int]]
NO_RLIMITS: RLimits = MappingProxyType({})
# The POSIX shell's status for "found but could not be executed": the child
# failed before exec (cgroups, rlimits), so the command itself never ran.
SETUP_FAILED = 126

# What a child inherits when the caller gives no environment: enough to find
# tools and speak the C locale, nothing of the user's shell.
_INHERITED = ("PATH", "TERM", "HOME", "TMPDIR", "TZ")


def default_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"
    return env


def exit_status(returncode: int) -> int:
    """A command's status as sh(1) reports it in ``$?``: 128+N for a death by
    signal N (subprocess gives -N), the exit code otherwise. ``sys.exit(-N)``
    would exit 256-N (245 for SIGSEGV), which no shell script expects."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int  # as subprocess has it: -N when signal N killed the command
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def exit_status(self) -> int:
        """What a caller passes on as its own exit status (``rex exec``)."""
        return exit_status(self.returncode)

    def check(self) -> Completed:
        if self.returncode != 0:
            raise CommandFailed(self.argv, self.returncode, self.stderr or self.stdout[-2000:])
        return self


class Runner(Protocol):
    """Runs OS commands.

    >>> runner.run(["zfs", "list", "-H", "-o", "name", "tank/rex"]).stdout
    'tank/rex\\n'
    """

    def run(
        self,
        argv: Sequence[Arg],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        interactive: bool = False,
        tty: int | None = None,
        die_with_parent: bool = False,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> Completed:
        """Run to completion. ``on_output`` receives combined output line by line
        as it arrives (the tail is kept in ``stdout``); ``stdin``/``stdout`` pass
        binary streams straight through (pipelines such as ``zfs send``);
        ``tty`` (a pseudo-terminal's subsidiary side) is the child's standard
        input, output and error and, in a session of its own, its controlling
        terminal (``rex console`` through an agent);
        ``die_with_parent`` has the kernel kill the child if rex dies first;
        ``cgroups`` are ``cgroup.procs`` files the child joins and ``rlimits``
        the limits it sets, both before it execs."""
        ...

    def spawn(
        self,
        argv: Sequence[Arg],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> int:
        """Start a long-lived process in a new session, detached from ours; return
        its PID. ``cgroups`` and ``rlimits`` as for ``run``."""
        ...


@functools.cache
def _prctl() -> Callable[..., int]:
    # Resolved in the parent: the child between fork and exec should not import.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "prctl"):
        raise NotSupported(
            "die_with_parent needs Linux prctl(2)", hint="do not ask for it on this OS"
        )
    prctl: Callable[..., int] = libc.prctl
    return prctl


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class _ChildSetup:
    """What the child does between fork and exec (subprocess's ``preexec_fn``).

    Only system calls, in a fixed order: prctl(PR_SET_PDEATHSIG, SIGKILL), so a
    `rex` killed with SIGKILL takes its build step down with it; the move into
    each group (cgroupjoin.py); setrlimit(2). subprocess reports a
    failing preexec_fn only as "Exception occurred in preexec_fn", so the child
    first writes the step and the error into a close-on-exec pipe, which the
    parent reads when the start failed.
    """

    def __init__(self, die_with_parent: bool, cgroups: Sequence[Arg], rlimits: RLimits) -> None:
        self.cgroups = tuple(os.fspath(c) for c in cgroups)
        self.rlimits = tuple(
            (res, soft, hard, f"setrlimit({_rlimit_name(res)}, {soft}, {hard})")
            for res, (soft, hard) in rlimits.items()
        )
        self.prctl = _prctl() if die_with_parent else None
        self._read, self._write = os.pipe2(os.O_CLOEXEC)

    @classmethod
    def make(
        cls, die_with_parent: bool, cgroups: Sequence[Arg], rlimits: RLimits
    ) -> _ChildSetup | None:
        if not (die_with_parent or cgroups or rlimits):
            return None
        return cls(die_with_parent, cgroups, rlimits)

    def __call__(self) -> None:
        step = "start"
        try:
            if self.prctl is not None:
                step = "prctl(PR_SET_PDEATHSIG)"
                self.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            for path in self.cgroups:
                step = f"join cgroup {path}"
                cgroupjoin.join(path)
            for res, soft, hard, label in self.rlimits:
                step = label
                resource.setrlimit(res, (soft, hard))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(self._write, f"{step}: {exc}".encode(errors="replace"))
            raise

    def failure(self, args: tuple[str, ...]) -> CommandFailed:
        """The error for a start whose setup failed in the child (the child has
        exited by now, so its end of the pipe is closed)."""
        os.close(self._write)
        self._write = -1
        os.set_blocking(self._read, False)
        try:
            why = os.read(self._read, 4096).decode(errors="replace")
        except BlockingIOError:
            why = ""
        return CommandFailed(
            args,
            SETUP_FAILED,
            f"could not start: {why or 'the child failed before exec'}",
            hint="the command never ran: it could not join its cgroups or set its limits",
        )

    def close(self) -> None:
        for fd in (self._read, self._write):
            if fd >= 0:
                os.close(fd)
        self._read = self._write = -1


class _Terminal:
    """The child's setup, then its standard input (a terminal; subprocess has
    called setsid(2) by now) made its controlling terminal: TIOCSCTTY, tty(4)."""

    def __init__(self, setup: _ChildSetup | None) -> None:
        import fcntl
        import termios

        self.setup = setup
        self.ioctl = fcntl.ioctl  # resolved here: the child between fork and exec imports nothing
        self.request = termios.TIOCSCTTY

    def __call__(self) -> None:
        if self.setup is not None:
            self.setup()
        self.ioctl(0, self.request, 0)


def _rlimit_name(res: int) -> str:
    # dir() is sorted: the first name wins (RLIMIT_NOFILE before its alias RLIMIT_OFILE)
    names: dict[int, str] = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            names.setdefault(getattr(resource, name), name)
    return names.get(res, str(res))


# After a timeout the child is sent SIGKILL and given this long to go. A process
# blocked in a FUSE request (zfs-fuse stopped) can stay in uninterruptible sleep
# until the daemon answers (fuse(4): only requests not yet sent are aborted by a
# fatal signal), so rex does not wait for it: a thread reaps it whenever it dies.
KILL_GRACE = 2.0


def _run_captured(
    args: tuple[str, ...],
    env: dict[str, str],
    data: bytes | None,
    timeout: float | None,
    setup: _ChildSetup | None,
) -> Completed:
    """``subprocess.run(capture_output=True)`` whose timeout returns control even
    when the killed child cannot die yet: ``subprocess.run`` waits for the child
    without a limit after killing it (Lib/subprocess.py, ``run``: ``process.kill();
    process.wait()``), which hangs for as long as the child sleeps uninterruptibly."""
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=setup,
    )
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except BaseException:  # the timeout, or an interrupt: never leave it running
        abandon(proc, args)
        raise
    return Completed(args, proc.returncode, out.decode(errors="replace"),
                     err.decode(errors="replace"))  # fmt: skip


def abandon(
    proc: subprocess.Popen[bytes], args: tuple[str, ...], grace: float = KILL_GRACE
) -> None:
    """Kill ``proc`` and wait at most ``grace`` seconds for it; if it has not gone
    by then, a daemon thread reaps it when it does (no zombie, no wait here)."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("pid %d (%s) did not die after SIGKILL within %g s; reaping it later",
                    proc.pid, shlex.join(args), grace)  # fmt: skip
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()


def _argv(argv: Sequence[Arg]) -> tuple[str, ...]:
    return tuple(os.fspath(a) for a in argv)


@dataclass
class SubprocessRunner:
    """The real runner."""

    def run(
        self,
        argv: Sequence[Arg],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        interactive: bool = False,
        tty: int | None = None,
        die_with_parent: bool = False,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> Completed:
        args = _argv(argv)
        log.debug("+ %s", shlex.join(args))
        child_env = dict(env) if env is not None else default_env()
        setup = _ChildSetup.make(die_with_parent, cgroups, rlimits)
        try:
            if interactive:
                code = subprocess.run(
                    args, env=child_env, timeout=timeout, check=False, preexec_fn=setup
                ).returncode
                result = Completed(args, code)
            elif tty is not None:
                code = subprocess.run(
                    args, env=child_env, timeout=timeout, check=False, stdin=tty, stdout=tty,
                    stderr=tty, start_new_session=True, preexec_fn=_Terminal(setup),
                ).returncode  # fmt: skip
                result = Completed(args, code)
            elif on_output is not None:
                result = self._run_streaming(args, child_env, on_output, timeout, setup)
            elif stdin is not None or stdout is not None:
                result = self._run_piped(args, child_env, stdin, stdout, timeout, setup)
            else:
                data = input.encode() if isinstance(input, str) else input
                result = _run_captured(args, child_env, data, timeout, setup)
        except FileNotFoundError as exc:
            raise NotSupported(
                f"command not found: {args[0]}",
                hint="install the package that provides it (see `rex doctor`)",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(args, -1, f"timed out after {timeout:g} s", timed_out=True) from exc
        except subprocess.SubprocessError as exc:
            if setup is None:
                raise
            raise setup.failure(args) from exc
        finally:
            if setup is not None:
                setup.close()
        return result.check() if check else result

    def _run_streaming(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        sink: OutputSink,
        timeout: float | None,
        setup: _ChildSetup | None,
    ) -> Completed:
        tail: deque[str] = deque(maxlen=200)
        with subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=setup,
        ) as proc:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                tail.append(line)
                sink(line)
            code = proc.wait(timeout=timeout)
        text = "".join(tail)
        return Completed(args, code, text, text)

    def _run_piped(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        stdin: IO[bytes] | None,
        stdout: IO[bytes] | None,
        timeout: float | None,
        setup: _ChildSetup | None,
    ) -> Completed:
        with subprocess.Popen(
            args,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=setup,
        ) as proc:
            errbuf: list[bytes] = []
            assert proc.stderr is not None
            reader = threading.Thread(target=lambda: errbuf.append(proc.stderr.read()))  # type: ignore[union-attr]
            reader.start()
            out = proc.stdout.read() if proc.stdout is not None else b""
            code = proc.wait(timeout=timeout)
            reader.join()
        return Completed(
            args, code, out.decode(errors="replace"), b"".join(errbuf).decode(errors="replace")
        )

    def spawn(
        self,
        argv: Sequence[Arg],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> int:
        args = _argv(argv)
        log.debug("+ %s &", shlex.join(args))
        setup = _ChildSetup.make(False, cgroups, rlimits)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=dict(env) if env is not None else default_env(),
                start_new_session=True,
                preexec_fn=setup,
            )
        except FileNotFoundError as exc:
            raise NotSupported(f"command not found: {args[0]}") from exc
        except subprocess.SubprocessError as exc:
            if setup is None:
                raise
            raise setup.failure(args) from exc
        finally:
            if not isinstance(out, int):
                out.close()
            if setup is not None:
                setup.close()
        return proc.pid


@dataclass
class NoRunner:
    """A runner that runs nothing: what a dry run for another OS gets (``rex plan
    --platform``), so no command of that OS is ever tried on this host."""

    why: str = "this is a dry run for another platform"
    # Read-only queries answered as a fresh host of that platform would answer
    # them (argv -> exit status, stdout, stderr), so that a plan can be made
    # there: no address but the configured ones, none of rex's rules loaded.
    fresh: Mapping[tuple[str, ...], tuple[int, str, str]] = field(default_factory=dict)

    def _refuse(self, argv: Sequence[Arg]) -> NoReturn:
        raise NotSupported(f"not running {shlex.join(_argv(argv))}: {self.why}",
                           hint="run it on a host of that platform")  # fmt: skip

    def run(self, argv: Sequence[Arg], **_: object) -> Completed:
        args = tuple(_argv(argv))
        if args in self.fresh:
            return Completed(args, *self.fresh[args])
        self._refuse(argv)

    def spawn(self, argv: Sequence[Arg], **_: object) -> int:
        self._refuse(argv)


Reply = Completed | Callable[[tuple[str, ...]], Completed]


@dataclass
class ScriptedRunner:
    """A runner for tests: records every argv and answers from a script.

    Rules are ``(argv prefix, reply)``; the longest matching prefix wins. A
    command no rule matches succeeds with empty output, unless ``strict``.
    """

    rules: list[tuple[tuple[str, ...], Reply]] = field(default_factory=list)
    strict: bool = False
    calls: list[tuple[str, ...]] = field(default_factory=list)
    inputs: list[str | bytes | None] = field(default_factory=list)
    next_pid: int = 40000
    # per entry of ``calls`` (run and spawn alike): what the child was to join / set
    call_cgroups: list[tuple[str, ...]] = field(default_factory=list)
    call_rlimits: list[dict[int, tuple[int, int]]] = field(default_factory=list)

    def on(self, prefix: Sequence[str], reply: Reply | str = "", returncode: int = 0) -> None:
        if isinstance(reply, str):
            reply = Completed(tuple(prefix), returncode, reply, "" if returncode == 0 else reply)
        self.rules.append((tuple(prefix), reply))

    def _answer(self, args: tuple[str, ...]) -> Completed:
        best: tuple[tuple[str, ...], Reply] | None = None
        for prefix, reply in self.rules:
            if args[: len(prefix)] == prefix and (best is None or len(prefix) > len(best[0])):
                best = (prefix, reply)
        if best is None:
            if self.strict:
                raise AssertionError(f"unexpected command: {shlex.join(args)}")
            return Completed(args, 0)
        reply = best[1]
        done = reply(args) if callable(reply) else reply
        return Completed(args, done.returncode, done.stdout, done.stderr)

    def run(
        self,
        argv: Sequence[Arg],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        on_output: OutputSink | None = None,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
        interactive: bool = False,
        tty: int | None = None,
        die_with_parent: bool = False,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> Completed:
        args = _argv(argv)
        self._record(args, cgroups, rlimits)
        self.inputs.append(input)
        done = self._answer(args)
        if on_output is not None and done.stdout:
            for line in done.stdout.splitlines(keepends=True):
                on_output(line)
        if stdout is not None and done.stdout:
            stdout.write(done.stdout.encode())
        return done.check() if check else done

    def spawn(
        self,
        argv: Sequence[Arg],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        cgroups: Sequence[Arg] = (),
        rlimits: RLimits = NO_RLIMITS,
    ) -> int:
        args = _argv(argv)
        self._record(args, cgroups, rlimits)
        self.next_pid += 1
        return self.next_pid

    def _record(self, args: tuple[str, ...], cgroups: Sequence[Arg], rlimits: RLimits) -> None:
        self.calls.append(args)
        self.call_cgroups.append(_argv(cgroups))
        self.call_rlimits.append(dict(rlimits))
