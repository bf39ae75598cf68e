"""Parse and validate a ``.rex`` file into the typed AST of ``ast.py``.

Every problem is a ``RexfileError`` naming ``file:line:col`` of the offending
text (or, for something missing, the place just past the end of the line),
saying what was expected and, in its hint, how to fix it. The first problem
found is reported. Nothing here touches the host: whether a COPY source exists
or a base is on this host is for the engine to check.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from rexcarcer.errors import RexfileError
from rexcarcer.names import hostname_problem, service_problem
from rexcarcer.rexfile import publish as publishing
from rexcarcer.rexfile import running
from rexcarcer.rexfile.ast import (
    Base,
    Copy,
    Depend,
    Enable,
    HealthCheck,
    IPInterface,
    Pos,
    Proto,
    Publish,
    RestartPolicy,
    Rexfile,
    Run,
    Service,
    Step,
    Volume,
)
from rexcarcer.rexfile.lexer import Line, Token, fail, logical_lines
from rexcarcer.rexfile.limits import Limits, Resource

KEYWORDS = ("BASE", "PROVISION", "ENV", "HOSTNAME", "IP", "SERVICE", "ENABLE", "VOLUME", "LIMIT",
            "SECRET", "HEALTHCHECK", "RESTART", "DEPENDS", "PUBLISH")  # fmt: skip
# A .rex file is a page of instructions. The cap keeps a mistaken path (an image,
# /dev/zero) or a file sent to an agent's API from being read whole into memory.
MAX_FILE = 1024 * 1024
# What people coming from a Dockerfile type, and what it is called here.
_FOREIGN = {
    "FROM": "BASE",
    "RUN": "PROVISION RUN",
    "COPY": "PROVISION COPY",
    "ADD": "PROVISION COPY",
    "EXPOSE": "SERVICE",
    "DEPENDS_ON": "DEPENDS",
}
URL_SCHEMES = ("https", "http", "file")
BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SCHEME_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")

BASE_HINT = (
    "write BASE https://host/dir/NAME for a published base, or BASE NAME for one on this host"
)
COPY_HINT = 'write PROVISION COPY <src> <dst>; quote a path that has spaces: "my file"'
SERVICE_HINT = "write SERVICE <name> PORT <n> [PROTO tcp|udp], e.g. SERVICE renderer PORT 1234"
IP_HINT = "write IP 203.0.113.8/24 (or IP 2001:db8::8/64)"
ENABLE_HINT = "write ENABLE <service> [FLAGS <text>], e.g. ENABLE nginx or ENABLE sshd FLAGS -4"
# rc.subr(8): a service's name is the prefix of its rc.conf variables
# (${name}_enable, ${name}_flags), so it must be an sh(1) variable name; it is
# also the file name under /etc/rc.conf.d.
_SERVICE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _upper(tok: Token) -> str:
    """The keyword spelled by ``tok``. ASCII only: Unicode case folding maps
    the dotless i (U+0131) to "I", so "PROVISION" spelled with it would match."""
    return tok.text.upper() if tok.text.isascii() else tok.text


def _extra(line: Line, tok: Token, what: str, hint: str) -> RexfileError:
    """The error for an unexpected word ``tok`` after a complete instruction."""
    if tok.text.startswith("#"):
        hint = "a comment has a line of its own: move it to the line above"
    return line.error(tok, f"unexpected {tok.text!r}: {what}", hint)


class _Parser:
    """Collects instructions line by line, checking the rules that span lines."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.base: Base | None = None
        self.steps: list[Step] = []
        self.env: dict[str, tuple[str, int]] = {}  # key -> (value, line)
        self.hostname: tuple[str, int] | None = None
        self.ip: tuple[IPInterface, int] | None = None
        self.services: dict[tuple[str, Proto], Service] = {}
        self.enable: dict[str, Enable] = {}
        self.volumes: list[Volume] = []
        self.limits = Limits()
        self.limit_lines: dict[Resource, int] = {}
        self.secrets: dict[str, int] = {}  # name -> line
        self.healthcheck: HealthCheck | None = None
        self.restart: tuple[RestartPolicy, int] | None = None
        self.depends: dict[str, Depend] = {}
        self.publish: list[Publish] = []

    def feed(self, line: Line) -> None:
        keyword = line.next_word(0)
        assert keyword is not None  # the lexer yields no blank lines
        handler = self._handler(line, keyword)
        if self.base is None and handler != self._base:
            raise line.error(
                keyword,
                f"expected BASE before {keyword.text}: BASE must be the first instruction",
                hint="start the file with BASE <url-or-name>",
            )
        handler(line, keyword)

    def _handler(self, line: Line, keyword: Token) -> Callable[[Line, Token], None]:
        handlers: dict[str, Callable[[Line, Token], None]] = {
            "BASE": self._base,
            "PROVISION": self._provision,
            "ENV": self._env,
            "HOSTNAME": self._hostname,
            "IP": self._ip,
            "SERVICE": self._service,
            "ENABLE": self._enable,
            "VOLUME": self._volume,
            "LIMIT": self._limit,
            "SECRET": self._secret,
            "HEALTHCHECK": self._healthcheck,
            "RESTART": self._restart,
            "DEPENDS": self._depends,
            "PUBLISH": self._publish,
        }
        handler = handlers.get(_upper(keyword))
        if handler is None:
            raise _unknown(line, keyword)
        return handler

    def result(self, path: Path | None) -> Rexfile:
        if self.base is None:
            raise fail(
                self.file,
                Pos(1, 1),
                "no BASE instruction: the file has no instructions at all",
                hint="start the file with BASE <url-or-name>",
            )
        return Rexfile(
            base=self.base,
            steps=tuple(self.steps),
            env=tuple((key, value) for key, (value, _) in self.env.items()),
            hostname=self.hostname[0] if self.hostname else None,
            ip=self.ip[0] if self.ip else None,
            services=tuple(self.services.values()),
            enable=tuple(self.enable.values()),
            volumes=tuple(self.volumes),
            limits=self.limits,
            secrets=tuple(self.secrets),
            healthcheck=self.healthcheck,
            restart=self.restart[0] if self.restart else None,
            depends=tuple(self.depends.values()),
            publish=tuple(self.publish),
            path=path,
        )

    # -- BASE ----------------------------------------------------------------------

    def _base(self, line: Line, keyword: Token) -> None:
        if self.base is not None:
            raise line.error(
                keyword,
                f"BASE given twice (first at line {self.base.pos.line})",
                hint="a .rex file has exactly one BASE: remove this one",
            )
        args = line.words(keyword.end)
        if not args:
            raise line.error(len(line.text), "expected a base URL or name after BASE", BASE_HINT)
        if len(args) > 2:
            raise _extra(line, args[2], "BASE takes a URL or name and an optional pin", BASE_HINT)
        ref = _base_ref(line, args[0])
        pin = _pin(line, args[1]) if len(args) == 2 else None
        self.base = Base(ref, pin, keyword.pos)

    # -- PROVISION -----------------------------------------------------------------

    def _provision(self, line: Line, keyword: Token) -> None:
        hint = "did you mean PROVISION RUN or PROVISION COPY?"
        sub = line.next_word(keyword.end)
        if sub is None:
            raise line.error(len(line.text), "expected RUN or COPY after PROVISION", hint)
        if _upper(sub) == "RUN":
            self._run(line, keyword, sub)
        elif _upper(sub) == "COPY":
            self._copy(line, keyword, sub)
        else:
            raise line.error(sub, f"expected RUN or COPY after PROVISION, not {sub.text!r}", hint)

    def _run(self, line: Line, keyword: Token, sub: Token) -> None:
        command = line.rest(sub.end)
        if command is None:
            raise line.error(
                len(line.text),
                "expected a shell command after PROVISION RUN",
                hint="write PROVISION RUN <command>, e.g. PROVISION RUN pkg install -y nginx",
            )
        self.steps.append(Run(command.text, keyword.pos))

    def _copy(self, line: Line, keyword: Token, sub: Token) -> None:
        args = line.shell_words(sub.end)
        if len(args) < 2:
            what = "a source and a destination path" if not args else "a destination path"
            raise line.error(len(line.text), f"expected {what} after PROVISION COPY", COPY_HINT)
        if len(args) > 2:
            raise _extra(line, args[2], "PROVISION COPY takes exactly two paths", COPY_HINT)
        src, dst = args
        _check_copy_src(line, src)
        _check_copy_dst(line, dst)
        self.steps.append(Copy(src.text, dst.text, keyword.pos))

    # -- ENV -----------------------------------------------------------------------

    def _env(self, line: Line, keyword: Token) -> None:
        rest = line.rest(keyword.end)
        if rest is None:
            raise line.error(
                len(line.text), "expected KEY=VALUE after ENV", hint="write ENV KEY=VALUE"
            )
        key, sep, value = rest.text.partition("=")
        if not sep:
            raise line.error(
                rest, f"expected KEY=VALUE, not {rest.text!r}", hint="write ENV KEY=VALUE"
            )
        _check_env_key(line, rest, key)
        for offset, ch in enumerate(value):
            if ch == "\r":  # a lone CR would end the line in /etc/rexcarcer/env
                at = rest.start + len(key) + 1 + offset
                raise line.error(at, "carriage return in an ENV value", hint="remove it")
        if key in self.env:
            raise line.error(
                rest,
                f"ENV {key} is set twice (first at line {self.env[key][1]})",
                hint="remove one of them",
            )
        self.env[key] = (value, keyword.pos.line)

    # -- HOSTNAME and IP -----------------------------------------------------------

    def _single(self, line: Line, keyword: Token, example: str) -> Token:
        """The one argument of an instruction that takes exactly one."""
        name = _upper(keyword)
        args = line.words(keyword.end)
        if not args:
            raise line.error(len(line.text), f"expected an argument after {name}", example)
        if len(args) > 1:
            raise _extra(line, args[1], f"{name} takes one argument", example)
        return args[0]

    def _hostname(self, line: Line, keyword: Token) -> None:
        example = "write HOSTNAME docs.example.com"
        tok = self._single(line, keyword, example)
        if self.hostname is not None:
            raise line.error(
                keyword,
                f"HOSTNAME given twice (first at line {self.hostname[1]})",
                hint="a jail has one host name: remove one HOSTNAME",
            )
        problem = hostname_problem(tok.text)
        if problem is not None:
            raise line.error(
                tok,
                f"bad host name {tok.text!r}: {problem}",
                hint="a host name is labels of letters, digits and '-' joined by dots "
                "(RFC 1123), e.g. docs.example.com",
            )
        self.hostname = (tok.text.removesuffix(".").lower(), keyword.pos.line)

    def _ip(self, line: Line, keyword: Token) -> None:
        tok = self._single(line, keyword, IP_HINT)
        if self.ip is not None:
            raise line.error(
                keyword,
                f"IP given twice (first at line {self.ip[1]})",
                hint="a jail has one fixed address: remove one IP",
            )
        self.ip = (_interface(line, tok), keyword.pos.line)

    # -- SERVICE -------------------------------------------------------------------

    def _service(self, line: Line, keyword: Token) -> None:
        args = line.words(keyword.end)
        if not args:
            raise line.error(len(line.text), "expected a service name after SERVICE", SERVICE_HINT)
        name = args[0]
        problem = service_problem(name.text)
        if problem is not None:
            raise line.error(
                name,
                f"bad service name: {problem}",
                hint="a service name (RFC 6335) is 1-15 letters, digits and '-', "
                "with at least one letter, e.g. renderer",
            )
        port = _port(line, args)
        proto = _proto(line, args)
        service = Service(name.text.lower(), port, proto, keyword.pos)
        first = self.services.get((service.name, proto))
        if first is not None:
            raise line.error(
                name,
                f"SERVICE {service.name} {proto} is declared twice "
                f"(first at line {first.pos.line})",
                hint="remove one, or give it another name or PROTO",
            )
        self.services[(service.name, proto)] = service

    # -- ENABLE --------------------------------------------------------------------

    def _enable(self, line: Line, keyword: Token) -> None:
        name = line.next_word(keyword.end)
        if name is None:
            raise line.error(len(line.text), "expected a service name after ENABLE", ENABLE_HINT)
        if not _SERVICE_NAME.fullmatch(name.text):
            raise line.error(
                name,
                f"bad service name {name.text!r}",
                hint="an rc.d service name is letters, digits and '_', not starting with a "
                "digit (its rc.conf variables are <name>_enable and <name>_flags)",
            )
        flags = self._enable_flags(line, name)
        first = self.enable.get(name.text)
        if first is not None:
            raise line.error(
                name,
                f"ENABLE {name.text} is given twice (first at line {first.pos.line})",
                hint="enable a service once; put all its flags after FLAGS",
            )
        self.enable[name.text] = Enable(name.text, flags, keyword.pos)

    def _enable_flags(self, line: Line, name: Token) -> str | None:
        """The text after FLAGS, verbatim to the end of the line, or None."""
        word = line.next_word(name.end)
        if word is None:
            return None
        if _upper(word) != "FLAGS":
            raise _extra(line, word, "expected FLAGS or the end of the line", ENABLE_HINT)
        rest = line.rest(word.end)
        if rest is None:
            raise line.error(len(line.text), "expected the flags after FLAGS", ENABLE_HINT)
        for offset, ch in enumerate(rest.text):
            if ch == "\r":  # a lone CR would end the line in the rc.conf.d file
                raise line.error(rest.start + offset, "carriage return in FLAGS", hint="remove it")
        return rest.text

    # -- running services (rexfile/running.py) ---------------------------------------

    def _volume(self, line: Line, keyword: Token) -> None:
        volume = running.volume(line, keyword)
        running.volume_clash(self.volumes, volume, line, keyword)
        self.volumes.append(volume)

    def _limit(self, line: Line, keyword: Token) -> None:
        resource, value = running.limit(line, keyword)
        if resource in self.limit_lines:
            raise line.error(keyword, f"LIMIT {resource} is given twice (first at line "
                             f"{self.limit_lines[resource]})", hint="keep one of them")  # fmt: skip
        self.limit_lines[resource] = keyword.pos.line
        self.limits = self.limits.set(resource, value)

    def _secret(self, line: Line, keyword: Token) -> None:
        name = running.secret(line, keyword)
        if name in self.secrets:
            raise line.error(keyword, f"SECRET {name} is given twice (first at line "
                             f"{self.secrets[name]})", hint="remove one of them")  # fmt: skip
        self.secrets[name] = keyword.pos.line

    def _healthcheck(self, line: Line, keyword: Token) -> None:
        if self.healthcheck is not None:
            raise running.twice(line, keyword, "HEALTHCHECK", self.healthcheck.pos.line)
        self.healthcheck = running.healthcheck(line, keyword)

    def _restart(self, line: Line, keyword: Token) -> None:
        if self.restart is not None:
            raise running.twice(line, keyword, "RESTART", self.restart[1])
        self.restart = (running.restart(line, keyword), keyword.pos.line)

    def _depends(self, line: Line, keyword: Token) -> None:
        dep = running.depends(line, keyword)
        if dep.name in self.depends:
            raise running.twice(
                line, keyword, f"DEPENDS {dep.name}", self.depends[dep.name].pos.line
            )
        self.depends[dep.name] = dep

    def _publish(self, line: Line, keyword: Token) -> None:
        found = publishing.publish(line, keyword)
        publishing.clash(self.publish, found, line, keyword)
        self.publish.append(found)


