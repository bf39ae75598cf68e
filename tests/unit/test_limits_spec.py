"""LIMIT values: what parses, to what, and what a bad value is told."""

from __future__ import annotations

import pytest

from rexcarcer.errors import RexError
from rexcarcer.limits import LimitError, Limits, Resource, parse_limit, parse_limits
from rexcarcer.rexfile.limits import Problem, format_size, limit_problem


@pytest.mark.parametrize(
    ("resource", "text", "value"),
    [
        ("memory", "512M", 512 << 20),
        ("memory", "512m", 512 << 20),
        ("memory", "4M", 4 << 20),
        ("memory", "4096K", 4 << 20),
        ("memory", "2G", 2 << 30),
        ("memory", "1T", 1 << 40),
        ("memory", "1024T", 1 << 50),
        ("memory", "33554432", 32 << 20),
        ("MEMORY", "64M", 64 << 20),  # the resource is a keyword: any case
        ("cpu", "0.5", 0.5),
        ("cpu", "2", 2.0),
        ("cpu", "0.01", 0.01),
        ("cpu", "1.25", 1.25),
        ("cpu", "1024", 1024.0),
        ("pids", "1", 1),
        ("pids", "200", 200),
        ("openfiles", "16", 16),
        ("openfiles", "1048576", 1 << 20),
    ],
)
def test_good_values(resource: str, text: str, value: float) -> None:
    assert parse_limit(resource, text) == (Resource(resource.lower()), value)
    assert limit_problem(resource, text) is None


@pytest.mark.parametrize(
    ("resource", "text", "reason", "hint"),
    [
        ("memory", "3M", "memory limit 3M is below the minimum of 4M", "512M"),
        ("memory", "0", "below the minimum of 4M", "K/M/G/T"),
        ("memory", "1.5G", "memory size '1.5G' is not a whole number", "1536M"),
        ("memory", "512MB", "has an unknown unit 'MB'", "binary multiples"),
        ("memory", "512P", "has an unknown unit 'P'", "K/M/G/T"),
        ("memory", "-1", "memory size '-1' is not a number", "512M"),
        ("memory", "lots", "memory size 'lots' is not a number", "512M"),
        ("memory", "", "memory size '' is not a number", "512M"),
        ("memory", "1025T", "above 1024T", "leave LIMIT memory out"),
        ("cpu", "0", "cpu 0 must be at least 0.01 core", "0.5"),
        ("cpu", "0.001", "cpu 0.001 is finer than 0.01 core", "0.01 to 1024"),
        ("cpu", "1025", "cpu 1025 is more than 1024 cores", "0.01 to 1024"),
        ("cpu", ".5", "cpu '.5' is not a decimal number of cores", "LIMIT cpu 0.5"),
        ("cpu", "-1", "not a decimal number", "0.5"),
        ("cpu", "1e3", "not a decimal number", "0.5"),
        ("cpu", "nan", "not a decimal number", "0.5"),
        ("cpu", "50%", "not a decimal number", "0.5"),
        ("pids", "0", "pids must be at least 1", "LIMIT pids 200"),
        ("pids", "1.5", "pids '1.5' is not a whole number", "from 1 to 4194304"),
        ("pids", "1_000", "not a whole number", "LIMIT pids 200"),
        ("pids", "٣", "not a whole number", "LIMIT pids 200"),  # a non-ASCII digit
        ("pids", "4194305", "above the maximum of 4194304", "LIMIT pids 200"),
        ("openfiles", "0", "openfiles must be at least 1", "LIMIT openfiles 1024"),
        ("openfiles", "+16", "not a whole number", "LIMIT openfiles 1024"),
        ("openfiles", "1048577", "above the maximum of 1048576", "LIMIT openfiles 1024"),
        ("swap", "1G", "unknown resource 'swap' for LIMIT", "memory, cpu, pids, openfiles"),
    ],
)
def test_bad_values(resource: str, text: str, reason: str, hint: str) -> None:
    problem = limit_problem(resource, text)
    assert isinstance(problem, Problem)
    assert reason in problem.reason
    assert hint in problem.hint
    with pytest.raises(LimitError) as err:
        parse_limit(resource, text)
    assert (err.value.message, err.value.hint) == problem  # the pair, as raised


def test_limit_error_is_a_rex_error_with_its_own_code() -> None:
    assert issubclass(LimitError, RexError)
    assert LimitError.exit_code == 43


def test_parse_limits_builds_one_value_and_refuses_a_second() -> None:
    limits = parse_limits([("memory", "512M"), ("cpu", "0.5"), ("openfiles", "64")])
    assert limits == Limits(memory=512 << 20, cpu=0.5, openfiles=64)
    assert limits and not Limits()
    assert limits.get(Resource.PIDS) is None
    with pytest.raises(LimitError, match="LIMIT memory is given twice") as err:
        parse_limits([("memory", "512M"), ("Memory", "1G")])
    assert err.value.hint == "keep one LIMIT memory line"


def test_limits_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Limits().memory = 1  # type: ignore[misc]


def test_format_size() -> None:
    assert [format_size(n) for n in (512 << 20, 1 << 40, 4096, 1000)] == [
        "512M",
        "1T",
        "4K",
        "1000",
    ]
