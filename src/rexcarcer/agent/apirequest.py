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
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qsl

from rexcarcer.buildctx import MAX_CONTEXT
from rexcarcer.cluster import AgentApiError
from rexcarcer.errors import RexError, UsageError
from rexcarcer.names import check_jail_name

MAX_EXEC_BODY = 1 << 20  # an argv, not a file
MAX_ARGS = 4096
MAX_FILE_NAME = 255  # NAME_MAX on Linux and FreeBSD
MAX_ORIGIN = 4096  # PATH_MAX on Linux (FreeBSD: 1024)
MAX_QUERY_FIELDS = 8
VERBS = ("start", "stop", "restart", "destroy")

_DIGITS = re.compile(r"[0-9]+")


class Op(StrEnum):
    HEALTH = "health"
    UP = "up"
    LIFECYCLE = "lifecycle"
    EXEC = "exec"


@dataclass(frozen=True, slots=True)
class Call:
    op: Op
    jail: str = ""
    verb: str = ""  # start, stop, restart or destroy (LIFECYCLE)
    file: str = ""  # the .rex file's name in the build context (UP)
    origin: str | None = None  # where the client read it, for messages (UP)
    body: int = 0  # bytes of body to read


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


def _parse(head: Head) -> Call:
    length = _length(head.content_length)
    if head.encoded:
        raise _bad("a compressed body", hint="send the body as it is (no Content-Encoding)")
    op, jail, verb = _route(head.method, head.path)
    params = _query(head.query, required=("name", "file") if op is Op.UP else (),
                    optional=("origin",) if op is Op.UP else ())  # fmt: skip
    if op is Op.UP:
        call = Call(op, check_jail_name(params["name"]), file=check_file_name(params["file"]),
                    origin=_origin(params.get("origin")))  # fmt: skip
        return _with_body(call, length, head.chunked, MAX_CONTEXT, "the build context")
    if op is Op.EXEC:
        call = Call(op, check_jail_name(jail))
        return _with_body(call, length, head.chunked, MAX_EXEC_BODY, "an exec request")
    call = Call(op, check_jail_name(jail), verb) if op is Op.LIFECYCLE else Call(op)
    if head.chunked or length:
        raise _bad(f"{head.method} {head.path} takes no body")
    return call


def _route(method: str, path: str) -> tuple[Op, str, str]:
    parts = path.split("/")
    if path == "/v1/health":
        op, jail, verb, allow = Op.HEALTH, "", "", "GET"
    elif path == "/v1/up":
        op, jail, verb, allow = Op.UP, "", "", "POST"
    elif len(parts) == 5 and parts[:3] == ["", "v1", "jails"] and parts[4] in (*VERBS, "exec"):
        verb = parts[4]
        op, jail, allow = (Op.EXEC if verb == "exec" else Op.LIFECYCLE), parts[3], "POST"
    else:
        raise Refused(404, AgentApiError(f"no such endpoint: {path[:200]!r}"))
    if method != allow:
        raise Refused(405, AgentApiError(f"{path} takes {allow}, not {method[:20]!r}"),
                      allow=allow)  # fmt: skip
    return op, jail, "" if op is Op.EXEC else verb


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
    return Call(call.op, call.jail, call.verb, call.file, call.origin, length)


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
