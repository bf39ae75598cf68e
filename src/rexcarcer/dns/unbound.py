"""The unbound driver: its control protocol over the unix socket, no processes.

``unbound-control`` costs ~6 ms a call, nearly all process start; speaking its
protocol directly costs ~0.1 ms (notes/linux-testbed.md section 5). The
protocol (unbound's ``smallapp/unbound-control.c`` and ``daemon/remote.c``):
connect, send ``UBCT1 <command>\\n``; for the bulk commands ``local_datas`` and
``local_datas_remove`` send one record or name per line and then ``\\x04\\n``;
read the reply to EOF. A reply line that starts with ``error`` is a failure
(``local_datas`` reports bad lines and then ``added N datas``). A unix control
socket carries no TLS (unbound.conf(5), ``control-use-cert``).

Run-time data is lost when unbound reloads or restarts, so rex also persists
every published record in an ``include:`` file (``write_data_file``).
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from rexcarcer.dns import DnsError
from rexcarcer.dns.plan import Change
from rexcarcer.dns.records import (
    Record,
    check_line,
    ordered,
    parse_list_local_data,
    render_data_file,
    render_data_lines,
)

VERSION = 1
EOT = "\x04"


class UnboundUnreachable(DnsError):
    """Nothing answers on the control socket: unbound is not running (exit 32)."""

    exit_code = 32


class DnsBackend(Protocol):
    """What rex needs from a resolver; ``Unbound`` and ``FakeUnbound`` provide it."""

    def status(self) -> str:
        """A one-line description; raises ``UnboundUnreachable`` when it is down."""
        ...

    def add(self, records: Sequence[Record]) -> None: ...

    def remove(self, names: Sequence[str]) -> None:
        """Drop every record at each name."""
        ...

    def list(self) -> list[Record]:
        """Every local record it serves."""
        ...

    def has(self, record: Record) -> bool:
        """Whether it answers ``record``'s name and type (the sentinel check)."""
        ...


def apply(backend: DnsBackend, change: Change) -> None:
    if change.remove:
        backend.remove(change.remove)
    if change.add:
        backend.add(change.add)


def _clean(text: str) -> str:
    if any(c in text for c in "\n\r\x00\x04"):
        raise DnsError(f"refusing to send a control line with a line break: {text!r}")
    return text


class Unbound:
    """unbound's control socket, plus (optionally) its DNS listener for ``has``."""

    def __init__(
        self,
        control: Path,
        *,
        listener: tuple[str, int] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.control = control
        self.listener = listener
        self.timeout = timeout

    # -- the protocol ------------------------------------------------------------

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.control))
        except OSError as exc:
            sock.close()
            down = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
            cls = UnboundUnreachable if exc.errno in down else DnsError
            raise cls(
                f"unbound is not answering on its control socket {self.control}: {exc.strerror}",
                hint="start it with `rex host serve` (or `rex host setup`); `rex doctor` checks",
            ) from exc
        return sock

    def command(self, command: str, lines: Iterable[str] | None = None) -> str:
        """Send one command (with stdin ``lines`` for the bulk ones); the reply text."""
        payload = f"UBCT{VERSION} {_clean(command)}\n"
        if lines is not None:
            payload += "".join(_clean(line) + "\n" for line in lines) + EOT + "\n"
        sock = self._connect()
        try:
            sock.sendall(payload.encode("ascii"))
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (OSError, UnicodeEncodeError) as exc:
            raise DnsError(f"unbound control command {command.split()[0]!r} failed: {exc}") from exc
        finally:
            sock.close()
        reply = b"".join(chunks).decode("utf-8", errors="replace")
        errors = [line for line in reply.splitlines() if line.startswith("error")]
        if errors:
            raise DnsError(
                f"unbound refused {command.split()[0]}: {'; '.join(errors[:5])}",
                hint="this is a bug in rex if the records came from rex; run `rex dns check`",
            )
        return reply

    def local_data(self, line: str) -> None:
        self.command(f"local_data {check_line(line)}")

    def local_datas(self, lines: Sequence[str]) -> None:
        self.command("local_datas", [check_line(line) for line in lines])

    def local_datas_remove(self, names: Sequence[str]) -> None:
        self.command("local_datas_remove", names)

    def list_local_data(self) -> str:
        return self.command("list_local_data")

    # -- DnsBackend ------------------------------------------------------------------

    def status(self) -> str:
        lines = self.command("status").splitlines()
        version = next(
            (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("version")), "?"
        )
        return f"unbound {version} on {self.control}"

    def add(self, records: Sequence[Record]) -> None:
        self.local_datas([r.line() for r in records])

    def remove(self, names: Sequence[str]) -> None:
        self.local_datas_remove(names)

    def list(self) -> list[Record]:
        return parse_list_local_data(self.list_local_data())

    def has(self, record: Record) -> bool:
        if self.listener is not None:
            from rexcarcer.dns import probe

            try:
                rcode, count = probe.query(*self.listener, record.name, record.rtype)
                return rcode == 0 and count > 0
            except OSError:
                pass  # listener not reachable from here: ask the control socket instead
        return record in set(self.list())


