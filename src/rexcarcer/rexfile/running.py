"""The instructions for running services (DESIGN section 1, "0.2"): each parsed
from one line into its typed AST value, with ``file:line:col`` errors. The
parser (parser.py) dispatches to these and checks the rules across lines.

::

    VOLUME <name> <path> [<size>]     a dataset of its own mounted at <path>
"""

from __future__ import annotations

import posixpath
import re

from rexcarcer.errors import RexfileError
from rexcarcer.rexfile.ast import Volume
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
