"""What a request to the agents' API may be, decided from its method, path,
query and headers alone, before a byte of its body is read. Pure: no I/O.

agent/remote.py hands over the raw parts of each request (the path and query
as they came, never percent-decoded: a jail name is letters, digits and ``-``,
so an escape in one is an error, not a way to spell ``/``) and gets a ``Call``,
or a ``Refused`` carrying the status and the error to answer with:

    400  a bad name, parameter, Content-Length or body; an unknown or repeated
         query parameter; a body where none belongs; a compressed body
    404  no such endpoint          405  the wrong method (with ``Allow``)
    411  a body without a Content-Length (chunked)
    413  a Content-Length above the endpoint's cap

The caps: the build context of ``up`` (buildctx.MAX_CONTEXT, 1 GiB) and the
argv of ``exec`` (MAX_EXEC_BODY, 1 MiB); the other endpoints take no body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from urllib.parse import parse_qsl

from rexcarcer.buildctx import MAX_CONTEXT
from rexcarcer.cluster import AgentApiError
from rexcarcer.errors import RexError, UsageError
from rexcarcer.names import check_jail_name
from rexcarcer.rexfile.running import volume_name_ok

MAX_EXEC_BODY = 1 << 20  # an argv, not a file
MAX_CP_BODY = 1 << 30  # a tar into a jail (what one `rex cp` out of a jail may carry too)
MAX_STREAM = 1 << 50  # a zfs stream of a moving jail (counted as it is read)
MAX_ARGS = 4096
MAX_FILE_NAME = 255  # NAME_MAX on Linux and FreeBSD
MAX_ORIGIN = 4096  # PATH_MAX on Linux (FreeBSD: 1024)
MAX_QUERY_FIELDS = 8
MAX_TERMINAL = 1000  # rows or columns of a console
VERBS = ("start", "stop", "restart", "destroy")
VOLUME_VERBS = ("rm", "snapshot")
INCOMING_VERBS = ("begin", "receive", "commit", "abort")

_DIGITS = re.compile(r"[0-9]+")
_LABEL = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class Op(StrEnum):
    HEALTH = "health"
    UP = "up"
    LIFECYCLE = "lifecycle"
    EXEC = "exec"
    ROLLBACK = "rollback"
    HISTORY = "history"
    VOLUMES = "volumes"
    VOLUME = "volume"  # rm, snapshot of one volume
    CP_IN = "cp-in"
    CP_OUT = "cp-out"
    CONSOLE = "console"
    MOVE = "move"
    INCOMING = "incoming"  # begin, receive, commit, abort of a jail moving here


@dataclass(frozen=True, slots=True)
class Call:
    op: Op
    jail: str = ""
    verb: str = ""  # LIFECYCLE: start...; VOLUME: rm, snapshot; INCOMING: begin...
    file: str = ""  # the .rex file's name in the build context (UP)
    origin: str | None = None  # where the client read it, for messages (UP)
    body: int = 0  # bytes of body to read (with ``chunked``: until its end)
    volume: str = ""  # VOLUME
    params: tuple[tuple[str, str], ...] = ()  # the other parameters, checked
    chunked: bool = False  # a body of unannounced length (INCOMING receive)

    def param(self, key: str) -> str | None:
        return next((v for k, v in self.params if k == key), None)


class Refused(Exception):
    """Answer ``status`` with ``error``'s message, hint and exit code."""

    def __init__(self, status: int, error: RexError, *, allow: str | None = None) -> None:
        super().__init__(f"{status}: {error.message}")
        self.status = status
        self.error = error
        self.allow = allow


def _bad(message: str, hint: str | None = None) -> Refused:
    return Refused(400, AgentApiError(f"bad request: {message}", hint=hint))


@dataclass(frozen=True, slots=True)
class Head:
    """The parts of a request this module decides on."""

    method: str
    path: str  # raw, without the query
    query: str  # raw, without the '?'
    content_length: str | None = None  # the header as sent (None: absent)
    chunked: bool = False  # a Transfer-Encoding header
    encoded: bool = False  # a Content-Encoding other than identity


def parse(head: Head) -> Call:
    """The call ``head`` asks for, every name and parameter checked."""
    try:
        return _parse(head)
    except UsageError as exc:  # a bad jail or file name: exit 2, as on the command line
        raise Refused(400, exc) from exc


