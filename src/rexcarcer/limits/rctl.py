"""FreeBSD: a jail's limits as rctl(8) rules, with the argv builders, parsers and
``Rctl``, which joins them through a runner.

Rules (rctl(8) RULE SYNTAX ``subject:subject-id:resource:action=amount``; the
per field defaults to the subject, so each amount is the whole jail's)::

    LIMIT memory 512M     rctl -a jail:NAME:memoryuse:deny=536870912
    LIMIT cpu 1.5         rctl -a jail:NAME:pcpu:deny=150
    LIMIT pids 200        rctl -a jail:NAME:maxproc:deny=200
    LIMIT openfiles 1024  rctl -a jail:NAME:openfiles:deny=1024

- ``memoryuse`` is "resident set size, in bytes" and ``pcpu`` "%CPU, in percents
  of a single CPU core" (rctl(8) RESOURCES), so N cores are N*100. Neither is
  deniable in the racct sense; sys/kern/kern_rctl.c rctl_rule_add() still takes
  ``deny`` for both ("the limit is enforced in a different way"): the VM daemon
  pages a jail out down to its memoryuse, and racctd throttles a jail over its
  pcpu. So on FreeBSD LIMIT memory pages out where Linux OOM-kills.
- ``maxproc`` counts processes (Linux pids.max also counts threads);
  ``openfiles`` is the jail's summed descriptor tables (Linux RLIMIT_NOFILE is
  per process).
- Adding a ``deny`` rule replaces one that differs only in amount
  (rctl_rule_add(): "for the deny rules, remove ones differing only by
  amount"), so applying new limits to a running jail has no unlimited gap.
- ``rctl -r FILTER`` exits 1 with "No such process" when no rule matched
  (rctl_rule_remove() returns ESRCH): removing what is not there is done.
- ``rctl -u jail:NAME`` prints ``resource=amount`` lines (rctl.c show_usage()).
- Rules need RACCT/RCTL in the kernel and ``kern.racct.enable=1``, a loader
  tunable (rctl(4) LOADER TUNABLES; GENERIC ships with it off); without it
  rctl(8) says "RACCT/RCTL present, but disabled; enable using
  kern.racct.enable=1 tunable" (rctl.c enosys()).
"""

from __future__ import annotations

from rexcarcer.errors import CommandFailed
from rexcarcer.names import jail_name_problem
from rexcarcer.rexfile.limits import LimitError, Limits, Resource
from rexcarcer.run import Runner

RCTL = "rctl"
# LIMIT resource -> rctl(8) resource
RESOURCES = {
    Resource.MEMORY: "memoryuse",
    Resource.CPU: "pcpu",
    Resource.PIDS: "maxproc",
    Resource.OPENFILES: "openfiles",
}
ENABLE_HINT = "set kern.racct.enable=1 in /boot/loader.conf and reboot (rctl(4))"


def _subject(jail: str) -> str:
    # A jail name is one DNS label: no ':', ',', '/' or '=' to break a rule.
    problem = jail_name_problem(jail)
    if problem is not None:
        raise LimitError(f"bad jail name for rctl: {problem}")
    return f"jail:{jail}"


def amount(resource: Resource, value: int | float) -> int:
    """The rctl amount of a LIMIT value: bytes, percent of one core, counts."""
    if resource is Resource.CPU:
        return max(1, round(value * 100))
    return int(value)


def rule(jail: str, resource: Resource, value: int | float) -> str:
    return f"{_subject(jail)}:{RESOURCES[resource]}:deny={amount(resource, value)}"


def rules(jail: str, limits: Limits) -> list[str]:
    """The rules of the limits that are set, in LIMIT order."""
    out: list[str] = []
    for resource in RESOURCES:
        value = limits.get(resource)
        if value is not None:
            out.append(rule(jail, resource, value))
    return out


def add_argv(rule: str) -> list[str]:
    return [RCTL, "-a", rule]


def remove_argv(jail: str, resource: Resource | None = None) -> list[str]:
    """Remove every rule of the jail, or only those of one resource."""
    target = _subject(jail) if resource is None else f"{_subject(jail)}:{RESOURCES[resource]}"
    return [RCTL, "-r", target]


def usage_argv(jail: str) -> list[str]:
    return [RCTL, "-u", _subject(jail)]


def racct_argv() -> list[str]:
    return ["sysctl", "-n", "kern.racct.enable"]


def parse_usage(text: str) -> dict[str, int]:
    """``rctl -u`` output -> {resource: amount}; lines that are not
    ``name=integer`` (``-h`` output, noise) are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and value.isdigit():
            out[key] = int(value)
    return out


def common_usage(raw: dict[str, int]) -> dict[str, int]:
    """The keys ``CgroupDriver.usage`` reports, from ``rctl -u`` amounts."""
    names = {"memoryuse": "memory", "maxproc": "pids", "openfiles": "openfiles"}
    out = {ours: raw[theirs] for theirs, ours in names.items() if theirs in raw}
    if "cputime" in raw:  # seconds (rctl(8) RESOURCES)
        out["cpu_ns"] = raw["cputime"] * 1_000_000_000
    return out


def racct_problem(returncode: int, stdout: str) -> str | None:
    """Why ``sysctl -n kern.racct.enable`` says rctl rules cannot work, or None."""
    if returncode != 0:
        return "this kernel has no RACCT/RCTL (sysctl kern.racct.enable is unknown)"
    if stdout.strip() != "1":
        return "resource accounting is off (kern.racct.enable=0)"
    return None


class Rctl:
    """Applies, removes and reads a jail's rctl rules."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def ensure_enabled(self) -> None:
        done = self.runner.run(racct_argv(), check=False)
        problem = racct_problem(done.returncode, done.stdout)
        if problem is not None:
            raise LimitError(f"cannot enforce LIMIT: {problem}", hint=ENABLE_HINT)

    def apply(self, jail: str, limits: Limits) -> None:
        """Add the rules of the limits that are set; drop those of the others."""
        if limits:
            self.ensure_enabled()
        for resource in RESOURCES:
            value = limits.get(resource)
            if value is None:
                self._remove(remove_argv(jail, resource))
                continue
            text = rule(jail, resource, value)
            try:
                self.runner.run(add_argv(text))
            except CommandFailed as exc:
                raise LimitError(f"rctl refused {text}: {exc.stderr}", hint=ENABLE_HINT) from exc

    def remove(self, jail: str) -> None:
        """Drop every rule of the jail. Rules name a jail, not a jail ID, and
        outlive it: destroy must remove them, or a new jail of that name
        inherits them."""
        self._remove(remove_argv(jail))

    def _remove(self, argv: list[str]) -> None:
        done = self.runner.run(argv, check=False)
        if done.ok or "No such process" in done.stderr:
            return
        if "RACCT/RCTL" in done.stderr:
            return  # accounting is off: no rule can exist
        raise LimitError(f"rctl could not remove rules: {done.stderr.strip()}")

    def usage(self, jail: str) -> dict[str, int]:
        done = self.runner.run(usage_argv(jail), check=False)
        if not done.ok:
            raise LimitError(
                f"rctl could not read the usage of jail {jail}: {done.stderr.strip()}",
                hint=ENABLE_HINT if "RACCT/RCTL" in done.stderr else None,
            )
        return common_usage(parse_usage(done.stdout))
