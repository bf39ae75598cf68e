"""Property tests of the .rex parser.

1. No input makes ``parse`` (or ``load``) raise anything but ``RexfileError``,
   and every error points inside the text and carries a hint.
2. A valid definition, written out with arbitrary keyword case, spacing,
   comments, blank lines and ``\\`` continuations, parses back to itself.
"""

from __future__ import annotations

import ipaddress
import random
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rexcarcer.errors import RexfileError
from rexcarcer.rexfile.ast import Base, Copy, IPInterface, Proto, Rexfile, Run, Service, Step
from rexcarcer.rexfile.parser import load, parse

PROPS = settings(max_examples=300, deadline=None)


def check_parse(text: str) -> Rexfile | None:
    """Parse ``text``; a RexfileError must point inside it and suggest a fix."""
    try:
        return parse(text, file="p.rex")
    except RexfileError as exc:
        lines = text.split("\n")
        assert 1 <= exc.line <= len(lines)
        # one past the end of the line is where "expected ..." points
        assert 1 <= exc.col <= len(lines[exc.line - 1]) + 1
        assert exc.hint, exc.message
        assert str(exc).startswith(f"p.rex:{exc.line}:{exc.col}: ")
        return None


# -- 1. nothing but RexfileError -----------------------------------------------------

# fmt: off
FRAGMENTS = [
    "BASE", "base", "PROVISION", "provision", "RUN", "COPY", "ENV", "HOSTNAME", "IP",
    "SERVICE", "PORT", "PROTO", "tcp", "udp", "FROM", " ", "  ", "\t", "\n", "\n", "\r\n",
    "\\", "\\\n", "\\ \n", "#", "# c\n", "'", '"', "\\'", '\\"', "=", "A=", "/", "..", ".",
    "../", "./", "a", "Z9", "busybox", "sha256:", "ab" * 32, "https://h.example/b",
    "file:///b", "ftp://h/b", "http://[::1", "https://h:0/b", "203.0.113.8", "/24", "/33",
    "2001:db8::", "/64", "%", "0", "80", "65536", "-", "--", "x.in-addr.arpa", "\xe9",
    "\u0131", "\ufeff", "\x00", "\x0b", "\u2028", "\xa0", "0x", "+1",
]
# fmt: on


@PROPS
@given(st.text())
def test_arbitrary_text_raises_only_rexfile_error(text: str) -> None:
    check_parse(text)
    check_parse("BASE busybox\n" + text)


@PROPS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.booleans())
def test_fragment_soup_raises_only_rexfile_error(parts: list[str], with_base: bool) -> None:
    text = "".join(parts)
    check_parse(("BASE busybox\n" if with_base else "") + text)


INSTRUCTION_HEADS = [
    "BASE ",
    "PROVISION RUN ",
    "PROVISION COPY ",
    "ENV ",
    "HOSTNAME ",
    "IP ",
    "SERVICE ",
    "SERVICE web PORT ",
    "SERVICE web PORT 80 PROTO ",
    "PROVISION ",
]


@PROPS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(INSTRUCTION_HEADS),
            st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join),
        ),
        max_size=8,
    )
)
def test_instruction_soup_raises_only_rexfile_error(lines: list[tuple[str, str]]) -> None:
    text = "BASE busybox\n" + "\n".join(head + tail for head, tail in lines)
    check_parse(text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props") / "f.rex"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary())
def test_load_raises_only_rexfile_error(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(b"BASE busybox\n" + data)
    try:
        load(scratch)
    except RexfileError as exc:
        assert exc.hint
        assert exc.line >= 1 and exc.col >= 1


# -- 2. round trip -------------------------------------------------------------------

BLANKS = " \t"
# Characters a value may hold; NUL, CR and LF cannot be in one line of text.
VALUE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00\r\n")
PATH_CHARS = st.characters(codec="utf-8", exclude_characters="\x00\r\n/")
NAME_CHARS = string.ascii_letters + string.digits + "._-"


def rest_of_line(text: str) -> str:
    """``text`` as the rest of a line can hold it: a trailing blank would be
    dropped and a trailing backslash would continue the line."""
    return text.rstrip(BLANKS + "\\")


hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
base_names = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(NAME_CHARS, max_size=30),
)
url_paths = st.lists(st.text(NAME_CHARS, min_size=1, max_size=12), min_size=1, max_size=4)
url_paths = url_paths.filter(lambda parts: parts[-1] not in (".", ".."))
urls = st.builds(
    lambda scheme, host, parts: f"{scheme}://{host}/{'/'.join(parts)}",
    st.sampled_from(["https", "http"]),
    st.sampled_from(["bases.example.com", "h", "h.example:8080", "[2001:db8::1]"]),
    url_paths,
) | url_paths.map(lambda parts: "file:///" + "/".join(parts))
bases = st.builds(Base, base_names | urls, st.none() | hex64)

commands = st.text(VALUE_CHARS, min_size=1, max_size=40).map(rest_of_line)
commands = commands.map(lambda c: c.lstrip(BLANKS)).filter(bool)
segments = st.text(PATH_CHARS, min_size=1, max_size=10).filter(lambda s: s != "..")
sources = st.lists(segments, min_size=1, max_size=4).map("/".join)
targets = st.lists(segments, max_size=4).map(lambda parts: "/" + "/".join(parts))
steps: st.SearchStrategy[Step] = st.builds(Run, commands) | st.builds(Copy, sources, targets)

env_keys = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_letters + "_"),
    st.text(string.ascii_letters + string.digits + "_", max_size=10),
)
env_values = st.text(VALUE_CHARS, max_size=30).map(rest_of_line)
# Built valid by construction: filtering random strings is slow.
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
top_labels = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(
    lambda head, top: ".".join([*head, top]), st.lists(labels, max_size=3), top_labels
)
service_names = st.from_regex(r"[0-9]{0,3}[a-z]([a-z0-9]|-[a-z0-9]){0,5}", fullmatch=True)
services = st.builds(
    Service, service_names, st.integers(1, 65535), st.sampled_from([Proto.TCP, Proto.UDP])
)


