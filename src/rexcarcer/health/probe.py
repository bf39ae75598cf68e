"""The HEALTHCHECK probes, as the host agent runs them.

- ``CMD``: ``/bin/sh -c COMMAND`` through the runtime's exec in the jail, with
  the jail's environment; healthy when it exits 0. ``timeout(1)`` (FreeBSD base,
  busybox, coreutils) kills it inside the jail at the timeout; the runner's own
  timeout, a second later, stops the host side even if the jail's timeout(1)
  does not.
- ``TCP``: a connection to the jail's address and port, from the host.
- ``HTTP``: ``GET <path>`` to the jail's address and port over a plain socket;
  healthy on a 2xx or 3xx status (redirects are not followed).

Whatever the jail answers is hostile input: a probe reads at most the first
1 KiB (the HTTP status line) within its timeout, and reports it in a short,
printable reason, never more.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass

from rexcarcer.errors import RexError
from rexcarcer.model.jail import JailRecord
from rexcarcer.rexfile.ast import HealthCheck, Probe
from rexcarcer.runtime.base import Runtime, jail_env

REASON_MAX = 200
STATUS_MAX = 1024  # bytes read for the status line, at most
_STATUS_LINE = re.compile(r"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")
KILL_GRACE = 1.0  # the host-side timeout beyond the check's own


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    reason: str  # what the probe saw, short and printable


def printable(text: str) -> str:
    """``text`` with control characters replaced and cut to ``REASON_MAX``."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text.strip())
    return clean if len(clean) <= REASON_MAX else clean[: REASON_MAX - 3] + "..."


def probe(runtime: Runtime, rec: JailRecord, check: HealthCheck) -> Result:
    """Run ``check`` against jail ``rec`` once."""
    timeout = check.timeout_ms / 1000
    if check.probe is Probe.CMD:
        return cmd(runtime, rec, check.command, timeout)
    if rec.address is None:
        return Result(False, f"{check.target()}: the jail has no address")
    if check.probe is Probe.TCP:
        return tcp(rec.address.ip, check.port, timeout)
    return http_get(rec.address.ip, check.port, check.path, timeout)


def cmd(runtime: Runtime, rec: JailRecord, command: str, timeout: float) -> Result:
    # timeout(1) takes whole seconds in busybox: round up, never to 0
    secs = str(max(1, int(-(-timeout // 1))))
    argv = ["timeout", "-s", "KILL", secs, "/bin/sh", "-c", command]
    try:
        done = runtime.exec(rec.name, argv, env=jail_env(rec.env), timeout=timeout + KILL_GRACE)
    except RexError as exc:  # not running, or the host-side timeout
        return Result(False, printable(f"CMD: {exc.message}"))
    if done.ok:
        return Result(True, "CMD exited 0")
    tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
    status = done.exit_status
    why = f"timed out after {timeout:g} s" if status == 137 else f"exited {status}"
    return Result(False, printable(f"CMD {why}: {tail[0]}".rstrip(": ")))


def tcp(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int,
        timeout: float) -> Result:  # fmt: skip
    try:
        with socket.create_connection((str(address), port), timeout=timeout):
            return Result(True, f"TCP {port} accepted a connection")
    except TimeoutError:
        return Result(False, f"TCP {port}: no answer within {timeout:g} s")
    except OSError as exc:
        return Result(False, f"TCP {port}: {exc.strerror or exc}")


def http_get(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, path: str,
             timeout: float) -> Result:  # fmt: skip
    """``GET path`` and the status line of the answer, all within ``timeout``: a
    deadline for the whole exchange, not per read, so a jail that trickles its
    answer byte by byte cannot hold a probe longer (http.client's timeout is per
    socket operation). Only the status line is read (RFC 9112 4)."""
    what = f"HTTP {port} {path}"
    deadline = time.monotonic() + timeout
    host = f"[{address}]" if address.version == 6 else str(address)
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: rexcarcer-health\r\n"
               "Connection: close\r\n\r\n").encode("ascii")  # fmt: skip
    answer = b""
    try:
        with socket.create_connection((str(address), port), timeout=timeout) as sock:
            sock.sendall(request)
            while b"\r\n" not in answer and len(answer) < STATUS_MAX:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(STATUS_MAX)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        return Result(False, f"{what}: no answer within {timeout:g} s")
    except OSError as exc:
        return Result(False, printable(f"{what}: {exc.strerror or exc}"))
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    m = _STATUS_LINE.fullmatch(line)
    if m is None:
        return Result(False, printable(f"{what}: not an HTTP answer: {line[:60]!r}"))
    status = int(m.group(1))
    return Result(200 <= status < 400, printable(f"{what}: {status} {m.group(2) or ''}"))