def _unknown(line: Line, keyword: Token) -> RexfileError:
    word = keyword.text.upper()
    if word in _FOREIGN:
        return line.error(
            keyword,
            f"unknown instruction {keyword.text!r}",
            hint=f"did you mean {_FOREIGN[word]}?",
        )
    close = difflib.get_close_matches(word, KEYWORDS, n=1)
    hint = (
        f"did you mean {close[0]}?"
        if close
        else "the instructions are BASE, PROVISION RUN, PROVISION COPY, ENV, HOSTNAME, IP, "
        "SERVICE, ENABLE, VOLUME, LIMIT, SECRET, HEALTHCHECK, RESTART, DEPENDS and PUBLISH"
    )
    return line.error(keyword, f"unknown instruction {keyword.text!r}", hint)


# -- argument checks ---------------------------------------------------------------


def _base_ref(line: Line, tok: Token) -> str:
    text = tok.text
    if "://" in text:
        return _url(line, tok)
    if BASE_NAME.fullmatch(text):
        return text
    if _SCHEME_LIKE.match(text):
        raise line.error(
            tok,
            f"{text!r} is not a base URL: a URL has '//' after the scheme",
            hint="write https://host/dir/NAME (or http://, file:///path/NAME)",
        )
    if "/" in text:
        why = "a name has no '/' (a URL starts with https://, http:// or file://)"
    elif len(text) > 128:
        why = f"it is {len(text)} characters long; the limit is 128"
    else:
        why = "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    raise line.error(
        tok, f"bad base name {text!r}: {why}", hint=BASE_HINT + " (rex base ls lists them)"
    )


