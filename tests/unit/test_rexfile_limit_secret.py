"""LIMIT and SECRET in the .rex language: the values limits.py accepts, errors at
file:line:col (exit 10, like every .rex error), and what the definition records."""

from __future__ import annotations

import pytest

from rexcarcer import limits
from rexcarcer.errors import RexfileError
from rexcarcer.rexfile import limits as spec
from rexcarcer.rexfile.ast import Base, Rexfile
from rexcarcer.rexfile.limits import LimitError, Limits, Resource
from rexcarcer.rexfile.parser import parse

GOOD = """\
BASE bb
LIMIT memory 512M
limit CPU 0.5
LIMIT pids 200
LIMIT openfiles 1024
SECRET db_password
SECRET api.key-2
"""


def error(text: str) -> RexfileError:
    with pytest.raises(RexfileError) as err:
        parse("BASE bb\n" + text, file="app.rex")
    return err.value


def test_limits_and_secrets_are_parsed() -> None:
    rex = parse(GOOD)
    assert rex.limits == Limits(memory=512 << 20, cpu=0.5, pids=200, openfiles=1024)
    assert rex.secrets == ("db_password", "api.key-2")
    assert rex.canonical()["limits"] == {
        "memory": 512 << 20, "cpu": 0.5, "pids": 200, "openfiles": 1024,
    }  # fmt: skip
    assert rex.canonical()["secrets"] == ["db_password", "api.key-2"]


def test_a_file_without_them_keeps_its_digest() -> None:
    """Definitions written before LIMIT and SECRET existed do not change digest
    (that would make every jail an update in place after an upgrade)."""
    rex = parse("BASE bb\n")
    assert "limits" not in rex.canonical() and "secrets" not in rex.canonical()
    assert rex.digest() == Rexfile(Base("bb")).digest()
    assert parse("BASE bb\nLIMIT pids 5\n").digest() != rex.digest()
    assert parse("BASE bb\nSECRET a\n").digest() != rex.digest()


@pytest.mark.parametrize(
    ("text", "col", "reason"),
    [
        ("LIMIT memory 1.5G", 14, "memory size '1.5G' is not a whole number"),
        ("LIMIT memory 512Q", 14, "unknown unit 'Q'"),
        ("LIMIT memory 1M", 14, "below the minimum of 4M"),
        ("LIMIT disk 10G", 7, "unknown resource 'disk'"),
        ("LIMIT mémoire 10G", 7, "unknown resource"),
        ("LIMIT cpu 0.001", 11, "finer than 0.01 core"),
        ("LIMIT cpu half", 11, "not a decimal number"),
        ("LIMIT pids 0", 12, "pids must be at least 1"),
        ("LIMIT openfiles -3", 17, "not a whole number"),
        ("LIMIT memory", 13, "expected a value after LIMIT memory"),
        ("LIMIT", 6, "expected a resource after LIMIT"),
        ("LIMIT pids 10 20", 15, "LIMIT takes a resource and one value"),
        ("SECRET", 7, "expected a secret name after SECRET"),
        ("SECRET ../etc/shadow", 8, "contains '/'"),
        ("SECRET .hidden", 8, "does not start with a letter or digit"),
        ("SECRET " + "a" * 65, 8, "the limit is 64"),
    ],
)
def test_bad_limit_or_secret_points_at_the_word(text: str, col: int, reason: str) -> None:
    err = error(text)
    assert (err.line, err.col) == (2, col), err.message
    assert reason in err.reason
    assert err.hint
    assert err.exit_code == RexfileError.exit_code == 10
    assert err.message.startswith("app.rex:2:")


def test_twice_is_refused_with_the_first_line() -> None:
    err = error("LIMIT memory 64M\nENV A=1\nlimit MEMORY 128M")
    assert (err.line, err.col) == (4, 1)
    assert "LIMIT memory is given twice (first at line 2)" in err.reason
    err = error("SECRET a\nSECRET a")
    assert "SECRET a is given twice (first at line 2)" in err.reason


def test_a_value_written_after_secret_is_not_echoed() -> None:
    err = error("SECRET db hunter2-the-password")
    assert (err.line, err.col) == (2, 11)
    assert "hunter2" not in err.message and "hunter2" not in (err.hint or "")
    assert "rex secret set" in (err.hint or "")


def test_the_instructions_are_suggested() -> None:
    assert "did you mean LIMIT?" in (error("LIMT pids 5").hint or "")
    assert "did you mean SECRET?" in (error("SECRETS a").hint or "")


# -- the value grammar: one module for the parser and the drivers ------------------------


def test_the_limits_package_uses_the_languages_grammar() -> None:
    assert limits.LimitError is spec.LimitError and LimitError.exit_code == 43
    assert limits.Limits is spec.Limits
    with pytest.raises(LimitError, match="not a whole number") as err:
        limits.parse_limit("memory", "1.5G")
    assert err.value.exit_code == 43


def test_limits_json_round_trip_and_refusals() -> None:
    full = Limits(memory=64 << 20, cpu=1.25, pids=7, openfiles=99)
    assert Limits.from_json(full.as_json()) == full
    assert Limits.from_json(None) == Limits() and Limits().as_json() == {}
    assert full.get(Resource.CPU) == 1.25
    for bad in ({"disk": 1}, {"pids": "7"}, {"pids": True}, [1]):
        with pytest.raises((ValueError, LimitError)):
            Limits.from_json(bad)
