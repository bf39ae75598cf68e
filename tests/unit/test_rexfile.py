"""The .rex lexer and parser: good files give the expected AST, bad ones a
RexfileError that points at the right line:col and says how to fix it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from rexcarcer.errors import RexfileError
from rexcarcer.rexfile.ast import Base, Copy, Enable, Pos, Proto, Rexfile, Run, Service
from rexcarcer.rexfile.lexer import logical_lines
from rexcarcer.rexfile.parser import MAX_FILE, load, parse

URL = "https://bases.example.com/freebsd/FreeBSD-14.1-RELEASE"
PIN = "ab" * 32

PUBLIC_DOCS = f"""\
# public-docs.rex
BASE {URL}
PROVISION RUN pkg install -y nginx
PROVISION COPY ./public /usr/local/www/docs
PROVISION COPY nginx.conf /usr/local/etc/nginx/nginx.conf
ENV DOCS_ROOT=/usr/local/www/docs
# Bind to a public IP of this host; A record goes into cluster DNS
HOSTNAME docs.example.com
IP 203.0.113.8/24
"""

INTERNAL_RENDERER = f"""\
# internal-renderer.rex
BASE {URL}
PROVISION RUN pkg install -y renderer
# IP and hostname are assigned; SRV record goes into cluster DNS
SERVICE renderer PORT 1234
"""


def error(text: str) -> RexfileError:
    with pytest.raises(RexfileError) as info:
        parse(text, file="t.rex")
    return info.value


def base(rest: str) -> str:
    return f"BASE busybox\n{rest}"


# -- good files ----------------------------------------------------------------------


def test_design_example_public_docs() -> None:
    rex = parse(PUBLIC_DOCS)
    assert rex == Rexfile(
        base=Base(URL),
        steps=(
            Run("pkg install -y nginx"),
            Copy("./public", "/usr/local/www/docs"),
            Copy("nginx.conf", "/usr/local/etc/nginx/nginx.conf"),
        ),
        env=(("DOCS_ROOT", "/usr/local/www/docs"),),
        hostname="docs.example.com",
        ip=ipaddress.IPv4Interface("203.0.113.8/24"),
    )
    assert rex.base.pos == Pos(2, 1)
    assert [s.pos for s in rex.steps] == [Pos(3, 1), Pos(4, 1), Pos(5, 1)]


def test_enable_names_a_service_and_its_flags_verbatim() -> None:
    rex = parse(base("ENABLE nginx\nenable sshd Flags -4   -o 'X=1'\n"))
    assert rex.enable == (Enable("nginx"), Enable("sshd", "-4   -o 'X=1'"))
    assert rex.enable[1].pos == Pos(3, 1)
    assert rex.canonical()["enable"] == [["nginx", None], ["sshd", "-4   -o 'X=1'"]]


def test_a_file_without_the_new_instructions_keeps_its_digest() -> None:
    # a jail made by rex 0.1 is "the same definition" after the upgrade
    assert "enable" not in parse(PUBLIC_DOCS).canonical()
    assert parse(PUBLIC_DOCS).digest() != parse(PUBLIC_DOCS + "ENABLE nginx\n").digest()


def test_design_example_internal_renderer() -> None:
    rex = parse(INTERNAL_RENDERER)
    assert rex == Rexfile(
        base=Base(URL),
        steps=(Run("pkg install -y renderer"),),
        services=(Service("renderer", 1234, Proto.TCP),),
    )
    assert rex.services[0].pos == Pos(5, 1)


def test_keywords_are_case_insensitive_arguments_are_not() -> None:
    rex = parse(
        "base Busybox\n"
        "Provision Run Echo HI\n"
        "provision copy Src /Dst\n"
        "eNv Key=Value\n"
        "service web port 80 proto udp\n"
    )
    assert rex.base.ref == "Busybox"
    assert rex.steps == (Run("Echo HI"), Copy("Src", "/Dst"))
    assert rex.env == (("Key", "Value"),)
    assert rex.services == (Service("web", 80, Proto.UDP),)


def test_comments_blank_lines_and_indentation() -> None:
    rex = parse("\n  # a comment\n\n\tBASE busybox\n   \n  PROVISION RUN true\n# end")
    assert rex.steps == (Run("true"),)
    assert rex.base.pos == Pos(4, 2)
    assert rex.steps[0].pos == Pos(6, 3)


def test_hash_inside_run_is_kept() -> None:
    rex = parse(base("PROVISION RUN echo '#not a comment' # nor this"))
    assert rex.steps == (Run("echo '#not a comment' # nor this"),)


def test_continuation_joins_lines_like_sh() -> None:
    rex = parse(base("PROVISION RUN pkg install -y \\\n    nginx \\\n    curl\nENV A=1"))
    assert rex.steps == (Run("pkg install -y     nginx     curl"),)
    assert rex.env == (("A", "1"),)


def test_continuation_without_space_glues_words() -> None:
    assert parse(base("PROVISION RUN ec\\\nho hi")).steps == (Run("echo hi"),)


def test_continuation_tolerates_blanks_after_the_backslash() -> None:
    assert parse(base("PROVISION RUN a \\  \t\nb")).steps == (Run("a b"),)


def test_comment_line_inside_a_continuation_is_dropped() -> None:
    rex = parse(base("PROVISION RUN a && \\\n  # why b\n  b\nENV X=y"))
    assert rex.steps == (Run("a &&   b"),)


def test_continued_keyword_and_arguments() -> None:
    rex = parse("BA\\\nSE \\\nbusybox\nSERVICE \\\n web \\\n PORT \\\n 80")
    assert rex.base == Base("busybox")
    assert rex.services == (Service("web", 80),)


def test_crlf_line_endings_and_bom() -> None:
    rex = parse("\ufeffBASE busybox\r\nPROVISION RUN a \\\r\nb\r\nENV A=1\r\n")
    assert rex.steps == (Run("a b"),)
    assert rex.env == (("A", "1"),)


def test_copy_quoting() -> None:
    rex = parse(
        base(
            "PROVISION COPY \"my file\" '/usr/local/my dir/'\n"
            "PROVISION COPY a\\ b /x\\ y\n"
            'PROVISION COPY "say \\"hi\\"" \'/a\\b\'\n'
            "PROVISION COPY pre\"mid dle\"post /o'n e'"
        )
    )
    assert rex.steps == (
        Copy("my file", "/usr/local/my dir/"),
        Copy("a b", "/x y"),
        Copy('say "hi"', "/a\\b"),
        Copy("premid dlepost", "/on e"),
    )


def test_copy_source_may_use_dotdot_inside_the_context() -> None:
    rex = parse(base("PROVISION COPY a/../b /b\nPROVISION COPY ./x/./y/.. /z\nPROVISION COPY . /"))
    assert [s.src for s in rex.steps if isinstance(s, Copy)] == ["a/../b", "./x/./y/..", "."]


def test_env_values() -> None:
    rex = parse(base('ENV EMPTY=\nENV SPACES=a b  c   \nENV EQ=a=b\nENV _x1="q"\nENV H=#x'))
    assert rex.env == (
        ("EMPTY", ""),
        ("SPACES", "a b  c"),
        ("EQ", "a=b"),
        ("_x1", '"q"'),
        ("H", "#x"),
    )


def test_env_keys_are_case_sensitive() -> None:
    assert parse(base("ENV a=1\nENV A=2")).env == (("a", "1"), ("A", "2"))


def test_hostname_normalised() -> None:
    assert parse(base("HOSTNAME Docs.Example.COM.")).hostname == "docs.example.com"
    assert parse(base("HOSTNAME web")).hostname == "web"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.8/24", ipaddress.IPv4Interface("203.0.113.8/24")),
        ("203.0.113.0/31", ipaddress.IPv4Interface("203.0.113.0/31")),
        ("203.0.113.255/32", ipaddress.IPv4Interface("203.0.113.255/32")),
        ("127.0.1.5/8", ipaddress.IPv4Interface("127.0.1.5/8")),
        ("2001:DB8::8/64", ipaddress.IPv6Interface("2001:db8::8/64")),
        ("2001:db8::/127", ipaddress.IPv6Interface("2001:db8::/127")),
        ("2001:db8::/128", ipaddress.IPv6Interface("2001:db8::/128")),
    ],
)
def test_ip(text: str, expected: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
    assert parse(base(f"IP {text}")).ip == expected


def test_base_forms() -> None:
    assert parse(f"BASE {URL} sha256:{PIN.upper()}").base == Base(URL, PIN)
    assert parse(f"BASE {URL} SHA256:{PIN}").base == Base(URL, PIN)
    assert parse("BASE HTTPS://h.example/b").base.ref == "https://h.example/b"
    assert parse("BASE file:///srv/bases/fb14").base.ref == "file:///srv/bases/fb14"
    assert parse("BASE file://localhost/srv/b").base.ref == "file://localhost/srv/b"
    assert parse("BASE http://h.example:8080/d/b").base.ref == "http://h.example:8080/d/b"
    assert parse("BASE FreeBSD-14.1_RELEASE").base.ref == "FreeBSD-14.1_RELEASE"
    assert parse("BASE " + "a" * 128).base.is_url is False


def test_services_same_name_other_proto() -> None:
    rex = parse(base("SERVICE dns PORT 53\nSERVICE DNS PORT 53 PROTO udp\nSERVICE web PORT 65535"))
    assert rex.services == (
        Service("dns", 53, Proto.TCP),
        Service("dns", 53, Proto.UDP),
        Service("web", 65535, Proto.TCP),
    )


def test_positions_do_not_affect_equality() -> None:
    assert parse("BASE busybox\nPROVISION RUN x") == parse("\n\n  BASE busybox\n\n PROVISION RUN x")


def test_path_sets_context_and_file_name() -> None:
    rex = parse("BASE busybox", path=Path("/srv/app/web.rex"))
    assert rex.context_dir == Path("/srv/app")
    assert rex.default_name == "web"
    with pytest.raises(RexfileError) as info:
        parse("BASEE busybox", path=Path("/srv/app/web.rex"))
    assert str(info.value).startswith("/srv/app/web.rex:1:1: ")


# -- errors ----------------------------------------------------------------------------

BAD = [
    # (text, line, col, in the message, in the hint)
    ("", 1, 1, "no BASE", "BASE <url-or-name>"),
    ("# only a comment\n\n", 1, 1, "no BASE", "BASE"),
    ("PROVISION RUN x\nBASE busybox", 1, 1, "BASE must be the first", "start the file"),
    ("  ENV A=1", 1, 3, "expected BASE before ENV", "BASE"),
    ("BASE a\nBASE b", 2, 1, "BASE given twice (first at line 1)", "exactly one BASE"),
    ("BASE", 1, 5, "expected a base URL or name", "BASE https://"),
    ("BASE a b c", 1, 10, "unexpected 'c'", "BASE"),
    ("BASE a sha256:x y", 1, 17, "unexpected 'y'", "BASE"),
    ("BASE ftp://h/b", 1, 6, "unsupported URL scheme 'ftp'", "https://"),
    ("BASE s3://h/b", 1, 6, "unsupported URL scheme 's3'", "https://"),
    ("BASE https://h/b?x=1", 1, 6, "query or fragment", "remove"),
    ("BASE https:///b", 1, 6, "has no host", "https://host/dir/NAME"),
    ("BASE https://h:99999/b", 1, 6, "malformed URL", "https://host"),
    ("BASE https://[::1/b", 1, 6, "malformed URL", "https://host"),
    ("BASE https://h/", 1, 6, "does not name a base", "NAME.sha256"),
    ("BASE https://h", 1, 6, "does not name a base", "NAME.sha256"),
    ("BASE https://h/d/..", 1, 6, "does not name a base", "NAME.sha256"),
    ("BASE file://h/b", 1, 6, "names a host", "file:///"),
    ("BASE https:/h/b", 1, 6, "'//' after the scheme", "https://host"),
    ("BASE a/b", 1, 6, "has no '/'", "BASE NAME"),
    ("BASE .hidden", 1, 6, "bad base name", "BASE NAME"),
    ("BASE ..", 1, 6, "bad base name", "BASE NAME"),
    ("BASE " + "a" * 129, 1, 6, "129 characters", "BASE NAME"),
    ("BASE a md5:00", 1, 8, "expected sha256:<digest>", "64 hex digits"),
    ("BASE a " + PIN, 1, 8, "expected sha256:<digest>", "64 hex digits"),
    ("BASE a sha256:abc", 1, 15, "3 digits, not 64", "64 hex digits"),
    ("BASE a sha256:" + "g" * 64, 1, 15, "'g' is not a hex digit", "64 hex digits"),
    (base("PROVISION"), 2, 10, "expected RUN or COPY", "PROVISION RUN or PROVISION COPY"),
    (base("PROVISION   "), 2, 10, "expected RUN or COPY", "PROVISION RUN or PROVISION COPY"),
    (base("PROVISION EXEC ls"), 2, 11, "not 'EXEC'", "did you mean PROVISION RUN or"),
    (base("PROVISION RUN"), 2, 14, "expected a shell command", "PROVISION RUN <command>"),
    (base("PROVISION RUN   \t"), 2, 14, "expected a shell command", "PROVISION RUN"),
    (base("RUN ls"), 2, 1, "unknown instruction 'RUN'", "did you mean PROVISION RUN?"),
    (base("run ls"), 2, 1, "unknown instruction 'run'", "did you mean PROVISION RUN?"),
    (base("COPY a /b"), 2, 1, "unknown instruction 'COPY'", "did you mean PROVISION COPY?"),
    (base("FROM x"), 2, 1, "unknown instruction 'FROM'", "did you mean BASE?"),
    (base("EXPOSE 80"), 2, 1, "unknown instruction", "did you mean SERVICE?"),
    (base("PROVISON RUN ls"), 2, 1, "unknown instruction", "did you mean PROVISION?"),
    (base("HOSTNMAE a"), 2, 1, "unknown instruction 'HOSTNMAE'", "did you mean HOSTNAME?"),
    (base("SERVCE a PORT 1"), 2, 1, "unknown instruction", "did you mean SERVICE?"),
    (base("XYZZY"), 2, 1, "unknown instruction 'XYZZY'", "the instructions are BASE"),
    # U+0131 (dotless i) upper-cases to "I": no keyword through Unicode folding
    (base("prov\u0131s\u0131on RUN x"), 2, 1, "unknown instruction 'prov", "did you mean"),
    ("BAES busybox", 1, 1, "unknown instruction 'BAES'", "did you mean BASE?"),
    (base("PROVISION COPY"), 2, 15, "expected a source and a destination", "COPY <src> <dst>"),
    (base("PROVISION COPY a"), 2, 17, "expected a destination", "PROVISION COPY <src> <dst>"),
    (base("PROVISION COPY my file /x"), 2, 24, "exactly two paths", "quote"),
    (base("PROVISION COPY 'my file /x"), 2, 16, "unterminated ' quote", "close it"),
    (base('PROVISION COPY a "/x'), 2, 18, 'unterminated " quote', "close it"),
    (base("PROVISION COPY /etc/passwd /x"), 2, 16, "is absolute", "relative to the directory"),
    (base("PROVISION COPY '' /x"), 2, 16, "empty source path", "relative"),
    (base("PROVISION COPY .. /x"), 2, 16, "leaves the directory", "directory and below"),
    (base("PROVISION COPY a/../../x /x"), 2, 16, "leaves the directory", "below"),
    (base("PROVISION COPY ./../x /x"), 2, 16, "leaves the directory", "below"),
    (base("PROVISION COPY a etc/x"), 2, 18, "not an absolute path inside the jail", "/etc/x"),
    (base("PROVISION COPY a ./etc"), 2, 18, "not an absolute path", "e.g. /etc"),
    (base("PROVISION COPY a ''"), 2, 18, "not an absolute path", "jail's root"),
    (base("PROVISION COPY a /x/../../etc"), 2, 18, "contains '..'", "without '..'"),
    (base("ENV"), 2, 4, "expected KEY=VALUE after ENV", "ENV KEY=VALUE"),
    (base("ENV A"), 2, 5, "expected KEY=VALUE, not 'A'", "ENV KEY=VALUE"),
    (base("ENV =x"), 2, 5, "bad variable name ''", "letters, digits and '_'"),
    (base("ENV 1A=x"), 2, 5, "bad variable name '1A'", "not starting with a digit"),
    (base("ENV A-B=x"), 2, 5, "bad variable name 'A-B'", "letters, digits"),
    (base("ENV A =x"), 2, 5, "space before '='", "without spaces"),
    (base("ENV A=x\rb"), 2, 8, "carriage return", "remove"),
    (base("ENV A=1\nENV B=2\nENV A=3"), 4, 5, "ENV A is set twice (first at line 2)", "remove"),
    (base("HOSTNAME"), 2, 9, "expected an argument after HOSTNAME", "HOSTNAME docs.example.com"),
    (base("HOSTNAME a b"), 2, 12, "HOSTNAME takes one argument", "HOSTNAME docs"),
    (base("HOSTNAME a # web"), 2, 12, "unexpected '#'", "line of its own"),
    (base("HOSTNAME a\nHOSTNAME b"), 3, 1, "HOSTNAME given twice (first at line 2)", "remove"),
    (base("HOSTNAME a_b.example"), 2, 10, "bad host name 'a_b.example'", "RFC 1123"),
    (base("HOSTNAME 'a.example'"), 2, 10, 'contains "\'"', "RFC 1123"),
    (base("HOSTNAME a;b"), 2, 10, "contains ';'", "RFC 1123"),
    (base("HOSTNAME -a.example"), 2, 10, "starts or ends with '-'", "RFC 1123"),
    (base("HOSTNAME a..b"), 2, 10, "empty label", "RFC 1123"),
    (base("HOSTNAME 8.113.0.203.in-addr.arpa"), 2, 10, "reverse-DNS", "RFC 1123"),
    (base("HOSTNAME x.ip6.arpa."), 2, 10, "reverse-DNS", "RFC 1123"),
    (base("HOSTNAME " + "a" * 64), 2, 10, "64 characters long", "RFC 1123"),
    (base("IP"), 2, 3, "expected an argument after IP", "IP 203.0.113.8/24"),
    (base("IP 203.0.113.8"), 2, 4, "'203.0.113.8' has no prefix length", "IP 203.0.113.8/24"),
    (base("IP 203.0.113.8/24 x"), 2, 19, "IP takes one argument", "IP 203.0.113.8/24"),
    (base("IP 203.0.113.8/24\nIP 203.0.113.9/24"), 3, 1, "IP given twice", "remove one IP"),
    (base("IP 203.0.113.256/24"), 2, 4, "'203.0.113.256' is not an IPv4 or IPv6", "IP 203"),
    (base("IP docs/24"), 2, 4, "'docs' is not an IPv4 or IPv6 address", "IP 203"),
    (base("IP 203.0.113.08/24"), 2, 4, "not an IPv4 or IPv6", "IP 203"),
    (base("IP fe80::1%em0/64"), 2, 4, "zone index", None),
    (base("IP 203.0.113.8/33"), 2, 16, "bad prefix length '33': expected 1 to 32", "IP 203"),
    (base("IP 203.0.113.8/"), 2, 16, "bad prefix length ''", "IP 203"),
    (base("IP 203.0.113.8/0"), 2, 16, "bad prefix length '0'", "IP 203"),
    (base("IP 203.0.113.8/255.255.255.0"), 2, 16, "bad prefix length", "IP 203"),
    (base("IP 203.0.113.8/+24"), 2, 16, "bad prefix length", "IP 203"),
    (base("IP 2001:db8::1/129"), 2, 16, "expected 1 to 128", "IP 2001:db8::8/64"),
    (base("IP 203.0.113.0/24"), 2, 4, "network address of 203.0.113.0/24", "IP 203.0.113.1/24"),
    (base("IP 203.0.113.255/24"), 2, 4, "broadcast address of 203.0.113.0/24", "203.0.113.1/24"),
    (base("IP 203.0.113.4/30"), 2, 4, "network address", "IP 203.0.113.5/30"),
    (base("IP 2001:db8::/64"), 2, 4, "subnet-router anycast", "IP 2001:db8::1/64"),
    (base("IP 0.0.0.0/8"), 2, 4, "not a unicast host address", "IP 203.0.113.8/24"),
    (base("IP ::/64"), 2, 4, "not a unicast host address", "IP 203.0.113.8/24"),
    (base("IP 224.0.0.1/4"), 2, 4, "not a unicast host address", "IP 203.0.113.8/24"),
    (base("IP ff02::1/64"), 2, 4, "not a unicast host address", "IP 203.0.113.8/24"),
    (base("IP 255.255.255.255/32"), 2, 4, "not a unicast host address", "IP 203"),
    (base("SERVICE"), 2, 8, "expected a service name", "SERVICE <name> PORT <n>"),
    (base("SERVICE web"), 2, 12, "expected PORT", "SERVICE <name> PORT <n>"),
    (base("SERVICE web 80"), 2, 13, "expected PORT, not '80'", "SERVICE renderer PORT 1234"),
    (base("SERVICE web PORT"), 2, 17, "expected a port number", "SERVICE"),
    (base("SERVICE web PORT 0"), 2, 18, "bad port '0'", "SERVICE"),
    (base("SERVICE web PORT 65536"), 2, 18, "bad port '65536'", "SERVICE"),
    (base("SERVICE web PORT http"), 2, 18, "bad port 'http'", "SERVICE"),
    (base("SERVICE web PORT -1"), 2, 18, "bad port '-1'", "SERVICE"),
    (base("SERVICE web PORT 80 tcp"), 2, 21, "unexpected 'tcp'", "SERVICE"),
    (base("SERVICE web PORT 80 PROTO"), 2, 26, "expected tcp or udp after PROTO", "SERVICE"),
    (base("SERVICE web PORT 80 PROTO sctp"), 2, 27, "expected tcp or udp, not 'sctp'", "SERVICE"),
    (base("SERVICE web PORT 80 PROTO tcp x"), 2, 31, "unexpected 'x'", "SERVICE"),
    (base("SERVICE my_web PORT 80"), 2, 9, "bad service name", "RFC 6335"),
    (base("SERVICE 1234 PORT 80"), 2, 9, "no letter", "RFC 6335"),
    (base("SERVICE averyverylongname PORT 80"), 2, 9, "limit is 15", "RFC 6335"),
    (base("SERVICE a--b PORT 80"), 2, 9, "'--'", "RFC 6335"),
    (
        base("SERVICE web PORT 80\nSERVICE Web PORT 81 PROTO TCP"),
        3,
        9,
        "SERVICE web tcp is declared twice (first at line 2)",
        "another name or PROTO",
    ),
    ("BASE a\0", 1, 7, "NUL", "text"),
    ("BASE a\n# x\0y", 2, 4, "NUL", "text"),
    (base("PROVISION RUN a \\\n\nPROVISION RUN b"), 2, 17, "next line is blank", "remove"),
    (base("PROVISION RUN a \\\n   \t\nb"), 2, 17, "next line is blank", "remove"),
    (base("PROVISION RUN a \\"), 2, 17, "the file ends with '\\'", "remove the trailing"),
    (base("PROVISION RUN a \\\n# c"), 2, 17, "the file ends with '\\'", "remove the trailing"),
    (base("ENABLE"), 2, 7, "expected a service name after ENABLE", "ENABLE <service>"),
    (base("ENABLE nginx-1"), 2, 8, "bad service name 'nginx-1'", "_enable"),
    (base("ENABLE 1nginx"), 2, 8, "bad service name", "not starting with a digit"),
    (base("ENABLE nginx WITH -x"), 2, 14, "expected FLAGS or the end", "FLAGS <text>"),
    (base("ENABLE nginx FLAGS"), 2, 19, "expected the flags after FLAGS", "FLAGS <text>"),
    (base("ENABLE a FLAGS x\ry"), 2, 17, "carriage return in FLAGS", "remove"),
    (base("ENABLE nginx\nENABLE nginx"), 3, 8, "ENABLE nginx is given twice", "once"),
    (base("ENABL nginx"), 2, 1, "unknown instruction 'ENABL'", "did you mean ENABLE?"),
]


@pytest.mark.parametrize(("text", "line", "col", "message", "hint"), BAD)
def test_errors(text: str, line: int, col: int, message: str, hint: str | None) -> None:
    exc = error(text)
    assert (exc.line, exc.col) == (line, col), exc.message
    assert exc.file == "t.rex"
    assert message in exc.reason
    assert str(exc) == f"t.rex:{line}:{col}: {exc.reason}"
    if hint is not None:
        assert exc.hint is not None
        assert hint in exc.hint


def test_error_position_on_a_continued_line() -> None:
    # the bad port is on the third physical line of the instruction
    exc = error(base("SERVICE web \\\n  PORT \\\n    http"))
    assert (exc.line, exc.col) == (4, 5)
    # a missing argument points just past the last character, on the last line
    exc = error(base("PROVISION COPY \\\n   onlysrc"))
    assert (exc.line, exc.col) == (3, 11)


def test_error_position_inside_a_quoted_copy() -> None:
    exc = error(base("PROVISION COPY 'a b' \\\n  \"x y\""))
    assert (exc.line, exc.col) == (3, 3)
    assert "not an absolute path" in exc.reason


def test_columns_count_characters_not_bytes() -> None:
    exc = error("# ünïcödé\nBASE ünï")
    assert (exc.line, exc.col) == (2, 6)


# -- the lexer -----------------------------------------------------------------------


def test_logical_lines_keep_physical_positions() -> None:
    lines = logical_lines("# c\n  A b\\\n  c  \n\nD")
    assert [line.text for line in lines] == ["  A b  c", "D"]
    first = lines[0]
    assert first.pos(2) == Pos(2, 3)  # "A"
    assert first.pos(5) == Pos(3, 1)  # first char of the continued line
    assert first.end == Pos(3, 4)  # just past "c"
    assert [(w.text, w.pos) for w in first.words()] == [
        ("A", Pos(2, 3)),
        ("b", Pos(2, 5)),
        ("c", Pos(3, 3)),
    ]


def test_shell_words() -> None:
    (line,) = logical_lines('X \'a b\' "c\\"d" e\\ f g\'h\'"i" "" \'\'')
    words = line.shell_words(1)
    assert [w.text for w in words] == ["a b", 'c"d', "e f", "ghi", "", ""]
    assert [w.pos.col for w in words] == [3, 9, 16, 21, 29, 32]


def test_rest_is_verbatim() -> None:
    (line,) = logical_lines("RUN   echo 'a  b' \"c\" # d  ")
    rest = line.rest(3)
    assert rest is not None
    assert rest.text == "echo 'a  b' \"c\" # d"
    assert rest.pos == Pos(1, 7)


# -- load --------------------------------------------------------------------------------


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "public-docs.rex"
    path.write_text(PUBLIC_DOCS, encoding="utf-8")
    rex = load(path)
    assert rex == parse(PUBLIC_DOCS)
    assert rex.path == path
    assert rex.default_name == "public-docs"
    assert rex.context_dir == tmp_path


def test_load_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "x.rex"
    path.write_text("BASE busybox\nPROVISON RUN x\n", encoding="utf-8")
    with pytest.raises(RexfileError) as info:
        load(path)
    assert str(info.value) == f"{path}:2:1: unknown instruction 'PROVISON'"
    assert info.value.hint == "did you mean PROVISION?"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.rex"
    with pytest.raises(RexfileError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "cannot read" in info.value.reason
    assert info.value.hint


def test_load_refuses_a_file_over_the_size_limit(tmp_path: Path) -> None:
    line = b"# " + b"x" * 1021 + b"\n"  # 1 KiB
    path = tmp_path / "big.rex"
    path.write_bytes(b"BASE busybox\n" + line * 1023 + b"#" * (1024 - 14) + b"\n")
    assert path.stat().st_size == MAX_FILE == 1024 * 1024
    assert load(path).base == Base("busybox")  # the limit itself is fine
    with path.open("ab") as f:
        f.write(b"#")
    with pytest.raises(RexfileError) as info:
        load(path)
    assert (
        str(info.value)
        == f"{path}:1:1: the file is larger than 1024 KiB, the limit for a .rex file"
    )
    assert info.value.hint and "PROVISION COPY" in info.value.hint


def test_load_reads_no_more_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.rex"
    with path.open("wb") as f:
        f.truncate(64 * 1024**2)  # sparse zeros: a whole read would meet a NUL byte first
    with pytest.raises(RexfileError, match="larger than 1024 KiB"):
        load(path)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(RexfileError) as info:
        load(tmp_path)
    assert "cannot read" in info.value.reason


def test_load_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.rex"
    path.write_bytes("BASE busybox\nENV A=caf\xe9\n".encode("latin-1"))
    with pytest.raises(RexfileError) as info:
        load(path)
    assert (info.value.line, info.value.col) == (2, 10)
    assert "not UTF-8" in info.value.reason
    assert "0xe9" in info.value.reason
    assert info.value.hint == "save the file as UTF-8"


def test_load_nul_bytes(tmp_path: Path) -> None:
    path = tmp_path / "utf16.rex"
    path.write_bytes("BASE busybox\n".encode("utf-16-le"))
    with pytest.raises(RexfileError) as info:
        load(path)
    assert (info.value.line, info.value.col) == (1, 2)
    assert "NUL" in info.value.reason
    assert info.value.hint is not None
    assert "UTF-16" in info.value.hint


def test_load_error_column_after_multibyte(tmp_path: Path) -> None:
    path = tmp_path / "x.rex"
    path.write_bytes("BASE bü\nENV A=é".encode() + b"\xff\n")
    with pytest.raises(RexfileError) as info:
        load(path)
    assert (info.value.line, info.value.col) == (2, 8)


# -- the reference page -------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "rexfile.md"


def test_examples_in_the_reference_page_parse() -> None:
    blocks = DOC.read_text(encoding="utf-8").split("```\n")[1::2]
    examples = [b for b in blocks if "<" not in b and not b.startswith("$")]
    assert len(examples) >= 10
    for block in examples:
        if block.startswith("# "):  # a whole file
            parse(block)
            continue
        if "\\\n" in block:  # one continued instruction
            parse("BASE busybox\n" + block)
            continue
        # blocks of alternatives (two IP lines, three BASE lines): one at a time
        for line in block.splitlines():
            parse(line if line.startswith("BASE") else "BASE busybox\n" + line)
    assert parse(blocks[-2]) == parse(PUBLIC_DOCS)
    assert parse(blocks[-1]) == parse(INTERNAL_RENDERER)
