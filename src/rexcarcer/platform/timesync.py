"""The host's clock: whether a time daemon keeps it synchronised (``rex doctor``)
and what makes one run (``rex host setup``).

Jails share the host's clock; their certificates and log times are only as
good as it is. A daemon that merely runs proves nothing (it may never have
reached a server, or have lost every one), so each daemon is asked:

- chronyd: ``chronyc -c -m tracking sources`` (chronyc(1), 4.3). The tracking
  line is the reference ID, its address, stratum, reference time, the system
  time offset (seconds; positive when the clock is *slow*), last and RMS
  offsets, frequency, residual frequency, skew, root delay, root dispersion,
  update interval and leap status. Each source line is mode, state, address,
  stratum, poll, reach, last sample, and three offsets. chronyd keeps "Normal"
  leap status after losing every source (it logs "Can't synchronise: no
  selectable sources"), so synchronised means: leap status not "Not
  synchronised" *and* a source in state ``*`` (the one it is synchronised to).
- ntpd (FreeBSD's base ntpd, ntpsec on Linux): ``ntpq -c rv``, the system
  variables. ``leap=11`` is the alarm (never synchronised); like chronyd,
  ntpd keeps ``leap=00`` after losing its peer, but its ``peer=`` (the
  association of the system peer) drops to 0. ``offset=`` is in milliseconds,
  the server's time minus this host's.
- systemd-timesyncd: ``timedatectl show -p NTP -p NTPSynchronized``: whether
  NTP is enabled and whether the kernel clock is synchronised; timedatectl
  reports no offset here.

The saved real outputs these parsers are tested on are in tests/data/time/.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rexcarcer.errors import NotSupported, RexError
from rexcarcer.run import Runner

QUERY_TIMEOUT = 10.0
# chronyc(1) "sources": the state column
CHRONY_STATES = {"*": "selected", "+": "combined", "-": "not combined", "?": "unreachable",
                 "x": "a falseticker", "~": "too variable"}  # fmt: skip
CHRONY_LOCAL_REFID = "7F7F0101"  # "LOCL": the `local` directive, a server of its own clock
SYNCED_LEAP = ("Normal", "Insert second", "Delete second")


@dataclass(frozen=True, slots=True)
class ClockState:
    """What the time daemon says about the host's clock."""

    daemon: str  # chronyd, ntpd, systemd-timesyncd; "" when none answered
    answered: bool  # the daemon answered the query
    synced: bool
    detail: str  # one line for `rex doctor`
    offset: float | None = None  # seconds the clock is ahead (+) of true time; None: unknown
    source: str = ""  # the server (or reference) it is synchronised to
    stratum: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"daemon": self.daemon or None, "answered": self.answered, "synced": self.synced,
                "offset": self.offset, "source": self.source or None,
                "stratum": self.stratum}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SetupStep:
    argv: tuple[str, ...]
    why: str


class TimeService(Protocol):
    def status(self) -> ClockState:
        """Ask the host's time daemon; never raises for a daemon that is absent."""
        ...

    def setup_steps(self) -> list[SetupStep]:
        """What makes a time daemon run now and at boot (``rex host setup``);
        NotSupported when this host has no way to."""
        ...


def human_offset(seconds: float) -> str:
    """``+1.2 ms``-style, with the unit that fits."""
    mag = abs(seconds)
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if mag >= scale or unit == "µs":
            return f"{'+' if seconds >= 0 else '-'}{mag / scale:.1f} {unit}"
    raise AssertionError("unreachable")


def _ahead(offset: float | None) -> str:
    if offset is None:
        return "offset unknown"
    if offset == 0:
        return "offset 0"
    return f"clock {human_offset(offset)} {'ahead' if offset > 0 else 'behind'}"


# -- chrony ---------------------------------------------------------------------------------


def chronyc_argv(socket: Path | None = None) -> list[str]:
    """One chronyc run for both reports; ``-h`` names chronyd's command socket."""
    host = ["-h", str(socket)] if socket is not None else []
    return ["chronyc", *host, "-c", "-m", "tracking", "sources"]


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_chronyc(text: str) -> ClockState:
    """``chronyc -c -m tracking sources`` -> the clock's state."""
    lines = [ln.split(",") for ln in text.splitlines() if ln.strip()]
    if not lines or len(lines[0]) != 14:
        return ClockState("chronyd", False, False,
                          f"chronyd does not answer: {text.strip() or 'no output'}")  # fmt: skip
    refid, name, stratum_text, _, system = lines[0][:5]
    leap = lines[0][13]
    try:
        correction = _number(system)  # positive: the clock is slow
        stratum = int(stratum_text)
    except ValueError:
        return ClockState(
            "chronyd", True, False, f"chronyd answered what rex cannot read: {text!r}"
        )
    offset = -correction if correction else 0.0
    sources = [(s[1], s[2]) for s in lines[1:] if len(s) >= 10 and s[0] in "^=#"]
    selected = [addr for state, addr in sources if state == "*"]
    described = ", ".join(f"{a} {CHRONY_STATES.get(s, s)}" for s, a in sources) or "none"
    if leap in SYNCED_LEAP and selected:
        return ClockState("chronyd", True, True,
                          f"chronyd synchronised to {selected[0]} (stratum {stratum}), "
                          f"{_ahead(offset)}", offset, selected[0], stratum)  # fmt: skip
    if refid.upper() == CHRONY_LOCAL_REFID and not sources:
        why = f"it serves its own clock (local stratum {stratum}) and has no source"
    elif leap in SYNCED_LEAP:
        why = f"it lost its sources ({described}); last synchronised to {name or refid}"
    else:
        why = f"leap status {leap!r}; sources: {described}"
    return ClockState("chronyd", True, False, f"chronyd is not synchronised: {why}",
                      offset if leap in SYNCED_LEAP else None)  # fmt: skip


