"""The instructions for running services (DESIGN section 1, "0.2"): each parsed
from one line into its typed AST value, with ``file:line:col`` errors. The
parser (parser.py) dispatches to these and checks the rules across lines.

::

    VOLUME <name> <path> [<size>]     a dataset of its own mounted at <path>
    HEALTHCHECK [INTERVAL <d>] [TIMEOUT <d>] [RETRIES <n>] CMD <command>
    HEALTHCHECK [options] TCP <port> [options]
    HEALTHCHECK [options] HTTP <port> <path> [options]
    RESTART no | on-failure | always
    DEPENDS <jail>                    (repeatable)

The health, restart and dependency instructions are carried out by the host
agent (docs/agent.md); they are only parsed here.
"""

from __future__ import annotations

import difflib
import posixpath
import re

from rexcarcer.errors import RexfileError
from rexcarcer.names import jail_name_problem
from rexcarcer.rexfile.ast import (
    DEFAULT_INTERVAL_MS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_MS,
    Depend,
    HealthCheck,
    Probe,
    RestartPolicy,
    Volume,
)
from rexcarcer.rexfile.lexer import Line, Token

VOLUME_HINT = "write VOLUME <name> <path> [<size>], e.g. VOLUME data /var/db/app 10G"
# A volume name is part of a dataset name (volumes/<jail>.<name>) and of
# `rex volume` arguments: one lower-case DNS label.
_VOLUME_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_SIZE = re.compile(r"([0-9]+)([KMGT]?)", re.I)
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_VOLUME = 1 << 20
# Where rex itself mounts or writes: a volume there would hide it.
RESERVED = ("/dev", "/proc", "/etc/ssl/rc", "/etc/rexcarcer")


def parse_size(text: str) -> int | None:
    """Bytes of ``512M``-style sizes (binary multiples), None if malformed."""
    m = _SIZE.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * UNITS[m.group(2).upper()]


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]}{unit}"
    return str(n)


def volume(line: Line, keyword: Token) -> Volume:
    args = line.shell_words(keyword.end)
    if len(args) < 2:
        what = "a volume name and a path" if not args else "a path inside the jail"
        raise line.error(len(line.text), f"expected {what} after VOLUME", VOLUME_HINT)
    if len(args) > 3:
        raise line.error(args[3], f"unexpected {args[3].text!r}: VOLUME takes a name, a path "
                         "and an optional size", VOLUME_HINT)  # fmt: skip
    name, path = args[0], args[1]
    if not _VOLUME_NAME.fullmatch(name.text):
        raise line.error(name, f"bad volume name {name.text!r}",
                         hint="a volume name is 1-63 lower-case letters, digits and '-', "
                         "not starting or ending with '-'")  # fmt: skip
    size = _size(line, args[2]) if len(args) == 3 else None
    return Volume(name.text, _path(line, path), size, keyword.pos)


def _path(line: Line, tok: Token) -> str:
    text = tok.text
    if not text.startswith("/"):
        example = "/" + text.lstrip("./")
        raise line.error(tok, f"volume path {text!r} is not an absolute path inside the jail",
                         hint=f"write it from the jail's root, e.g. {example}")  # fmt: skip
    if ".." in text.split("/"):
        raise line.error(tok, f"volume path {text!r} contains '..'",
                         hint="write the path without '..'")  # fmt: skip
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        # jail(8) splits a `mount` line on blanks (no fstab \040 decoding)
        raise line.error(tok, f"volume path {text!r} contains a blank or control character",
                         hint="choose a path without spaces")  # fmt: skip
    norm = posixpath.normpath(text)
    if norm == "/":
        raise line.error(tok, "a volume cannot be mounted on the jail's root",
                         hint="mount it on a directory, e.g. /var/db/app")  # fmt: skip
    for reserved in RESERVED:
        if norm == reserved or norm.startswith(reserved + "/"):
            raise line.error(tok, f"volume path {text!r} is under {reserved}, which rex manages",
                             hint="choose another directory")  # fmt: skip
    return norm


def _size(line: Line, tok: Token) -> int:
    size = parse_size(tok.text)
    hint = "write bytes or a K/M/G/T suffix (binary multiples), e.g. 10G or 512M"
    if size is None:
        raise line.error(tok, f"volume size {tok.text!r} is not a size", hint)
    if size < MIN_VOLUME:
        raise line.error(tok, f"volume size {tok.text} is below the minimum of 1M", hint)
    return size


def volume_clash(volumes: list[Volume], new: Volume, line: Line, keyword: Token) -> None:
    """Refuse a second volume of one name, on one path, or inside another."""
    for old in volumes:
        if old.name == new.name:
            raise _clash(line, keyword, f"volume {new.name} is declared twice", old)
        if old.path == new.path:
            raise _clash(line, keyword, f"volumes {old.name} and {new.name} are both "
                         f"mounted on {new.path}", old)  # fmt: skip
        outer, inner = (old, new) if len(old.path) < len(new.path) else (new, old)
        if inner.path.startswith(outer.path + "/"):
            raise _clash(line, keyword, f"volume {inner.name} ({inner.path}) is inside "
                         f"volume {outer.name} ({outer.path})", old)  # fmt: skip