def _url(line: Line, tok: Token) -> str:
    """A base URL as the fetcher expects it: https://host/dir/NAME."""
    example = "write https://host/dir/NAME, where NAME.sha256 and the other files live"
    try:
        parts = urlsplit(tok.text)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise line.error(tok, f"malformed URL {tok.text!r}: {exc}", example) from exc
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise line.error(
            tok,
            f"unsupported URL scheme {parts.scheme!r}",
            hint="a base URL starts with https://, http:// or file://",
        )
    if parts.query or parts.fragment:
        raise line.error(
            tok, f"base URL {tok.text!r} has a query or fragment", "remove '?…' or '#…'"
        )
    if scheme == "file" and parts.netloc not in ("", "localhost"):
        raise line.error(tok, f"file URL {tok.text!r} names a host", "write file:///absolute/path")
    if scheme != "file" and not parts.hostname:
        raise line.error(tok, f"URL {tok.text!r} has no host", example)
    stem = parts.path.rsplit("/", 1)[-1]
    if not parts.path.startswith("/") or stem in ("", ".", ".."):
        raise line.error(tok, f"URL {tok.text!r} does not name a base", example)
    # Schemes are case-insensitive (RFC 3986 3.1); the fetcher matches on lower case.
    return scheme + tok.text[len(parts.scheme) :]


