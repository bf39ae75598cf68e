"""HEALTHCHECK, RESTART and DEPENDS in the parser: the forms docs/rexfile.md
gives, and a file:line:col error for each kind of bad input."""

from __future__ import annotations

import pytest

from rexcarcer.errors import RexfileError
from rexcarcer.model.jail import JailRecord
from rexcarcer.rexfile.ast import (
    DEFAULT_RETRIES,
    Depend,
    HealthCheck,
    Pos,
    Probe,
    RestartPolicy,
    format_duration,
)
from rexcarcer.rexfile.parser import parse
from rexcarcer.rexfile.running import parse_duration


def one(line: str) -> HealthCheck:
    check = parse(f"BASE b\n{line}\n", file="web.rex").healthcheck
    assert check is not None
    return check


def error(text: str) -> RexfileError:
    with pytest.raises(RexfileError) as info:
        parse("BASE b\n" + text + "\n", file="web.rex")
    return info.value


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ("HEALTHCHECK TCP 80", HealthCheck(Probe.TCP, port=80)),
        ("healthcheck http 8080 /health?full=1",
         HealthCheck(Probe.HTTP, port=8080, path="/health?full=1")),
        ("HEALTHCHECK CMD pgrep -q nginx && test -S /var/run/app.sock",
         HealthCheck(Probe.CMD, command="pgrep -q nginx && test -S /var/run/app.sock")),
        ("HEALTHCHECK INTERVAL 2s TIMEOUT 500ms RETRIES 1 CMD true",
         HealthCheck(Probe.CMD, command="true", interval_ms=2000, timeout_ms=500, retries=1)),
        ("HEALTHCHECK TCP 80 INTERVAL 1m RETRIES 5",
         HealthCheck(Probe.TCP, port=80, interval_ms=60_000, retries=5)),
        ("HEALTHCHECK RETRIES 2 HTTP 80 / TIMEOUT 3s",
         HealthCheck(Probe.HTTP, port=80, path="/", timeout_ms=3000, retries=2)),
        # a short INTERVAL takes the default timeout down with it
        ("HEALTHCHECK INTERVAL 1s TCP 80",
         HealthCheck(Probe.TCP, port=80, interval_ms=1000, timeout_ms=1000)),
    ],
)  # fmt: skip
def test_healthcheck_forms(line: str, want: HealthCheck) -> None:
    assert one(line) == want


def test_defaults_and_the_canonical_form() -> None:
    check = one("HEALTHCHECK TCP 80")
    assert (check.interval_ms, check.timeout_ms, check.retries) == (10_000, 5_000, DEFAULT_RETRIES)
    assert check.describe() == "HEALTHCHECK INTERVAL 10s TIMEOUT 5s RETRIES 3 TCP 80"
    rf = parse("BASE b\nHEALTHCHECK TCP 80\nRESTART always\nDEPENDS db\nDEPENDS cache\n")
    assert rf.canonical()["healthcheck"] == {"probe": "tcp", "port": 80, "interval": 10_000,
                                             "timeout": 5_000, "retries": 3}  # fmt: skip
    assert rf.canonical()["restart"] == "always"
    assert rf.canonical()["depends"] == ["db", "cache"]
    assert rf.depends == (Depend("db"), Depend("cache")) and rf.depends[1].pos == Pos(5, 1)
    assert rf.supervised
    # a file without them keeps the digest it had before they existed
    plain = parse("BASE b\nSERVICE web PORT 80\n")
    assert not plain.supervised and "restart" not in plain.canonical()


def test_restart_values() -> None:
    for text, want in [("no", RestartPolicy.NO), ("ON-FAILURE", RestartPolicy.ON_FAILURE),
                       ("always", RestartPolicy.ALWAYS)]:  # fmt: skip
        assert parse(f"BASE b\nRESTART {text}\n").restart is want
    assert parse("BASE b\n").restart is None  # the agent's default, on-failure