def _clash(line: Line, keyword: Token, message: str, first: Volume) -> RexfileError:
    return line.error(keyword, f"{message} (first at line {first.pos.line})",
                      hint="give each volume its own name and directory")  # fmt: skip


# -- HEALTHCHECK -------------------------------------------------------------------

HEALTH_HINT = ("write HEALTHCHECK [INTERVAL 10s] [TIMEOUT 5s] [RETRIES 3] followed by one probe: "
               "CMD <command>, TCP <port> or HTTP <port> <path>")  # fmt: skip
OPTIONS = ("INTERVAL", "TIMEOUT", "RETRIES")
PROBES = ("CMD", "TCP", "HTTP")
_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h)", re.I)
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# The probes run every INTERVAL on the host agent: below 100 ms they would be
# load, not checks; a day is the longest that still reads as "periodic".
MIN_DURATION_MS, MAX_DURATION_MS = 100, 86_400_000
MAX_RETRIES = 100
_HTTP_PATH = re.compile(r"/[\x21-\x7e]{0,1023}")
_DIGITS = re.compile(r"[0-9]{1,5}")
_TRAILING_OPTION = re.compile(r"(?:^|[ \t])(INTERVAL|TIMEOUT|RETRIES)[ \t]+[0-9][0-9a-z]*\Z")


def parse_duration(text: str) -> int | None:
    """Milliseconds of ``500ms``, ``10s``, ``2m``, ``1h``; None if malformed."""
    m = _DURATION.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def _keyword(tok: Token) -> str:
    return tok.text.upper() if tok.text.isascii() else tok.text


class _Options:
    """INTERVAL, TIMEOUT and RETRIES, each at most once, before or after a probe."""

    def __init__(self, line: Line) -> None:
        self.line = line
        self.values: dict[str, int] = {}

    def take(self, tok: Token) -> int:
        """Read the option ``tok`` names and its value; the index after them."""
        line, name = self.line, _keyword(tok)
        if name in self.values:
            raise line.error(tok, f"HEALTHCHECK {name} is given twice", HEALTH_HINT)
        value = line.next_word(tok.end)
        if value is None:
            what = "a number" if name == "RETRIES" else "a duration"
            raise line.error(len(line.text), f"expected {what} after {name}", HEALTH_HINT)
        if name == "RETRIES":
            self.values[name] = _retries(line, value)
        else:
            self.values[name] = _duration(line, name, value)
        return value.end


def _duration(line: Line, name: str, tok: Token) -> int:
    ms = parse_duration(tok.text)
    hint = "write a whole number with a unit: ms, s, m or h, e.g. 500ms, 10s, 1m"
    if ms is None:
        raise line.error(tok, f"malformed {name} {tok.text!r}: expected a duration", hint)
    if not MIN_DURATION_MS <= ms <= MAX_DURATION_MS:
        raise line.error(tok, f"{name} {tok.text} is out of range: 100ms to 24h", hint)
    return ms


def _retries(line: Line, tok: Token) -> int:
    if not _DIGITS.fullmatch(tok.text) or not 1 <= int(tok.text) <= MAX_RETRIES:
        raise line.error(tok, f"bad RETRIES {tok.text!r}: expected a number from 1 to "
                         f"{MAX_RETRIES}", HEALTH_HINT)  # fmt: skip
    return int(tok.text)


def _unknown_word(line: Line, tok: Token) -> RexfileError:
    close = difflib.get_close_matches(_keyword(tok), OPTIONS + PROBES, n=1)
    hint = f"did you mean {close[0]}?" if close else HEALTH_HINT
    return line.error(tok, f"unknown HEALTHCHECK option {tok.text!r}: expected INTERVAL, "
                      "TIMEOUT, RETRIES or a probe (CMD, TCP, HTTP)", hint)  # fmt: skip