def _pin(line: Line, tok: Token) -> str:
    hint = "a pin is sha256: followed by the 64 hex digits of the base's manifest digest"
    prefix, sep, digest = tok.text.partition(":")
    if not sep or prefix.lower() != "sha256":
        raise line.error(tok, f"expected sha256:<digest> after the base, not {tok.text!r}", hint)
    if not _HEX64.fullmatch(digest):
        at = tok.start + len(prefix) + 1
        bad = next((ch for ch in digest if ch not in "0123456789abcdefABCDEF"), None)
        why = f"{bad!r} is not a hex digit" if bad else f"it has {len(digest)} digits, not 64"
        raise line.error(at, f"bad sha256 pin: {why}", hint)
    return digest.lower()


def _check_copy_src(line: Line, tok: Token) -> None:
    hint = "give a path relative to the directory of the .rex file, e.g. ./public"
    src = tok.text
    if not src:
        raise line.error(tok, "empty source path in PROVISION COPY", hint)
    if src.startswith("/"):
        raise line.error(tok, f"source {src!r} is absolute; it must be relative", hint)
    depth = 0
    for part in src.split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            raise line.error(
                tok,
                f"source {src!r} leaves the directory of the .rex file",
                hint="COPY takes files from the .rex file's directory and below only",
            )


