"""Name validators: host names (RFC 1123), service names (RFC 6335), jail names."""

from __future__ import annotations

import pytest

from rexcarcer.errors import UsageError
from rexcarcer.names import (
    check_jail_name,
    hostname_problem,
    jail_name_problem,
    service_problem,
    suggest_jail_name,
)


@pytest.mark.parametrize(
    "name",
    [
        "docs.example.com",
        "docs.example.com.",
        "localhost",
        "Docs.Example.COM",
        "a",
        "xn--bcher-kva.example",
        "1password.example.com",
        "a-b.c-d.e",
        "a" * 63 + ".example",
        ".".join(["a" * 63] * 3) + "." + "b" * 61,  # 253 characters
    ],
)
def test_good_hostnames(name: str) -> None:
    assert hostname_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        (".", "empty"),
        ("a..b", "empty label"),
        (".a", "empty label"),
        ("a.b..", "empty label"),
        ("a" * 64 + ".example", "64 characters long"),
        (".".join(["a" * 63] * 3) + "." + "b" * 62, "254 characters long"),
        ("-a.example", "starts or ends with '-'"),
        ("a-.example", "starts or ends with '-'"),
        ("a_b.example", "'_'"),
        ("a b", "' '"),
        ('"a"', "'\"'"),
        ("a;rm", "';'"),
        ("a\n.example", "'\\n'"),
        ("bücher.example", "'ü'"),
        ("1.2.3.4", "all digits"),
        ("123", "all digits"),
        ("4.3.2.1.in-addr.arpa", "reverse-DNS"),
        ("in-addr.arpa", "reverse-DNS"),
        ("1.0.IP6.ARPA.", "reverse-DNS"),
    ],
)
def test_bad_hostnames(name: str, reason: str) -> None:
    problem = hostname_problem(name)
    assert problem is not None
    assert reason in problem


def test_arpa_itself_and_lookalikes_are_fine() -> None:
    assert hostname_problem("notin-addr.arpa") is None
    assert hostname_problem("in-addr.arpa.example.com") is None


@pytest.mark.parametrize("name", ["renderer", "http", "x", "a1", "my-svc", "WEB", "a" * 15, "1a"])
def test_good_service_names(name: str) -> None:
    assert service_problem(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a" * 16, "16 characters long"),
        ("-web", "starts or ends"),
        ("web-", "starts or ends"),
        ("my--svc", "'--'"),
        ("1234", "no letter"),
        ("my_svc", "'_'"),
        ("web.x", "'.'"),
        ("wéb", "'é'"),
    ],
)
def test_bad_service_names(name: str, reason: str) -> None:
    problem = service_problem(name)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize("name", ["public-docs", "a", "web1", "1web", "a" * 63, "x--y"])
def test_good_jail_names(name: str) -> None:
    assert jail_name_problem(name) is None
    assert check_jail_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a.b", "dots"),
        ("Web", "upper-case"),
        ("-web", "starts or ends"),
        ("web-", "starts or ends"),
        ("my_app", "'_'"),
        ("a" * 64, "64 characters long"),
        ("1234", "jail ID"),
        ("a b", "' '"),
    ],
)
def test_bad_jail_names(name: str, reason: str) -> None:
    problem = jail_name_problem(name)
    assert problem is not None
    assert reason in problem
    with pytest.raises(UsageError) as info:
        check_jail_name(name)
    assert reason in info.value.message
    assert info.value.hint


def test_check_jail_name_suggests_a_fix() -> None:
    with pytest.raises(UsageError) as info:
        check_jail_name("My_App")
    assert info.value.hint is not None
    assert "--name my-app" in info.value.hint


@pytest.mark.parametrize(
    ("name", "guess"),
    [("My_App", "my-app"), ("a.b.c", "a-b-c"), ("__", None), ("1234", None), ("x" * 70, "x" * 63)],
)
def test_suggest_jail_name(name: str, guess: str | None) -> None:
    assert suggest_jail_name(name) == guess