def healthcheck(line: Line, keyword: Token) -> HealthCheck:
    """Options first; then CMD takes the rest of the line, TCP a port and HTTP a
    port and a path, after which options may follow too."""
    opts = _Options(line)
    at = keyword.end
    while True:
        tok = line.next_word(at)
        if tok is None:
            raise line.error(len(line.text), "HEALTHCHECK has no probe: expected CMD, TCP or "
                             "HTTP", HEALTH_HINT)  # fmt: skip
        word = _keyword(tok)
        if word in OPTIONS:
            at = opts.take(tok)
        elif word in PROBES:
            break
        else:
            raise _unknown_word(line, tok)
    check, at = _probe(line, tok)
    while (tok := line.next_word(at)) is not None:  # options after a TCP or HTTP probe
        word = _keyword(tok)
        if word in PROBES:
            raise line.error(tok, "HEALTHCHECK takes one probe", HEALTH_HINT)
        if word not in OPTIONS:
            raise _unknown_word(line, tok)
        at = opts.take(tok)
    interval = opts.values.get("INTERVAL", DEFAULT_INTERVAL_MS)
    # an INTERVAL shorter than the default timeout shortens the timeout with it
    timeout = opts.values.get("TIMEOUT", min(DEFAULT_TIMEOUT_MS, interval))
    retries = opts.values.get("RETRIES", DEFAULT_RETRIES)
    return HealthCheck(check.probe, check.command, check.port, check.path, interval, timeout,
                       retries, keyword.pos)  # fmt: skip


def _probe(line: Line, tok: Token) -> tuple[HealthCheck, int]:
    """The probe starting at ``tok`` and the index after it."""
    word = _keyword(tok)
    if word == "CMD":
        command = line.rest(tok.end)
        if command is None:
            raise line.error(len(line.text), "expected a command after HEALTHCHECK CMD",
                             hint="write HEALTHCHECK CMD <command>, e.g. HEALTHCHECK CMD "
                             "pgrep -q nginx; put options before CMD")  # fmt: skip
        trailing = _TRAILING_OPTION.search(command.text)
        if trailing is not None:
            # everything after CMD is the command; an option there is a mistake
            raise line.error(command.start + trailing.start(1), f"{trailing.group(1)} after "
                             "HEALTHCHECK CMD would be part of the command",
                             hint="put options before CMD: HEALTHCHECK "
                             f"{trailing.group(1)} ... CMD <command>")  # fmt: skip
        return HealthCheck(Probe.CMD, command=command.text), len(line.text)
    port_tok = line.next_word(tok.end)
    if port_tok is None:
        raise line.error(len(line.text), f"expected a port after HEALTHCHECK {word}", HEALTH_HINT)
    if not _DIGITS.fullmatch(port_tok.text) or not 1 <= int(port_tok.text) <= 65535:
        raise line.error(port_tok, f"bad port {port_tok.text!r}: expected a number from 1 to "
                         "65535", HEALTH_HINT)  # fmt: skip
    port = int(port_tok.text)
    if word == "TCP":
        return HealthCheck(Probe.TCP, port=port), port_tok.end
    path_tok = line.next_word(port_tok.end)
    if path_tok is None:
        raise line.error(len(line.text), "expected a path after HEALTHCHECK HTTP <port>",
                         hint="write HEALTHCHECK HTTP 80 /health")  # fmt: skip
    if not _HTTP_PATH.fullmatch(path_tok.text) or "#" in path_tok.text:
        raise line.error(path_tok, f"bad HTTP path {path_tok.text!r}: expected '/' followed "
                         "by printable ASCII without spaces or '#'",
                         hint="write the path as it goes in the request, e.g. /health or "
                         "/status?full=1; percent-encode other characters")  # fmt: skip
    return HealthCheck(Probe.HTTP, port=port, path=path_tok.text), path_tok.end


# -- RESTART and DEPENDS --------------------------------------------------------------


def twice(line: Line, keyword: Token, what: str, first: int) -> RexfileError:
    """The error for an instruction given again that may be given once."""
    return line.error(keyword, f"{what} given twice (first at line {first})",
                      hint=f"remove one {what.split()[0]}")  # fmt: skip


RESTART_HINT = "write RESTART no, RESTART on-failure (the default) or RESTART always"


def restart(line: Line, keyword: Token) -> RestartPolicy:
    args = line.words(keyword.end)
    if not args:
        raise line.error(len(line.text), "expected a policy after RESTART", RESTART_HINT)
    if len(args) > 1:
        raise line.error(args[1], f"unexpected {args[1].text!r}: RESTART takes one policy",
                         RESTART_HINT)  # fmt: skip
    value = args[0].text.lower() if args[0].text.isascii() else args[0].text
    try:
        return RestartPolicy(value)
    except ValueError:
        raise line.error(args[0], f"unknown RESTART policy {args[0].text!r}",
                         RESTART_HINT) from None  # fmt: skip


def depends(line: Line, keyword: Token) -> Depend:
    hint = "write DEPENDS <jail>, one jail per line, e.g. DEPENDS db"
    args = line.words(keyword.end)
    if not args:
        raise line.error(len(line.text), "expected a jail name after DEPENDS", hint)
    if len(args) > 1:
        raise line.error(args[1], f"unexpected {args[1].text!r}: DEPENDS names one jail; "
                         "repeat DEPENDS for more", hint)  # fmt: skip
    problem = jail_name_problem(args[0].text)
    if problem is not None:
        raise line.error(args[0], f"bad jail name in DEPENDS: {problem}", hint)
    return Depend(args[0].text, keyword.pos)