class FakeUnbound:
    """An in-memory unbound for unit tests: run-time data, plus the persisted file
    that ``reload`` falls back to."""

    def __init__(self) -> None:
        self.data: set[Record] = set()
        self.persisted: set[Record] = set()
        self.up = True
        self.commands: list[str] = []

    def status(self) -> str:
        if not self.up:
            raise UnboundUnreachable("fake unbound is down")
        return "fake unbound"

    def add(self, records: Sequence[Record]) -> None:
        self.status()
        self.commands.append(f"local_datas {len(records)}")
        for r in records:
            check_line(r.line())
        self.data |= set(records)

    def remove(self, names: Sequence[str]) -> None:
        self.status()
        self.commands.append(f"local_datas_remove {len(names)}")
        gone = set(names)
        self.data = {r for r in self.data if r.name not in gone}

    def list(self) -> list[Record]:
        self.status()
        return ordered(self.data)

    def has(self, record: Record) -> bool:
        return record in self.data

    def reload(self) -> None:
        """What ``unbound-control reload`` does: run-time data gone, the file re-read."""
        self.data = set(self.persisted)


def wait_ready(
    backend: DnsBackend, *, timeout: float = 10.0, alive: Callable[[], bool] | None = None
) -> str:
    """Poll until the control socket answers; its status line. Gives up early
    when ``alive`` says the daemon exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return backend.status()
        except UnboundUnreachable:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise
            time.sleep(0.02)


HEADER = "generated by rex: the records it publishes\nrewritten on every change; edits are lost"


def write_data_file(path: Path, records: Iterable[Record]) -> None:
    """Atomically replace the ``include:`` file (a reader sees the old or the new)."""
    write_data_text(path, render_data_file(records, header=HEADER))


def write_data_lines(path: Path, rr_lines: Iterable[str]) -> None:
    write_data_text(path, render_data_lines(rr_lines, header=HEADER))


def write_data_text(path: Path, text: str) -> None:
    from rexcarcer.fsutil import atomic_write

    try:
        # 0644: unbound may read it as its own user; the temporary file is a dot
        # file, never matched by local_unbound's `include: conf.d/*.conf`
        atomic_write(path, text, mode=0o644, make_parents=True)
    except OSError as exc:
        raise DnsError(f"cannot write {path}: {exc}") from exc


def read_data_file(path: Path) -> list[Record]:
    """The records of an ``include:`` file rex wrote (for ``FakeUnbound`` and checks)."""
    out = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DnsError(f"cannot read {path}: {exc}") from exc
    for line in text.splitlines():
        line = line.strip()
        if line.startswith('local-data: "') and line.endswith('"'):
            name, ttl, _, rtype, data = line[13:-1].split(" ", 4)
            out.append(Record(name, rtype, data, int(ttl)))
    return out