def _check_copy_dst(line: Line, tok: Token) -> None:
    dst = tok.text
    if not dst.startswith("/"):
        shown = dst.removeprefix("./") or "path"
        raise line.error(
            tok,
            f"destination {dst!r} is not an absolute path inside the jail",
            hint=f"write it from the jail's root, e.g. /{shown}",
        )
    # The jail resolves ".." itself, but a destination never needs one and it
    # makes "is this inside the jail?" harder to see at a glance.
    if ".." in dst.split("/"):
        raise line.error(
            tok, f"destination {dst!r} contains '..'", hint="write the path without '..'"
        )


def _check_env_key(line: Line, rest: Token, key: str) -> None:
    if _ENV_KEY.fullmatch(key):
        return
    if _ENV_KEY.fullmatch(key.rstrip(" \t")):
        raise line.error(
            rest,
            f"space before '=' in ENV {rest.text!r}",
            hint="write ENV KEY=VALUE without spaces before '='",
        )
    raise line.error(
        rest,
        f"bad variable name {key!r}",
        hint="a name is letters, digits and '_', not starting with a digit: ENV KEY=VALUE",
    )


def _interface(line: Line, tok: Token) -> IPInterface:
    text = tok.text
    addr_text, sep, prefix_text = text.partition("/")
    if not sep:
        raise line.error(tok, f"{text!r} has no prefix length", IP_HINT)
    if "%" in addr_text:
        raise line.error(
            tok,
            f"{addr_text!r} has a zone index ('%'), which IP does not take",
            hint="remove the '%…' part: the address goes on the host interface rex picks",
        )
    try:
        address = ipaddress.ip_address(addr_text)
    except ValueError as exc:
        raise line.error(tok, f"{addr_text!r} is not an IPv4 or IPv6 address", IP_HINT) from exc
    top = address.max_prefixlen
    prefix_at = tok.start + len(addr_text) + 1
    if not _DIGITS.fullmatch(prefix_text) or not 1 <= int(prefix_text) <= top:
        raise line.error(
            prefix_at, f"bad prefix length {prefix_text!r}: expected 1 to {top}", IP_HINT
        )
    if address.is_unspecified or address.is_multicast or address == _LIMITED_BROADCAST:
        raise line.error(tok, f"{address} is not a unicast host address", IP_HINT)
    iface = ipaddress.ip_interface(f"{address}/{int(prefix_text)}")
    problem = _subnet_problem(iface)
    if problem is not None:
        # Only prefixes with room for hosts get here, so +1 stays in the subnet.
        network = iface.network
        example = f"{network.network_address + 1}/{network.prefixlen}"
        raise line.error(
            tok, f"{address} {problem}", hint=f"pick a host address, e.g. IP {example}"
        )
    return iface