# -- ntpd -----------------------------------------------------------------------------------


def ntpq_argv() -> list[str]:
    return ["ntpq", "-c", "rv"]


def ntpq_variables(text: str) -> dict[str, str]:
    """ntpq's ``name=value, name=value`` list over several lines. A value may hold
    commas (ntp.org prints ``reftime=e7e9.. Tue, Apr 18 2023 ...``), so a new
    variable starts only where a comma is followed by ``name=``; the first item
    holds ``associd=0 status=0615 leap_none, sync_ntp, ...``."""
    import re

    flat = " ".join(text.split("\n"))
    out: dict[str, str] = {}
    for item in re.split(r",\s*(?=[A-Za-z_][\w.]*=)", flat):
        for part in re.split(r"\s+(?=status=)", item.strip()):
            key, sep, value = part.partition("=")
            if sep:
                out[key.strip()] = value.strip().strip('"')
    return out


def parse_ntpq_rv(text: str) -> ClockState:
    """``ntpq -c rv`` -> the clock's state (offset= is in milliseconds, the
    server's time minus ours, so the clock is ahead by its negative)."""
    v = ntpq_variables(text)
    if "leap" not in v:
        return ClockState("ntpd", False, False,
                          f"ntpd does not answer: {text.strip() or 'no output'}")  # fmt: skip
    try:
        stratum = int(v.get("stratum", "16"))
        offset = -_number(v["offset"]) / 1000 if "offset" in v else None
    except ValueError:
        return ClockState("ntpd", True, False, f"ntpd answered what ntpq cannot read: {text!r}")
    refid, peer = v.get("refid", ""), v.get("peer", "0")
    status = v.get("status", "").split(" ", 1)
    word = status[1] if len(status) > 1 else ""
    if v["leap"] != "11" and stratum < 16 and peer not in ("", "0"):
        return ClockState("ntpd", True, True,
                          f"ntpd synchronised to {refid} (stratum {stratum}), {_ahead(offset)}",
                          offset, refid, stratum)  # fmt: skip
    if v["leap"] == "11" or stratum >= 16:
        why = f"leap={v['leap']}, stratum {stratum} ({word or 'no status'})"
    else:
        why = f"it has no system peer ({word or 'no status'}); last synchronised to {refid}"
    return ClockState("ntpd", True, False, f"ntpd is not synchronised: {why}")


# -- systemd-timesyncd ----------------------------------------------------------------------


def timedatectl_argv() -> list[str]:
    return ["timedatectl", "show", "-p", "NTP", "-p", "NTPSynchronized"]


def parse_timedatectl(text: str) -> ClockState:
    """``timedatectl show -p NTP -p NTPSynchronized`` (``Key=value`` lines)."""
    props = dict(ln.partition("=")[::2] for ln in text.splitlines() if "=" in ln)
    if "NTPSynchronized" not in props:
        said = text.strip() or "no output"
        return ClockState("systemd-timesyncd", False, False, f"timedatectl does not answer: {said}")
    ntp, synced = props.get("NTP") == "yes", props["NTPSynchronized"] == "yes"
    if synced:
        return ClockState("systemd-timesyncd", True, True,
                          "the kernel clock is synchronised (timedatectl: NTPSynchronized=yes); "
                          "offset unknown")  # fmt: skip
    why = "NTP is enabled but" if ntp else "NTP is off (timedatectl set-ntp true) and"
    return ClockState("systemd-timesyncd", True, False,
                      f"{why} the kernel clock is not synchronised")  # fmt: skip


# -- asking the daemons ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """A daemon's query: its argv and the parser of its output."""

    daemon: str
    argv: tuple[str, ...]
    parse: Callable[[str], ClockState]


def chrony_probe(socket: Path | None) -> Probe:
    return Probe("chronyd", tuple(chronyc_argv(socket)), parse_chronyc)


NTPQ = Probe("ntpd", tuple(ntpq_argv()), parse_ntpq_rv)
TIMEDATECTL = Probe("systemd-timesyncd", tuple(timedatectl_argv()), parse_timedatectl)