@st.composite
def interfaces(draw: st.DrawFn) -> IPInterface:
    address = draw(st.ip_addresses())
    prefix = draw(st.integers(1, address.max_prefixlen))
    iface = ipaddress.ip_interface(f"{address}/{prefix}")
    assume(not (address.is_unspecified or address.is_multicast))
    assume(address != ipaddress.IPv4Address("255.255.255.255"))
    if isinstance(iface, ipaddress.IPv4Interface):
        assume(prefix > 30 or address not in (iface.network[0], iface.network[-1]))
    else:
        assume(prefix >= 127 or address != iface.network[0])
    return iface


@st.composite
def rexfiles(draw: st.DrawFn) -> Rexfile:
    env = draw(st.dictionaries(env_keys, env_values, max_size=4))
    svc = draw(st.lists(services, max_size=4, unique_by=lambda s: (s.name, s.proto)))
    return Rexfile(
        base=draw(bases),
        steps=tuple(draw(st.lists(steps, max_size=5))),
        env=tuple(env.items()),
        hostname=draw(st.none() | hostnames),
        ip=draw(st.none() | interfaces()),
        services=tuple(svc),
    )


def quote(path: str) -> str:
    if "'" not in path:
        return f"'{path}'"
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


# How a word may be spelled: LIT exactly as given, FOLD in any case (keywords,
# the pin, the proto), HOST in any case and with or without a trailing dot.
LIT, FOLD, HOST = "lit", "fold", "host"
Words = list[tuple[str, str]]


def instructions(rex: Rexfile) -> list[Words]:
    """Each instruction as words, each with how it may be spelled."""
    b = rex.base
    out: list[Words] = [[("BASE", FOLD), (b.ref, LIT)]]
    if b.pin:
        out[0].append((f"sha256:{b.pin}", FOLD))
    for step in rex.steps:
        if isinstance(step, Run):
            out.append([("PROVISION", FOLD), ("RUN", FOLD), (step.command, LIT)])
        else:
            paths = [(quote(step.src), LIT), (quote(step.dst), LIT)]
            out.append([("PROVISION", FOLD), ("COPY", FOLD), *paths])
    out += [[("ENV", FOLD), (f"{key}={value}", LIT)] for key, value in rex.env]
    if rex.hostname is not None:
        out.append([("HOSTNAME", FOLD), (rex.hostname, HOST)])
    if rex.ip is not None:
        out.append([("IP", FOLD), (str(rex.ip), LIT)])
    for s in rex.services:
        port = [("PORT", FOLD), (str(s.port), LIT), ("PROTO", FOLD), (str(s.proto), FOLD)]
        out.append([("SERVICE", FOLD), (s.name, FOLD), *port])
    return out


def plain(words: Words) -> str:
    return " ".join(word for word, _ in words)


# The noise comes from one seeded Random: drawing every flip from hypothesis
# makes generation several times slower for no better shrinking that matters.


def noisy_line(rnd: random.Random, words: Words) -> str:
    """One instruction with any case where case does not matter, any blanks
    between words, indentation and trailing blanks."""
    shown = []
    for word, style in words:
        if style != LIT:
            word = "".join(c.swapcase() if rnd.random() < 0.5 else c for c in word)
        if style == HOST and rnd.random() < 0.5:
            word += "."
        shown.append(word)
    gaps = [rnd.choice([" ", "\t", "  ", " \t "]) for _ in shown[1:]]
    text = shown[0] + "".join(gap + word for gap, word in zip(gaps, shown[1:], strict=True))
    return rnd.choice(["", " ", "\t"]) + text + rnd.choice(["", " ", "\t"])


def continued(rnd: random.Random, line: str) -> str:
    """``line`` broken into physical lines by backslash-newline at points where
    the break is invisible: no piece may look like a comment or be blank."""
    cuts = sorted({rnd.randrange(1, max(2, len(line))) for _ in range(rnd.randrange(4))})
    pieces = [line[a:b] for a, b in zip([0, *cuts], [*cuts, len(line)], strict=True)]
    pieces = [p for p in pieces if p]
    if any(p.lstrip(BLANKS).startswith("#") or not p.strip(BLANKS) for p in pieces[1:]):
        return line
    glue = [rnd.choice(["\\\n", "\\ \n", "\\\n# note \\\n", "\\\r\n"]) for _ in pieces[1:]]
    return pieces[0] + "".join(g + p for g, p in zip(glue, pieces[1:], strict=True))


@PROPS
@given(rexfiles())
def test_plain_round_trip(rex: Rexfile) -> None:
    text = "\n".join(plain(words) for words in instructions(rex)) + "\n"
    again = parse(text)
    assert again == rex
    assert again.canonical() == rex.canonical()
    assert again.digest() == rex.digest()


@PROPS
@given(rexfiles(), st.randoms(use_true_random=False))
def test_noisy_round_trip(rex: Rexfile, rnd: random.Random) -> None:
    out: list[str] = []
    for words in instructions(rex):
        out += rnd.choices(["", "  ", "# comment", " # x \\"], k=rnd.randrange(3))
        out.append(continued(rnd, noisy_line(rnd, words)))
    text = rnd.choice(["", "\ufeff"]) + "\n".join(out)
    assert parse(text) == rex