def test_durations_read_back() -> None:
    for ms in (100, 1500, 2000, 60_000, 3_600_000):
        assert parse_duration(format_duration(ms)) == ms
    assert parse_duration("10") is None and parse_duration("1.5s") is None


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("HEALTHCHECK", "2:12", "HEALTHCHECK has no probe"),
        ("HEALTHCHECK INTERVAL 5s RETRIES 2", "2:34", "HEALTHCHECK has no probe"),
        ("HEALTHCHECK INTERVAL 5 TCP 80", "2:22", "malformed INTERVAL '5'"),
        ("HEALTHCHECK INTERVAL fast TCP 80", "2:22", "malformed INTERVAL 'fast'"),
        ("HEALTHCHECK TCP 80 TIMEOUT 5x", "2:28", "malformed TIMEOUT '5x'"),
        ("HEALTHCHECK INTERVAL 10ms TCP 80", "2:22", "INTERVAL 10ms is out of range"),
        ("HEALTHCHECK INTERVAL", "2:21", "expected a duration after INTERVAL"),
        ("HEALTHCHECK RETRIES 0 TCP 80", "2:21", "bad RETRIES '0'"),
        ("HEALTHCHECK EVERY 5s TCP 80", "2:13", "unknown HEALTHCHECK option 'EVERY'"),
        ("HEALTHCHECK TCP 80 RETRY 2", "2:20", "unknown HEALTHCHECK option 'RETRY'"),
        ("HEALTHCHECK TCP 80 HTTP 80 /", "2:20", "HEALTHCHECK takes one probe"),
        ("HEALTHCHECK INTERVAL 1s INTERVAL 2s TCP 80", "2:25", "INTERVAL is given twice"),
        ("HEALTHCHECK TCP", "2:16", "expected a port after HEALTHCHECK TCP"),
        ("HEALTHCHECK TCP 65536", "2:17", "bad port '65536'"),
        ("HEALTHCHECK HTTP 80", "2:20", "expected a path"),
        ("HEALTHCHECK HTTP 80 health", "2:21", "bad HTTP path 'health'"),
        ("HEALTHCHECK HTTP 80 /a\x01b", "2:21", "bad HTTP path"),
        ("HEALTHCHECK CMD", "2:16", "expected a command after HEALTHCHECK CMD"),
        ("HEALTHCHECK CMD pgrep httpd INTERVAL 5s", "2:29",
         "INTERVAL after HEALTHCHECK CMD would be part of the command"),
        ("HEALTHCHECK TCP 80\nHEALTHCHECK TCP 81", "3:1",
         "HEALTHCHECK given twice (first at line 2)"),
        ("RESTART", "2:8", "expected a policy after RESTART"),
        ("RESTART sometimes", "2:9", "unknown RESTART policy 'sometimes'"),
        ("RESTART no always", "2:12", "RESTART takes one policy"),
        ("RESTART no\nRESTART always", "3:1", "RESTART given twice (first at line 2)"),
        ("DEPENDS", "2:8", "expected a jail name after DEPENDS"),
        ("DEPENDS db cache", "2:12", "DEPENDS names one jail"),
        ("DEPENDS Db_1", "2:9", "bad jail name in DEPENDS"),
        ("DEPENDS db\nDEPENDS db", "3:1", "DEPENDS db given twice (first at line 2)"),
    ],
)  # fmt: skip
def test_bad_input_names_the_place(text: str, where: str, message: str) -> None:
    err = error(text)
    assert f"web.rex:{where}: " in str(err), str(err)
    assert message in str(err), str(err)
    assert err.hint


def test_a_misspelt_option_gets_a_suggestion() -> None:
    assert error("HEALTHCHECK INTERVL 5s TCP 80").hint == "did you mean INTERVAL?"
    assert error("HELTHCHECK TCP 80").hint == "did you mean HEALTHCHECK?"
    assert error("RESTART sometimes").hint == (
        "write RESTART no, RESTART on-failure (the default) or RESTART always"
    )


def test_the_jail_record_keeps_them_through_json() -> None:
    rf = parse("BASE b\nHEALTHCHECK INTERVAL 2s HTTP 80 /ok\nRESTART no\nDEPENDS db\n")
    assert rf.healthcheck is not None and rf.restart is not None
    rec = JailRecord("web", healthcheck=rf.healthcheck, restart=rf.restart, depends=("db",))
    back = JailRecord.from_json(rec.as_json())
    assert back.healthcheck == rf.healthcheck and back.restart is RestartPolicy.NO
    assert back.depends == ("db",)
    # a record written before these fields reads as no check, on-failure, no dependency
    old = {k: v for k, v in rec.as_json().items()
           if k not in ("healthcheck", "restart", "depends")}  # fmt: skip
    plain = JailRecord.from_json(old)
    assert plain.healthcheck is None and plain.restart is RestartPolicy.ON_FAILURE
    assert plain.depends == ()


@pytest.mark.parametrize(
    "bad",
    [{"probe": "udp", "port": 1, "interval": 1, "timeout": 1, "retries": 1},
     {"probe": "tcp", "port": 0, "interval": 1, "timeout": 1, "retries": 1},
     {"probe": "http", "port": 80, "path": "x", "interval": 1, "timeout": 1, "retries": 1},
     {"probe": "cmd", "command": "", "interval": 1, "timeout": 1, "retries": 1},
     {"probe": "tcp", "port": 80, "interval": "1", "timeout": 1, "retries": 1}],
)  # fmt: skip
def test_a_damaged_check_in_the_store_is_refused(bad: dict[str, object]) -> None:
    from rexcarcer.errors import StateError

    data = JailRecord("web").as_json() | {"healthcheck": bad}
    with pytest.raises(StateError):
        JailRecord.from_json(data)
