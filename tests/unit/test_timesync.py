"""The time check and the time daemon's setup: parsers on saved real output
(tests/data/time/), the daemons asked in order, the steps per OS."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.doctor import _time
from rexcarcer.errors import NotSupported
from rexcarcer.platform.timesync import (
    NTPQ,
    FreeBSDTime,
    LinuxTime,
    Probe,
    ask,
    chrony_probe,
    chrony_unit,
    chronyc_argv,
    human_offset,
    ntpq_variables,
    parse_chronyc,
    parse_ntpq_rv,
    parse_timedatectl,
)
from rexcarcer.run import Completed, ScriptedRunner
from tests.unit.fakes import fake_host

DATA = Path(__file__).parents[1] / "data" / "time"


def data(name: str) -> str:
    return (DATA / name).read_text()


# -- chrony -----------------------------------------------------------------------------------


def test_chronyc_synchronised_gives_source_stratum_and_offset() -> None:
    state = parse_chronyc(data("chronyc-synced.txt"))
    assert state.answered and state.synced
    assert (state.daemon, state.source, state.stratum) == ("chronyd", "203.0.113.1", 9)
    # "System time: 0.000002... seconds fast of NTP time" is -2.4e-06 in CSV: ahead
    assert state.offset == pytest.approx(2.401e-06)
    assert "synchronised to 203.0.113.1 (stratum 9), clock +2.4 µs ahead" in state.detail


def test_chronyc_before_the_first_answer_is_not_synchronised() -> None:
    state = parse_chronyc(data("chronyc-starting.txt"))
    assert state.answered and not state.synced and state.offset is None
    assert "'Not synchronised'" in state.detail and "203.0.113.1 unreachable" in state.detail


def test_chronyc_with_leap_normal_but_no_selected_source_is_not_synchronised() -> None:
    """chronyd keeps "Normal" after losing every source: the ``*`` decides."""
    text = data("chronyc-server-gone.txt")
    assert text.splitlines()[0].endswith(",Normal")
    state = parse_chronyc(text)
    assert not state.synced
    assert "lost its sources (203.0.113.1 unreachable)" in state.detail


def test_chronyc_serving_its_own_clock_is_not_synchronised() -> None:
    state = parse_chronyc(data("chronyc-local-server.txt"))
    assert not state.synced and "own clock (local stratum 8)" in state.detail


def test_chronyc_without_a_daemon_did_not_answer() -> None:
    state = parse_chronyc(data("chronyc-no-daemon.txt"))
    assert not state.answered and "506 Cannot talk to daemon" in state.detail
    assert not parse_chronyc("").answered
    runner = ScriptedRunner()
    runner.on(["chronyc"], data("chronyc-no-daemon.txt"), returncode=1)
    assert "chronyc: 506 Cannot talk to daemon" in ask(runner, [chrony_probe(None)]).detail
    bad = parse_chronyc(data("chronyc-synced.txt").replace("-0.000002401", "nan"))
    assert bad.answered and not bad.synced


def test_chronyc_argv_names_the_socket() -> None:
    assert chronyc_argv() == ["chronyc", "-c", "-m", "tracking", "sources"]
    assert chronyc_argv(Path("/x/c.sock"))[:3] == ["chronyc", "-h", "/x/c.sock"]


# -- ntpd ---------------------------------------------------------------------------------------


def test_ntpq_synchronised() -> None:
    state = parse_ntpq_rv(data("ntpq-rv-synced.txt"))
    assert state.synced and (state.source, state.stratum) == ("203.0.113.1", 9)
    assert state.offset == pytest.approx(-0.009551e-3)  # ms, server minus us: we are behind
    assert "clock -9.6 µs behind" in state.detail


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ntpq-rv-unsynced.txt", "leap=11, stratum 16 (leap_alarm, sync_unspec"),
        (
            "ntpq-rv-server-gone.txt",
            "no system peer (leap_none, sync_unspec, 1 event, no_sys_peer)",
        ),
    ],
)
def test_ntpq_not_synchronised(name: str, why: str) -> None:
    state = parse_ntpq_rv(data(name))
    assert state.answered and not state.synced
    assert why in state.detail


def test_ntpq_frequency_mode_with_a_system_peer_counts_as_synchronised() -> None:
    assert parse_ntpq_rv(data("ntpq-rv-freqmode.txt")).synced


def test_ntpq_values_with_commas_as_ntp_org_prints_them() -> None:
    """ntp.org's ntpq (FreeBSD's) prints reftime with a weekday and a comma."""
    text = (
        "associd=0 status=0615 leap_none, sync_ntp, 1 event, clock_sync,\n"
        'version="ntpd 4.2.8p17-a (1)", processor="amd64",\n'
        'system="FreeBSD/14.1-RELEASE", leap=00, stratum=3, precision=-23,\n'
        "rootdelay=20.1, rootdisp=30.2, refid=198.51.100.7,\n"
        "reftime=ea0c1f3c.9a3b1e50  Tue, Jun  4 2024 10:00:00.601,\n"
        "clock=ea0c1f78.10c4a2f1  Tue, Jun  4 2024 10:01:00.065, peer=41234, tc=6,\n"
        "mintc=3, offset=+1.250, frequency=-13.4, sys_jitter=0.4\n"
    )
    v = ntpq_variables(text)
    assert v["status"] == "0615 leap_none, sync_ntp, 1 event, clock_sync"
    assert v["reftime"] == "ea0c1f3c.9a3b1e50  Tue, Jun  4 2024 10:00:00.601"
    assert v["version"] == "ntpd 4.2.8p17-a (1)" and v["peer"] == "41234"
    state = parse_ntpq_rv(text)
    assert state.synced and state.offset == pytest.approx(-1.25e-3)
    assert "clock -1.2 ms behind" in state.detail


def test_ntpq_without_ntpd() -> None:
    state = parse_ntpq_rv("ntpq: read: Connection refused\n")
    assert not state.answered and "Connection refused" in state.detail


# -- systemd-timesyncd --------------------------------------------------------------------------
# `timedatectl show` prints Key=value lines (timedatectl(1), --property); these
# are written from that format, not captured: timedatectl needs systemd as PID 1.


def test_timedatectl() -> None:
    assert parse_timedatectl("NTP=yes\nNTPSynchronized=yes\n").synced
    off = parse_timedatectl("NTP=no\nNTPSynchronized=no\n")
    assert off.answered and not off.synced and "timedatectl set-ntp true" in off.detail
    waiting = parse_timedatectl("NTP=yes\nNTPSynchronized=no\n")
    assert "enabled but" in waiting.detail
    assert not parse_timedatectl(
        "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
    ).answered


# -- asking in order ---------------------------------------------------------------------------


def _missing(args: tuple[str, ...]) -> Completed:
    raise NotSupported(f"command not found: {args[0]}")


def test_the_first_daemon_that_answers_wins() -> None:
    runner = ScriptedRunner()
    runner.on(["chronyc"], data("chronyc-no-daemon.txt"), returncode=1)
    runner.on(["ntpq"], data("ntpq-rv-synced.txt"))
    state = ask(runner, [chrony_probe(None), NTPQ])
    assert state.daemon == "ntpd" and state.synced
    assert runner.calls == [tuple(chronyc_argv()), ("ntpq", "-c", "rv")]


def test_no_daemon_answers() -> None:
    runner = ScriptedRunner()
    runner.on(["chronyc"], _missing)
    runner.on(["ntpq"], "ntpq: read: Connection refused", returncode=1)
    state = ask(runner, [chrony_probe(None), NTPQ])
    assert not state.answered and not state.synced and state.daemon == ""
    assert "chronyc not installed" in state.detail and "Connection refused" in state.detail
    assert "certificates depend on it" in state.detail


def test_a_probe_is_an_argv_and_a_parser() -> None:
    probe = Probe("x", ("true",), parse_timedatectl)
    runner = ScriptedRunner()
    runner.on(["true"], "NTPSynchronized=yes\n")
    assert ask(runner, [probe]).synced


def test_human_offset() -> None:
    assert human_offset(2.4e-6) == "+2.4 µs"
    assert human_offset(-0.0123) == "-12.3 ms"
    assert human_offset(1.5) == "+1.5 s"


# -- setup steps --------------------------------------------------------------------------------


def _units(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "units"
    d.mkdir(exist_ok=True)
    for name in names:
        (d / name).write_text("[Unit]\n")
    return d


def test_chrony_unit_is_the_real_file_not_an_alias(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    lib = _units(tmp_path / "lib", "chrony.service")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "chronyd.service").symlink_to(lib / "chrony.service")  # Debian's Alias=
    assert chrony_unit([etc, lib]) == "chrony.service"
    (tmp_path / "rh").mkdir()
    assert chrony_unit([_units(tmp_path / "rh", "chronyd.service")]) == "chronyd.service"
    assert chrony_unit([tmp_path / "none"]) is None


def test_linux_with_systemd_enables_chrony(tmp_path: Path) -> None:
    runner = ScriptedRunner()
    t = LinuxTime(runner, None, systemd=lambda: True,
                  unit_dirs=[_units(tmp_path, "chrony.service")], timesyncd=[])  # fmt: skip
    assert [s.argv for s in t.setup_steps()] == [("systemctl", "enable", "--now", "chrony.service")]
    assert runner.calls == []


def test_linux_with_systemd_and_only_timesyncd(tmp_path: Path) -> None:
    daemon = tmp_path / "systemd-timesyncd"
    daemon.write_text("")
    t = LinuxTime(ScriptedRunner(), None, systemd=lambda: True, unit_dirs=[],
                  timesyncd=[daemon])  # fmt: skip
    assert [s.argv for s in t.setup_steps()] == [("timedatectl", "set-ntp", "true")]
    assert t.probes()[1].daemon == "systemd-timesyncd"


def test_linux_without_a_daemon_says_what_to_install(tmp_path: Path) -> None:
    runner = ScriptedRunner()
    runner.on(["chronyc"], _missing)
    runner.on(["timedatectl"], "Failed to connect to bus: Host is down", returncode=1)
    runner.on(["ntpq"], _missing)
    t = LinuxTime(runner, None, systemd=lambda: True, unit_dirs=[], timesyncd=[])
    with pytest.raises(NotSupported, match="no time daemon is installed") as exc:
        t.setup_steps()
    assert "apt-get install chrony" in exc.value.hint


def test_linux_without_systemd_leaves_a_running_daemon_alone() -> None:
    runner = ScriptedRunner()
    runner.on(["chronyc"], data("chronyc-synced.txt"))
    t = LinuxTime(runner, Path("/x/c.sock"), systemd=lambda: False)
    assert t.setup_steps() == []
    assert [p.daemon for p in t.probes()] == ["chronyd", "ntpd"]  # no timedatectl
    down = ScriptedRunner()
    down.on(["chronyc"], data("chronyc-no-daemon.txt"), returncode=1)
    down.on(["ntpq"], _missing)
    with pytest.raises(NotSupported, match="without systemd"):
        LinuxTime(down, None, systemd=lambda: False).setup_steps()


def test_freebsd_enables_and_starts_ntpd() -> None:
    runner = ScriptedRunner()
    runner.on(["ntpq"], "ntpq: read: Connection refused", returncode=1)
    runner.on(["chronyc"], _missing)
    runner.on(["service", "ntpd", "status"], "ntpd is not running.", returncode=1)
    steps = [" ".join(s.argv) for s in FreeBSDTime(runner, None).setup_steps()]
    assert steps == ["sysrc ntpd_enable=YES", "sysrc ntpd_sync_on_start=YES", "service ntpd start"]
    running = ScriptedRunner()
    running.on(["ntpq"], data("ntpq-rv-synced.txt"))
    running.on(["service", "ntpd", "status"], "ntpd is running as pid 812.")
    assert [s.argv[-1] for s in FreeBSDTime(running, None).setup_steps()] == [
        "ntpd_enable=YES", "ntpd_sync_on_start=YES"]  # fmt: skip
    running.on(["sysrc", "-n"], "YES")  # both set by an earlier run: nothing to do
    assert FreeBSDTime(running, None).setup_steps() == []


def test_freebsd_leaves_chrony_from_ports_alone() -> None:
    runner = ScriptedRunner()
    runner.on(["ntpq"], _missing)
    runner.on(["chronyc"], data("chronyc-synced.txt"))
    assert FreeBSDTime(runner, None).setup_steps() == []


# -- rex doctor ---------------------------------------------------------------------------------


def test_doctor_reports_synchronisation_and_offset(tmp_path: Path) -> None:
    host = fake_host(tmp_path)
    assert isinstance(host.runner, ScriptedRunner)
    host.runner.on(["chronyc"], data("chronyc-synced.txt"))
    check = _time(host)
    assert check.ok and "synchronised to 203.0.113.1" in check.detail
    assert check.as_json()["data"]["offset"] == pytest.approx(2.401e-06)
    host.runner.rules.clear()
    host.runner.on(["chronyc"], data("chronyc-server-gone.txt"))
    assert not _time(host).ok
