"""``PUBLISH <hostport>:<port>[/tcp|udp] [ON <address>]`` (repeatable), parsed
from one line with ``file:line:col`` errors.

Only the syntax is checked here: whether the host port is free, below 1024
without an ``allow``, or the address one of the host's is the host's business
(netpolicy/publish.py), before ``rex up`` changes anything.
"""

from __future__ import annotations

import ipaddress
import re

from rexcarcer.errors import RexfileError
from rexcarcer.rexfile.ast import Pos, Proto, Publish
from rexcarcer.rexfile.lexer import Line, Token

PUBLISH_HINT = "write PUBLISH <hostport>:<port>[/tcp|udp] [ON <address>], e.g. PUBLISH 8080:80/tcp"
_SPEC = re.compile(r"([^:/]*):([^:/]*)(?:/(.*))?")
_DIGITS = re.compile(r"[0-9]+")


def _port(line: Line, text: str, at: int, what: str) -> int:
    if not text:
        raise line.error(at, f"expected a {what} (a number from 1 to 65535)", PUBLISH_HINT)
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise line.error(at, f"bad {what} {text!r}: expected a number from 1 to 65535",
                         PUBLISH_HINT)  # fmt: skip
    return int(text)


def publish(line: Line, keyword: Token) -> Publish:
    args = line.words(keyword.end)
    if not args:
        raise line.error(len(line.text), "expected <hostport>:<port> after PUBLISH", PUBLISH_HINT)
    spec = args[0]
    m = _SPEC.fullmatch(spec.text)
    if m is None:
        raise line.error(spec, f"expected <hostport>:<port>[/tcp|udp], not {spec.text!r}",
                         PUBLISH_HINT)  # fmt: skip
    host_port = _port(line, m.group(1), spec.start, "host port")
    port = _port(line, m.group(2), spec.start + len(m.group(1)) + 1, "jail port")
    proto = Proto.TCP
    if m.group(3) is not None:
        value = m.group(3).lower() if m.group(3).isascii() else m.group(3)
        if value not in ("tcp", "udp"):
            at = spec.start + len(m.group(1)) + len(m.group(2)) + 2
            raise line.error(at, f"expected tcp or udp after '/', not {m.group(3)!r}",
                             PUBLISH_HINT)  # fmt: skip
        proto = Proto(value)
    on = _on(line, args[1:])
    return Publish(host_port, port, proto, on, keyword.pos)


def _on(line: Line, rest: list[Token]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not rest:
        return None
    word = rest[0]
    if (word.text.upper() if word.text.isascii() else word.text) != "ON":
        raise line.error(word, f"unexpected {word.text!r}: expected ON <address> or the end "
                         "of the line", PUBLISH_HINT)  # fmt: skip
    if len(rest) < 2:
        raise line.error(len(line.text), "expected an address after ON", PUBLISH_HINT)
    if len(rest) > 2:
        raise line.error(rest[2], f"unexpected {rest[2].text!r}: PUBLISH ends after ON "
                         "<address>", PUBLISH_HINT)  # fmt: skip
    tok = rest[1]
    try:
        addr = ipaddress.ip_address(tok.text)
    except ValueError as exc:
        raise line.error(tok, f"{tok.text!r} is not an IPv4 or IPv6 address",
                         hint="ON takes one of the host's addresses, e.g. ON 198.51.100.7"
                         ) from exc  # fmt: skip
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
        raise line.error(tok, f"{addr} is not an address a port can be published on",
                         hint="name one of the host's own unicast addresses, or leave ON out "
                         "for all of them")  # fmt: skip
    return addr


def clash(seen: list[Publish], new: Publish, line: Line, keyword: Token) -> None:
    """Refuse a host port published twice by one file (same protocol, and the
    same address or one of them on every address)."""
    for old in seen:
        same_addr = old.on is None or new.on is None or old.on == new.on
        if old.proto == new.proto and old.host_port == new.host_port and same_addr:
            raise _dup(line, keyword, f"host port {new.host_port}/{new.proto} is published "
                       f"twice", old.pos)  # fmt: skip


def _dup(line: Line, keyword: Token, message: str, first: Pos) -> RexfileError:
    return line.error(keyword, f"{message} (first at line {first.line})",
                      hint="a host port goes to one jail port: remove one PUBLISH")  # fmt: skip
