"""The one process runner: the only module that touches ``subprocess``.

Commands are argv lists, never shell strings. ``--debug`` logs ``+ argv`` for
every command; a failure raises ``CommandFailed`` with the command line, exit
status and stderr. Drivers take a ``Runner`` in their constructor; tests pass a
``ScriptedRunner`` that records every argv and replays saved output.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

from rexcarcer.errors import CommandFailed, NotSupported

log = logging.getLogger("rexcarcer.run")

Arg = str | os.PathLike[str]
OutputSink = Callable[[str], None]

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
        die_with_parent: bool = False,
    ) -> Completed:
        """Run to completion. ``on_output`` receives combined output line by line
        as it arrives (the tail is kept in ``stdout``); ``stdin``/``stdout`` pass
        binary streams straight through (pipelines such as ``zfs send``);
        ``die_with_parent`` has the kernel kill the child if rex dies first."""
        ...

    def spawn(
        self,
        argv: Sequence[Arg],
        *,
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
    ) -> int:
        """Start a long-lived process in a new session, detached from ours; return its PID."""
        ...


def _die_with_parent() -> None:
    # prctl(PR_SET_PDEATHSIG, SIGKILL): a `rex` killed with SIGKILL takes its
    # build step down with it instead of leaving it running on a dataset.
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)


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
        die_with_parent: bool = False,
    ) -> Completed:
        args = _argv(argv)
        log.debug("+ %s", shlex.join(args))
        child_env = dict(env) if env is not None else default_env()
        try:
            if interactive:
                code = subprocess.run(args, env=child_env, timeout=timeout, check=False).returncode
                result = Completed(args, code)
            elif on_output is not None:
                result = self._run_streaming(args, child_env, on_output, timeout, die_with_parent)
            elif stdin is not None or stdout is not None:
                result = self._run_piped(args, child_env, stdin, stdout, timeout)
            else:
                data = input.encode() if isinstance(input, str) else input
                proc = subprocess.run(
                    args,
                    input=data,
                    stdin=None if data is not None else subprocess.DEVNULL,
                    capture_output=True,
                    env=child_env,
                    timeout=timeout,
                    check=False,
                )
                result = Completed(
                    args,
                    proc.returncode,
                    proc.stdout.decode(errors="replace"),
                    proc.stderr.decode(errors="replace"),
                )
        except FileNotFoundError as exc:
            raise NotSupported(
                f"command not found: {args[0]}",
                hint="install the package that provides it (see `rex doctor`)",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(args, -1, f"timed out after {timeout} s") from exc
        return result.check() if check else result

    def _run_streaming(
        self,
        args: tuple[str, ...],
        env: dict[str, str],
        sink: OutputSink,
        timeout: float | None,
        die_with_parent: bool,
    ) -> Completed:
        tail: deque[str] = deque(maxlen=200)
        with subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent if die_with_parent else None,
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
    ) -> Completed:
        with subprocess.Popen(
            args,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
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
    ) -> int:
        args = _argv(argv)
        log.debug("+ %s &", shlex.join(args))
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=dict(env) if env is not None else default_env(),
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise NotSupported(f"command not found: {args[0]}") from exc
        finally:
            if not isinstance(out, int):
                out.close()
        return proc.pid


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
        die_with_parent: bool = False,
    ) -> Completed:
        args = _argv(argv)
        self.calls.append(args)
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
    ) -> int:
        args = _argv(argv)
        self.calls.append(args)
        self.next_pid += 1
        return self.next_pid