def _subnet_problem(iface: IPInterface) -> str | None:
    """Why ``iface`` is an address of its subnet that no host may have, or None."""
    address, network = iface.ip, iface.network
    if isinstance(address, ipaddress.IPv4Address):
        # /31 (RFC 3021) and /32 have no network or broadcast address.
        if network.prefixlen <= 30 and address == network.network_address:
            return f"is the network address of {network}"
        if network.prefixlen <= 30 and address == network.broadcast_address:
            return f"is the broadcast address of {network}"
    elif network.prefixlen < 127 and address == network.network_address:
        # RFC 4291 2.6.1; /127 (RFC 6164) and /128 are exempt.
        return f"is the subnet-router anycast address of {network}"
    return None


def _port(line: Line, args: list[Token]) -> int:
    if len(args) < 2:
        raise line.error(len(line.text), "expected PORT after the service name", SERVICE_HINT)
    if _upper(args[1]) != "PORT":
        raise line.error(args[1], f"expected PORT, not {args[1].text!r}", SERVICE_HINT)
    if len(args) < 3:
        raise line.error(len(line.text), "expected a port number after PORT", SERVICE_HINT)
    text = args[2].text
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise line.error(
            args[2], f"bad port {text!r}: expected a number from 1 to 65535", SERVICE_HINT
        )
    return int(text)


def _proto(line: Line, args: list[Token]) -> Proto:
    if len(args) < 4:
        return Proto.TCP
    if _upper(args[3]) != "PROTO":
        raise _extra(line, args[3], "expected PROTO or the end of the line", SERVICE_HINT)
    if len(args) < 5:
        raise line.error(len(line.text), "expected tcp or udp after PROTO", SERVICE_HINT)
    if len(args) > 5:
        raise _extra(line, args[5], "SERVICE ends after PROTO tcp|udp", SERVICE_HINT)
    value = args[4].text.lower() if args[4].text.isascii() else args[4].text
    if value not in ("tcp", "udp"):
        raise line.error(args[4], f"expected tcp or udp, not {args[4].text!r}", SERVICE_HINT)
    return Proto(value)


# -- entry points ------------------------------------------------------------------


def parse(text: str, *, file: str = "<input>", path: Path | None = None) -> Rexfile:
    """The AST of ``text``; ``file`` names it in errors, ``path`` is where it
    lives (COPY sources are relative to its directory)."""
    if file == "<input>" and path is not None:
        file = str(path)
    parser = _Parser(file)
    for line in logical_lines(text, file=file):
        parser.feed(line)
    return parser.result(path)


def load(path: Path) -> Rexfile:
    """Read ``path`` (UTF-8 text, at most ``MAX_FILE`` bytes) and parse it."""
    file = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)  # never more: the file may be anything, of any size
    except OSError as exc:
        raise RexfileError(
            f"cannot read the file: {exc.strerror or exc}",
            file=file,
            hint="check the path and its permissions; rex takes the path of a .rex file",
        ) from exc
    return parse_bytes(data, file=file, path=path)


def parse_bytes(data: bytes, *, file: str, path: Path) -> Rexfile:
    """Parse the bytes of a .rex file read from ``path`` (at most ``MAX_FILE``
    of them); ``file`` names it in errors (an agent names the client's path)."""
    if len(data) > MAX_FILE:
        raise RexfileError(
            f"the file is larger than {MAX_FILE // 1024} KiB, the limit for a .rex file",
            file=file,
            hint="a .rex file holds instructions; put the files a jail needs beside it "
            "and PROVISION COPY them",
        )
    return parse(_decode(data, file), file=file, path=path)


def _byte_pos(data: bytes, at: int) -> Pos:
    line_start = data.rfind(b"\n", 0, at) + 1
    col = len(data[line_start:at].decode("utf-8", errors="replace")) + 1
    return Pos(data.count(b"\n", 0, at) + 1, col)


def _decode(data: bytes, file: str) -> str:
    nul = data.find(b"\0")
    if nul >= 0:
        raise fail(
            file,
            _byte_pos(data, nul),
            "NUL byte in the file",
            hint="a .rex file is UTF-8 text; is this a binary or UTF-16 file?",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(
            file,
            _byte_pos(data, exc.start),
            f"the file is not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded",
            hint="save the file as UTF-8",
        ) from exc