# (required, optional) query parameters of each endpoint, and how each is checked
_PARAMS: dict[tuple[Op, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    (Op.UP, ""): (("name", "file"), ("origin",)),
    (Op.LIFECYCLE, "destroy"): ((), ("volumes",)),
    (Op.ROLLBACK, ""): ((), ("to",)),
    (Op.VOLUME, "snapshot"): ((), ("label",)),
    (Op.CP_IN, ""): (("dst",), ()),
    (Op.CP_OUT, ""): (("src",), ()),
    (Op.CONSOLE, ""): (("rows", "cols"), ()),
    (Op.MOVE, ""): (("to",), ()),
    (Op.INCOMING, "receive"): (("part",), ("since",)),
    (Op.INCOMING, "commit"): (("snapshot", "revision"), ("osrelease",)),
}


def _parse(head: Head) -> Call:
    length = _length(head.content_length)
    if head.encoded:
        raise _bad("a compressed body", hint="send the body as it is (no Content-Encoding)")
    op, jail, verb, volume = _route(head.method, head.path)
    required, optional = _PARAMS.get((op, verb), ((), ()))
    params = _query(head.query, required=required, optional=optional)
    if op is Op.UP:
        call = Call(op, check_jail_name(params["name"]), file=check_file_name(params["file"]),
                    origin=_origin(params.get("origin")))  # fmt: skip
        return _with_body(call, length, head.chunked, MAX_CONTEXT, "the build context")
    checked = tuple((k, _check(k, v)) for k, v in sorted(params.items()))
    call = Call(op, check_jail_name(jail) if jail or op not in (Op.HEALTH, Op.VOLUMES) else "",
                verb, volume=volume, params=checked)  # fmt: skip
    if op is Op.EXEC:
        return _with_body(call, length, head.chunked, MAX_EXEC_BODY, "an exec request")
    if op is Op.CP_IN:
        return _with_body(call, length, head.chunked, MAX_CP_BODY, "a copy into a jail")
    if op is Op.INCOMING and verb == "receive":
        if length is not None and length > MAX_STREAM:
            raise Refused(413, AgentApiError(f"a stream of {length} bytes"))
        return replace(call, body=length or 0, chunked=head.chunked or length is None)
    if head.chunked or length:
        raise _bad(f"{head.method} {head.path} takes no body")
    return call


def _route(method: str, path: str) -> tuple[Op, str, str, str]:
    """(op, jail, verb, volume) of a path, the method checked."""
    parts = path.split("/")
    jail = verb = volume = ""
    if path == "/v1/health":
        op, allow = Op.HEALTH, "GET"
    elif path == "/v1/up":
        op, allow = Op.UP, "POST"
    elif path == "/v1/volumes":
        op, allow = Op.VOLUMES, "GET"
    elif len(parts) == 5 and parts[:3] == ["", "v1", "jails"]:
        jail, last = parts[3], parts[4]
        op, allow, verb = _jail_route(last, path)
    elif (len(parts) == 7 and parts[:3] == ["", "v1", "jails"] and parts[4] == "volumes"
          and parts[6] in VOLUME_VERBS):  # fmt: skip
        op, allow, jail, volume, verb = Op.VOLUME, "POST", parts[3], parts[5], parts[6]
        if not volume_name_ok(volume):
            raise _bad(f"bad volume name {volume[:64]!r}")
    elif len(parts) == 5 and parts[:3] == ["", "v1", "incoming"] and parts[4] in INCOMING_VERBS:
        op, allow, jail, verb = Op.INCOMING, "POST", parts[3], parts[4]
    else:
        raise Refused(404, AgentApiError(f"no such endpoint: {path[:200]!r}"))
    if method != allow:
        raise Refused(405, AgentApiError(f"{path[:200]} takes {allow}, not {method[:20]!r}"),
                      allow=allow)  # fmt: skip
    return op, jail, verb, volume


_JAIL_OPS = {
    "exec": (Op.EXEC, "POST"), "rollback": (Op.ROLLBACK, "POST"),
    "history": (Op.HISTORY, "GET"), "cp-in": (Op.CP_IN, "POST"),
    "cp-out": (Op.CP_OUT, "GET"), "console": (Op.CONSOLE, "GET"), "move": (Op.MOVE, "POST"),
}  # fmt: skip


def _jail_route(last: str, path: str) -> tuple[Op, str, str]:
    if last in VERBS:
        return Op.LIFECYCLE, "POST", last
    if last in _JAIL_OPS:
        op, allow = _JAIL_OPS[last]
        return op, allow, ""
    raise Refused(404, AgentApiError(f"no such endpoint: {path[:200]!r}"))


def _check(key: str, value: str) -> str:
    """One parameter's value, checked (the keys were checked against the endpoint)."""
    if key in ("dst", "src"):
        if not value.startswith("/") or not value.isprintable() or len(value) > MAX_ORIGIN:
            raise _bad(f"{key} must be an absolute path in the jail of 1-{MAX_ORIGIN} "
                       "printable characters")  # fmt: skip
    elif key in ("rows", "cols"):
        if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_TERMINAL:
            raise _bad(f"{key} must be a number from 1 to {MAX_TERMINAL}")
    elif key == "to" and _DIGITS.fullmatch(value):  # rollback --to: a generation
        if int(value) < 1 or len(value) > 9:
            raise _bad("the generation must be a number >= 1")
    elif key == "to":  # move --to: a host name
        if not _HOST.fullmatch(value):
            raise _bad(f"bad host name {value[:64]!r}")
    elif key == "revision":
        if not _DIGITS.fullmatch(value) or len(value) > 19:
            raise _bad("revision must be a number")
    elif key == "volumes":
        if value not in ("0", "1"):
            raise _bad("volumes is 0 or 1")
    elif key == "part":
        if not volume_name_ok(value):  # "root" or a volume's name
            raise _bad(f"bad part {value[:64]!r}")
    elif key in ("since", "snapshot", "label", "osrelease") and not _LABEL.fullmatch(value):
        raise _bad(f"{key} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def _query(raw: str, *, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw),
                          max_num_fields=MAX_QUERY_FIELDS, errors="strict")  # fmt: skip
    except ValueError as exc:  # UnicodeDecodeError too
        raise _bad(f"a malformed query: {exc}") from exc
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in (*required, *optional):
            raise _bad(
                f"unknown parameter {key[:40]!r}",
                hint=f"this endpoint takes {', '.join((*required, *optional)) or 'none'}",
            )
        if key in out:
            raise _bad(f"parameter {key!r} given twice")
        out[key] = value
    for key in required:
        if not out.get(key):
            raise _bad(f"parameter {key!r} is missing")
    return out


def _length(header: str | None) -> int | None:
    """RFC 9110 8.6: ``Content-Length = 1*DIGIT``; no sign, no spaces inside."""
    if header is None:
        return None
    value = header.strip(" \t")
    if not _DIGITS.fullmatch(value):
        raise _bad(f"Content-Length {header[:40]!r} is not a length")
    return int(value)


def _with_body(call: Call, length: int | None, chunked: bool, cap: int, what: str) -> Call:
    if length is None or chunked:
        raise Refused(411, AgentApiError(f"{what} needs a Content-Length"))
    if length > cap:
        raise Refused(413, AgentApiError(
            f"{what} is {length} bytes; at most {cap} are accepted",
            hint="copy large files with a base or a PROVISION RUN step instead"))  # fmt: skip
    if length == 0:
        raise _bad(f"{what} is empty")
    return replace(call, body=length)


def check_file_name(name: str) -> str:
    """The .rex file's name in the build context: one path component."""
    if (name in ("", ".", "..") or "/" in name or "\\" in name or not name.isprintable()
            or len(name.encode()) > MAX_FILE_NAME):  # fmt: skip
        raise UsageError(
            f"bad .rex file name {name[:80]!r} in the request",
            hint="the file name is one path component (no '/'), not '.' or '..'",
        )
    return name


def _origin(origin: str | None) -> str | None:
    if origin is None:
        return None
    if not origin or not origin.isprintable() or len(origin) > MAX_ORIGIN:
        raise _bad(f"origin must be 1-{MAX_ORIGIN} printable characters")
    return origin


def exec_argv(body: bytes) -> list[str]:
    """The argv of an exec request body ``{"argv": [...]}``."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _bad(f"the exec request is not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) != {"argv"}:
        raise _bad('the exec request must be {"argv": [...]}')
    argv = data["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise _bad("argv must be a non-empty list of strings")
    if len(argv) > MAX_ARGS or any("\0" in a for a in argv):
        raise _bad(f"argv must be at most {MAX_ARGS} strings without NUL characters")
    return argv