def ask(runner: Runner, probes: Sequence[Probe]) -> ClockState:
    """The first daemon that answers; else why none did."""
    tried = []
    for probe in probes:
        try:
            done = runner.run(list(probe.argv), check=False, timeout=QUERY_TIMEOUT)
        except NotSupported:
            tried.append(f"{probe.argv[0]} not installed")
            continue
        except RexError as exc:  # a timeout
            tried.append(f"{probe.argv[0]}: {exc.message}")
            continue
        if not done.ok:  # e.g. chronyc: "506 Cannot talk to daemon", exit status 1
            said = (done.stdout + done.stderr).strip().splitlines() or [f"exit {done.returncode}"]
            tried.append(f"{probe.argv[0]}: {said[-1]}")
            continue
        state = probe.parse(done.stdout)
        if state.answered:
            return state
        tried.append(state.detail)
    return ClockState("", False, False, "no time daemon answers (" + "; ".join(tried) + "): "
                      "jails share this clock, and their certificates depend on it")  # fmt: skip


# -- keeping a daemon running, per OS ------------------------------------------------------

# systemd.unit(5) search path (system units); chrony's unit is chrony.service on
# Debian and Ubuntu, chronyd.service on Fedora, RHEL, SUSE and Arch.
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"),
             Path("/lib/systemd/system"))  # fmt: skip
CHRONY_UNITS = ("chrony.service", "chronyd.service")
TIMESYNCD = (Path("/usr/lib/systemd/systemd-timesyncd"), Path("/lib/systemd/systemd-timesyncd"))


def systemd_booted() -> bool:
    """sd_booted(3): systemd is PID 1 exactly when this directory exists."""
    return Path("/run/systemd/system").is_dir()


def chrony_unit(unit_dirs: Sequence[Path] = UNIT_DIRS) -> str | None:
    """The name of chrony's unit file, if one is installed (not an alias: systemctl
    enable refuses alias names)."""
    for name in CHRONY_UNITS:
        for d in unit_dirs:
            path = d / name
            if path.is_file() and not path.is_symlink():
                return name
    return None


class LinuxTime:
    """chrony or systemd-timesyncd, whichever the host has (ntpd is asked too)."""

    def __init__(
        self,
        runner: Runner,
        socket: Path | None,
        *,
        systemd: Callable[[], bool] = systemd_booted,
        unit_dirs: Sequence[Path] = UNIT_DIRS,
        timesyncd: Sequence[Path] = TIMESYNCD,
    ) -> None:
        self.runner, self.socket, self.systemd = runner, socket, systemd
        self.unit_dirs, self.timesyncd = unit_dirs, timesyncd

    def probes(self) -> list[Probe]:
        # timedatectl needs systemd as PID 1 ("System has not been booted with systemd")
        middle = [TIMEDATECTL] if self.systemd() else []
        return [chrony_probe(self.socket), *middle, NTPQ]

    def status(self) -> ClockState:
        return ask(self.runner, self.probes())

    def setup_steps(self) -> list[SetupStep]:
        if self.systemd():
            unit = chrony_unit(self.unit_dirs)
            if unit is not None:
                return [SetupStep(("systemctl", "enable", "--now", unit),
                                  f"start the time daemon ({unit}) now and at boot")]  # fmt: skip
            if any(p.exists() for p in self.timesyncd):
                return [SetupStep(("timedatectl", "set-ntp", "true"),
                                  "start systemd-timesyncd now and at boot")]  # fmt: skip
        if self.status().answered:
            return []  # a daemon rex does not manage keeps the clock: leave it
        if self.systemd():
            raise NotSupported("no time daemon is installed (chrony, systemd-timesyncd)",
                               hint="install chrony (Debian: apt-get install chrony), then run "
                               "`rex host setup` again")  # fmt: skip
        raise NotSupported(
            "no time daemon answers, and without systemd rex cannot start one",
            hint="start chronyd under your supervisor; `rex doctor` checks that it is synchronised",
        )


class FreeBSDTime:
    """The base system's ntpd (rc.conf ``ntpd_enable``); chronyd from ports is
    asked too, and left alone when it answers."""

    def __init__(self, runner: Runner, socket: Path | None) -> None:
        self.runner, self.socket = runner, socket

    def status(self) -> ClockState:
        return ask(self.runner, [NTPQ, chrony_probe(self.socket)])

    def setup_steps(self) -> list[SetupStep]:
        if self.status().daemon == "chronyd":
            return []
        steps = [
            SetupStep(("sysrc", "ntpd_enable=YES"), "start ntpd at boot"),
            # rc.conf(5) ntpd_sync_on_start: ntpd -g, so a clock far off is set at start
            SetupStep(("sysrc", "ntpd_sync_on_start=YES"), "let ntpd set a clock that is far off"),
        ]
        # a second run changes nothing: sysrc(8) -n prints a variable's value
        steps = [s for s in steps if self._rc(s.argv[1].partition("=")[0]).upper() != "YES"]
        if not self.runner.run(["service", "ntpd", "status"], check=False).ok:
            steps.append(SetupStep(("service", "ntpd", "start"), "start ntpd"))
        return steps

    def _rc(self, name: str) -> str:
        done = self.runner.run(["sysrc", "-n", name], check=False)
        return done.stdout.strip() if done.ok else ""
