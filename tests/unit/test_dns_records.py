"""DNS records of a jail and the validation in front of unbound (pure)."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st

from rexcarcer.dns import DnsError
from rexcarcer.dns.plan import Change, drift, plan_sync
from rexcarcer.dns.records import (
    HOSTNAME_TTL,
    Record,
    check_hostname,
    check_line,
    check_zone,
    hostname_problem,
    in_zone,
    jail_records,
    parse_list_local_data,
    render_data_file,
    reverse_zones,
    sentinel,
    service_problem,
)
from rexcarcer.errors import StateError
from rexcarcer.model.jail import JailRecord

DATA = Path(__file__).resolve().parents[1] / "data" / "dns"
ZONE = "rex.internal"

INJECTIONS = [
    "a.example.com. 1 IN A 1.2.3.4",
    'x"; local-zone: "example.com" redirect',
    "x.example.com\nlocal-data: evil.example.com A 6.6.6.6",
    "x.example.com\r\nlocal_zone_remove rex.internal",
    "x.example.com;local-zone:x",
    "x.example.com\x04",
    "x.example.com\\010",
    "x.example.com'",
    "x.example.com\tIN",
    "x.example.com\x00",
    "we\u212ab.example.com",  # KELVIN SIGN: str.lower() makes it an ASCII 'k'
]


def rec(**kw: Any) -> JailRecord:
    base: dict[str, Any] = {"name": "web1", "address": "203.0.113.12/24",
                            "hostname": f"web1.jail.{ZONE}", "services": []}  # fmt: skip
    base.update(kw)
    return JailRecord.from_json(base)


def lines(records: list[Record]) -> list[str]:
    return [r.line() for r in records]


def test_jail_and_service_records_match_the_design() -> None:
    services = [{"name": "renderer", "port": 1234, "proto": "tcp"},
                {"name": "dns", "port": 53, "proto": "udp"}]  # fmt: skip
    assert lines(jail_records(rec(services=services), ZONE)) == [
        "12.113.0.203.in-addr.arpa. 30 IN PTR web1.jail.rex.internal.",
        "_dns._udp.svc.rex.internal. 30 IN SRV 10 100 53 web1.jail.rex.internal.",
        "_renderer._tcp.svc.rex.internal. 30 IN SRV 10 100 1234 web1.jail.rex.internal.",
        "dns.svc.rex.internal. 30 IN A 203.0.113.12",
        "renderer.svc.rex.internal. 30 IN A 203.0.113.12",
        "web1.jail.rex.internal. 30 IN A 203.0.113.12",
    ]


def test_hostname_gets_exactly_one_a_record_with_the_longer_ttl() -> None:
    out = lines(jail_records(rec(hostname="Docs.Example.COM."), ZONE))
    assert "docs.example.com. 300 IN A 203.0.113.12" in out
    assert not any("example.com" in ln and not ln.startswith("docs.") for ln in out)


def test_ipv6_gets_aaaa_and_an_ip6_arpa_ptr() -> None:
    out = lines(jail_records(rec(address="2001:db8::5/64"), ZONE))
    assert "web1.jail.rex.internal. 30 IN AAAA 2001:db8::5" in out
    ptr = "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
    assert f"{ptr} 30 IN PTR web1.jail.rex.internal." in out


def test_one_ptr_per_address_and_nothing_without_one() -> None:
    for address in ("203.0.113.12/24", "2001:db8::5/64"):
        out = jail_records(rec(address=address), ZONE)
        assert sum(r.rtype == "PTR" for r in out) == 1
    assert jail_records(rec(address=None), ZONE) == []


def test_two_ports_of_one_service_give_two_srv_and_one_a() -> None:
    services = [{"name": "web", "port": 80, "proto": "tcp"}, {"name": "web", "port": 8080}]
    out = jail_records(rec(services=services), ZONE)
    assert sum(r.rtype == "SRV" for r in out) == 2
    assert sum(r.name == "web.svc.rex.internal." for r in out) == 1


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_through_hostname_is_refused(payload: str) -> None:
    with pytest.raises(DnsError, match="HOSTNAME"):
        jail_records(rec(hostname=payload), ZONE)


@pytest.mark.parametrize(
    "payload", [*INJECTIONS, "web server", "a--b", "-web", "123", "x" * 16, "we\u212ab"]
)
def test_injection_through_service_name_is_refused(payload: str) -> None:
    with pytest.raises(DnsError, match="service name"):
        jail_records(rec(services=[{"name": payload, "port": 80, "proto": "tcp"}]), ZONE)


@pytest.mark.parametrize("port", [0, 65536, "80", True, None, 1.5])
def test_bad_ports_and_protocols_never_become_a_record(port: object) -> None:
    # a jail record is typed when it is read (model/jail.py): nothing untyped reaches DNS
    with pytest.raises(StateError, match="port"):
        rec(services=[{"name": "web", "port": port}])
    with pytest.raises(StateError, match="protocol"):
        rec(services=[{"name": "web", "port": 80, "proto": "sctp"}])


@pytest.mark.parametrize("name", ["web1 x", "a.b", "-x", "x" * 64, 'x"', ""])
def test_bad_jail_names_are_refused(name: str) -> None:
    with pytest.raises(DnsError):
        jail_records(rec(name=name), ZONE)


def test_bad_address_is_refused() -> None:
    with pytest.raises(StateError, match="IPv4 or IPv6 interface"):
        rec(address="203.0.113.12 IN A 1.2.3.4")


@pytest.mark.parametrize(
    ("hostname", "why"),
    [
        ("4.3.2.1.in-addr.arpa", "reverse"),
        ("x.ip6.arpa", "reverse"),
        ("rex.internal", "zone"),
        ("other.jail.rex.internal", "jail.rex.internal"),
        ("web.svc.rex.internal", "svc.rex.internal"),
        ("h1.host.rex.internal", "host.rex.internal, where rex names the cluster's hosts"),
        ("host.rex.internal", "host.rex.internal"),
        ("localhost", "fully qualified"),
        ("1.2.3.4", "numeric"),
        ("a" * 250 + ".com", "253"),
        ("a..b.com", "label"),
    ],
)
def test_hostname_policy(hostname: str, why: str) -> None:
    with pytest.raises(DnsError, match=why):
        check_hostname(hostname, "web1", ZONE)


def test_hostname_may_be_its_own_canonical_name_or_elsewhere_in_the_zone() -> None:
    assert check_hostname("web1.jail.rex.internal", "web1", ZONE) == "web1.jail.rex.internal"
    assert check_hostname("docs.rex.internal", "web1", ZONE) == "docs.rex.internal"


def test_service_names_follow_rfc_6335() -> None:
    for ok in ["web", "w", "http-alt", "x1", "a1-b2-c3", "abcdefghijklmno"]:
        assert service_problem(ok) is None, ok
    for bad in ["", "1", "12-34", "-a", "a-", "a--b", "abcdefghijklmnop", "a_b", "a.b"]:
        assert service_problem(bad) is not None, bad


# -- properties on generated names ------------------------------------------------------

_LDH = string.ascii_letters + string.digits + "-"
# RFC 1123 2.1 labels, in either case: 1-63 letters, digits and inner hyphens.
_LABELS = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True)
# The last label starts with a letter (all digits would read as an address), not arpa.
_TOP = st.from_regex(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", fullmatch=True).filter(
    lambda label: label.lower() != "arpa"
)


def _outside_the_zone(name: str) -> bool:
    bare = name.lower().rstrip(".")
    return bare != ZONE and not bare.endswith("." + ZONE)


# Valid, fully qualified host names outside the cluster zone (which has rules of
# its own), up to 253 characters, with or without the trailing dot.
HOSTNAMES = st.builds(
    lambda labels, top, dot: ".".join([*labels, top]) + ("." if dot else ""),
    st.lists(_LABELS, min_size=1, max_size=4), _TOP, st.booleans(),
).filter(lambda n: len(n.rstrip(".")) <= 253 and _outside_the_zone(n))  # fmt: skip

# What must never get through: any character outside letters, digits, '-' and '.',
# and whole injections as the issue lists them.
_HOSTILE = st.characters(exclude_characters=_LDH + ".") | st.sampled_from(
    ["\n", "\r\n", '"', "'", ";", " ", "\t", "\\", "\x00", "\x7f", "\u212a", "..",
     '"; local-zone: "example.com" redirect', "\nlocal-data: evil.example.com A 6.6.6.6"]
)  # fmt: skip


@st.composite
def tampered(draw: st.DrawFn) -> str:
    """A valid host name with something hostile inserted somewhere in it."""
    name = draw(HOSTNAMES)
    at = draw(st.integers(0, len(name)))
    return name[:at] + draw(_HOSTILE) + name[at:]


def _one_clean_line(record: Record) -> None:
    line = check_line(record.line())
    assert line.isascii() and record.name == record.name.lower()
    assert "\n" not in line and '"' not in line and ";" not in line
    assert len(line.split(" ")) in (5, 8)


@given(HOSTNAMES)
def test_every_valid_hostname_is_published_as_exactly_one_a_record(name: str) -> None:
    assert hostname_problem(name) is None, name  # the strategy makes valid names only
    out = jail_records(rec(hostname=name), ZONE)
    own = name.lower().rstrip(".") + "."
    assert [r for r in out if r.name == own] == [Record(own, "A", "203.0.113.12", HOSTNAME_TTL)]
    for r in out:
        _one_clean_line(r)


@given(tampered())
def test_a_hostname_with_anything_hostile_in_it_is_refused(name: str) -> None:
    assert hostname_problem(name) is not None, repr(name)
    with pytest.raises(DnsError, match="HOSTNAME"):
        jail_records(rec(hostname=name), ZONE)


@given(st.one_of(HOSTNAMES, tampered(), st.text(max_size=80)))
def test_anything_that_validates_renders_one_clean_line(text: str) -> None:
    """No string accepted as a host name can smuggle a second record or directive:
    drawn from valid names (so the assertions run), valid names with something
    hostile inserted, and any text."""
    if hostname_problem(text) is not None:
        event("refused by hostname_problem")
        if text:  # an empty HOSTNAME means none: the jail's own name is published
            with pytest.raises(DnsError):
                jail_records(rec(hostname=text), ZONE)
        return
    try:
        out = jail_records(rec(hostname=text), ZONE)
    except DnsError:
        event("valid, refused by the zone policy (arpa, the cluster zone)")
        return
    event("valid and published")
    note(f"published {text!r} as {[r.line() for r in out]}")
    assert any(r.name == text.lower().rstrip(".") + "." for r in out)
    for r in out:
        _one_clean_line(r)


@pytest.mark.parametrize(
    "line",
    [
        "a.rex.internal. 30 IN A 1.2.3.4\nb.rex.internal. 30 IN A 1.2.3.4",
        'a.rex.internal. 30 IN TXT "x" local-zone',
        "a.rex.internal. 30 IN CNAME b.rex.internal.",
        "a.rex.internal 30 IN A 1.2.3.4",
        "a.rex.internal. 30 IN A 1.2.3.4 extra",
        'a.rex.internal. 30 IN TXT "a\\"b"',
    ],
)
def test_check_line_refuses_anything_but_one_record(line: str) -> None:
    with pytest.raises(DnsError, match="malformed"):
        check_line(line)


def test_zone_validation() -> None:
    assert check_zone("Rex.Internal.") == "rex.internal"
    assert check_zone("internal") == "internal"
    for bad in ["rex internal", "in-addr.arpa", 'x";', "-x.y", "\u212a", "re\u212a.internal"]:
        with pytest.raises(DnsError, match="bad DNS zone") as err:
            check_zone(bad)
        assert "REX_ZONE" in (err.value.hint or "")


def test_reverse_zones_sit_on_octet_and_nibble_boundaries() -> None:
    net = ipaddress.ip_network
    assert reverse_zones(net("203.0.113.0/24")) == ["113.0.203.in-addr.arpa."]
    assert reverse_zones(net("10.1.0.0/16")) == ["1.10.in-addr.arpa."]
    assert len(reverse_zones(net("10.1.0.0/20"))) == 16
    assert reverse_zones(net("10.1.0.0/20"))[1] == "1.1.10.in-addr.arpa."
    assert reverse_zones(net("10.1.0.0/26")) == []  # never black-hole the neighbours
    assert reverse_zones(net("2001:db8::/64")) == ["0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]
    assert len(reverse_zones(net("2001:db8::/62"))) == 4


def test_in_zone_is_strictly_below() -> None:
    zones = ("rex.internal.", "113.0.203.in-addr.arpa.")
    assert in_zone("a.jail.rex.internal.", zones)
    assert in_zone("5.113.0.203.in-addr.arpa.", zones)
    assert not in_zone("rex.internal.", zones)
    assert not in_zone("xrex.internal.", zones)


def test_parse_real_list_local_data_output() -> None:
    records = parse_list_local_data((DATA / "list_local_data.txt").read_text())
    assert len(records) > 100  # unbound's default zones are in it too
    ours = [r.line() for r in records if r.name.endswith("rex.internal.")]
    assert "b.jail.rex.internal. 30 IN AAAA 2001:db8::3" in ours
    assert "_web._tcp.svc.rex.internal. 30 IN SRV 10 100 80 a.jail.rex.internal." in ours
    assert sentinel(ZONE) in records
    assert Record("docs.example.com.", "A", "203.0.113.3", 300) in records


def test_data_file_never_holds_the_sentinel_or_a_quote() -> None:
    records = [*jail_records(rec(), ZONE), sentinel(ZONE)]
    text = render_data_file(records, header="generated\nby rex")
    assert text.startswith("# generated\n# by rex\nserver:\n")
    assert "TXT" not in text
    body = [ln for ln in text.splitlines() if ln.startswith("    ")]
    assert all(ln.count('"') == 2 for ln in body) and len(body) == 2


# -- plan ---------------------------------------------------------------------------------


def _a(name: str, ip: str, ttl: int = 30) -> Record:
    return Record(name, "A", ip, ttl)


def test_plan_adds_only_what_is_new() -> None:
    a, b = _a("a.", "192.0.2.1"), _a("b.", "192.0.2.2")
    assert plan_sync([a], [a, b]) == Change((), (b,))
    assert plan_sync([a], [a]).empty


def test_plan_removes_a_shared_name_and_re_adds_the_survivors() -> None:
    one, two = _a("web.svc.", "192.0.2.1"), _a("web.svc.", "192.0.2.2")
    own = _a("j1.jail.", "192.0.2.1")
    change = plan_sync([one, two, own], [two])
    assert change == Change(("j1.jail.", "web.svc."), (two,))


def test_plan_replaces_a_changed_ttl() -> None:
    assert plan_sync([_a("a.", "192.0.2.1", 60)], [_a("a.", "192.0.2.1")]) == Change(
        ("a.",), (_a("a.", "192.0.2.1"),)
    )


def test_drift_reports_both_directions() -> None:
    a, b, c = _a("a.", "192.0.2.1"), _a("b.", "192.0.2.2"), _a("c.", "192.0.2.3")
    d = drift([a, b], [b, c])
    assert d.missing == (c,) and d.unexpected == (a,) and not d.empty
