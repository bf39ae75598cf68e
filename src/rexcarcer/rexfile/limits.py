"""``LIMIT <resource> <value>``: the four resources and their values, pure.

::

    LIMIT memory 512M     bytes; an integer with an optional K/M/G/T suffix
                          (binary multiples: 1K = 1024), at least 4M
    LIMIT cpu 0.5         cores; 0.01 to 1024, at most two decimals
    LIMIT pids 200        processes (and threads on Linux); an integer >= 1
    LIMIT openfiles 1024  open file descriptors; an integer >= 1

A problem is a ``Problem(reason, hint)`` pair, so the ``.rex`` parser can wrap it
with ``file:line:col`` (a ``RexfileError``, exit 10, like every error in a
``.rex`` file); :func:`parse_limit` raises it as a :class:`LimitError` (exit 43).

This is the language's half of LIMIT: pure, importing nothing of rex but the
error tree, so the parser (this layer) and the drivers that enforce the limits
(``rexcarcer.limits``: cgroups on Linux, rctl(8) on FreeBSD, a layer above)
share one grammar. ``rexcarcer.limits`` re-exports what is public here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from rexcarcer.errors import RexError


class LimitError(RexError):
    """A LIMIT value is invalid, or the host cannot enforce a limit (exit 43).

    Lives beside the limits code, like ``DnsError`` beside DNS; its exit code
    is unique in the tree."""

    exit_code = 43


class Resource(StrEnum):
    MEMORY = "memory"
    CPU = "cpu"
    PIDS = "pids"
    OPENFILES = "openfiles"


class Problem(NamedTuple):
    reason: str
    hint: str


Value = int | float

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Below a few MiB not even /bin/sh and the jail's init start; the kernel
# would OOM-kill the jail at once, which reads like a crash, not a limit.
MIN_MEMORY = 4 << 20
# Far above any real machine; a larger number is a typo, and "no limit" is
# written by leaving LIMIT memory out.
MAX_MEMORY = 1 << 50
# The kernel's smallest CFS quota is 1 ms per 100 ms period (sched-bwc), and
# rctl(8) pcpu counts whole percents of one core: 0.01 core is both.
MIN_CPU = 0.01
MAX_CPU = 1024.0
# Linux's default fs.nr_open: RLIMIT_NOFILE cannot be set above it.
MAX_OPENFILES = 1 << 20
# Linux's PID_MAX_LIMIT (2^22): a larger pids.max could never be reached.
MAX_PIDS = 1 << 22

_SIZE = re.compile(r"([0-9]+)([A-Za-z]*)")
_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?")


@dataclass(frozen=True, slots=True)
class Limits:
    """What a jail may use; ``None`` is "no limit"."""

    memory: int | None = None
    cpu: float | None = None
    pids: int | None = None
    openfiles: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))

    def get(self, resource: Resource) -> Value | None:
        value: Value | None = getattr(self, resource.value)
        return value

    def as_json(self) -> dict[str, Value]:
        """The limits that are set, by resource name (the jail record, ``rex ls``)."""
        return {r.value: v for r in Resource if (v := self.get(r)) is not None}

    @classmethod
    def from_json(cls, data: object) -> Limits:
        """Read :meth:`as_json` back; anything else is a ``ValueError``."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"limits must be an object, not {type(data).__name__}")
        out = cls()
        for key, value in data.items():
            if key not in {r.value for r in Resource}:
                raise ValueError(f"unknown limit {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"limit {key}: {value!r} is not a number")
            out = out.set(Resource(key), value)
        return out

    def set(self, resource: Resource, value: Value) -> Limits:
        """A copy with ``resource`` set; a resource given twice is an error."""
        if self.get(resource) is not None:
            raise LimitError(
                f"LIMIT {resource} is given twice",
                hint=f"keep one LIMIT {resource} line",
            )
        if resource is Resource.CPU:
            return dataclasses.replace(self, cpu=float(value))
        if resource is Resource.MEMORY:
            return dataclasses.replace(self, memory=int(value))
        if resource is Resource.PIDS:
            return dataclasses.replace(self, pids=int(value))
        return dataclasses.replace(self, openfiles=int(value))


NO_LIMITS = Limits()


def resource_problem(name: str) -> Problem | None:
    if name.lower() in {r.value for r in Resource}:
        return None
    return Problem(
        f"unknown resource {name!r} for LIMIT",
        "LIMIT takes one of: " + ", ".join(r.value for r in Resource),
    )


def _memory(text: str) -> int | Problem:
    hint = "write bytes or a K/M/G/T suffix (binary multiples), e.g. LIMIT memory 512M"
    if "." in text or "," in text:
        return Problem(f"memory size {text!r} is not a whole number", hint + " or 1536M")
    m = _SIZE.fullmatch(text)
    if m is None:
        return Problem(f"memory size {text!r} is not a number", hint)
    digits, unit = m.groups()
    if unit.upper() not in UNITS:
        return Problem(f"memory size {text!r} has an unknown unit {unit!r}", hint)
    value = int(digits) * UNITS[unit.upper()]
    if value < MIN_MEMORY:
        return Problem(f"memory limit {text} is below the minimum of 4M", hint)
    if value > MAX_MEMORY:
        return Problem(
            f"memory limit {text} is above 1024T",
            "leave LIMIT memory out for no limit",
        )
    return value


def _cpu(text: str) -> float | Problem:
    hint = "cores as a decimal number from 0.01 to 1024, e.g. LIMIT cpu 0.5 or LIMIT cpu 2"
    m = _DECIMAL.fullmatch(text)
    if m is None:
        return Problem(f"cpu {text!r} is not a decimal number of cores", hint)
    if m.group(2) is not None and len(m.group(2)) > 2:
        return Problem(f"cpu {text} is finer than 0.01 core", hint)
    value = float(text)
    if value < MIN_CPU:
        return Problem(f"cpu {text} must be at least 0.01 core", hint)
    if value > MAX_CPU:
        return Problem(f"cpu {text} is more than 1024 cores", hint)
    return value


def _count(resource: Resource, text: str, maximum: int) -> int | Problem:
    example = {Resource.PIDS: 200, Resource.OPENFILES: 1024}[resource]
    hint = f"a whole number from 1 to {maximum}, e.g. LIMIT {resource} {example}"
    if _INT.fullmatch(text) is None:
        return Problem(f"{resource} {text!r} is not a whole number", hint)
    value = int(text)
    if value < 1:
        return Problem(f"{resource} must be at least 1", hint)
    if value > maximum:
        return Problem(f"{resource} {text} is above the maximum of {maximum}", hint)
    return value


def value_of(resource: Resource, text: str) -> Value | Problem:
    """The value of ``LIMIT resource text``, or why it is not one. Never raises."""
    if resource is Resource.MEMORY:
        return _memory(text)
    if resource is Resource.CPU:
        return _cpu(text)
    if resource is Resource.PIDS:
        return _count(resource, text, MAX_PIDS)
    return _count(resource, text, MAX_OPENFILES)


def limit_problem(name: str, text: str) -> Problem | None:
    """Why ``LIMIT name text`` is invalid, or None. Pure and total."""
    bad = resource_problem(name)
    if bad is not None:
        return bad
    value = value_of(Resource(name.lower()), text)
    return value if isinstance(value, Problem) else None


def parse_limit(name: str, text: str) -> tuple[Resource, Value]:
    """``LIMIT name text`` -> (resource, value); a :class:`LimitError` otherwise.

    The resource name is a keyword (case-insensitive, as .rex keywords are)."""
    bad = resource_problem(name)
    if bad is not None:
        raise LimitError(bad.reason, hint=bad.hint)
    resource = Resource(name.lower())
    value = value_of(resource, text)
    if isinstance(value, Problem):
        raise LimitError(value.reason, hint=value.hint)
    return resource, value


def parse_limits(items: Iterable[tuple[str, str]]) -> Limits:
    """Every ``(resource, value)`` of a .rex file's LIMIT lines, in order."""
    limits = Limits()
    for name, text in items:
        resource, value = parse_limit(name, text)
        limits = limits.set(resource, value)
    return limits


def format_size(n: int) -> str:
    """``536870912`` -> ``512M``: the largest unit that divides exactly."""
    for unit in ("T", "G", "M", "K"):
        if n % UNITS[unit] == 0:
            return f"{n // UNITS[unit]}{unit}"
    return str(n)
