"""Validators for the names rex hands to DNS, jail(8) and SRV records.

Each ``*_problem`` function returns a short human reason why a name is not
acceptable, or ``None`` when it is. They are pure and total: any string may be
passed, and none of them raises. The parser wraps the reasons into
``RexfileError``; the CLI uses :func:`check_jail_name`.
"""

from __future__ import annotations

import re

from rexcarcer.errors import UsageError

# RFC 1123 2.1 / RFC 1035 2.3.4: a label is 1..63 of [A-Za-z0-9-], a name at
# most 253 characters without its trailing dot.
MAX_LABEL = 63
MAX_HOSTNAME = 253
# RFC 6335 5.1: service names are at most 15 characters.
MAX_SERVICE = 15

_LABEL_CHARS = re.compile(r"[A-Za-z0-9-]+")
_REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")


def _label_problem(label: str, what: str = "label") -> str | None:
    """RFC 1123 rules for one label; ``what`` names it in the reason."""
    if not label:
        return f"it has an empty {what} (two dots in a row, or a leading dot)"
    if len(label) > MAX_LABEL:
        return f"{what} {label!r} is {len(label)} characters long; the limit is {MAX_LABEL}"
    if not _LABEL_CHARS.fullmatch(label):
        bad = next(ch for ch in label if not _LABEL_CHARS.fullmatch(ch))
        return f"{what} {label!r} contains {bad!r}; use letters, digits and '-'"
    if label.startswith("-") or label.endswith("-"):
        return f"{what} {label!r} starts or ends with '-'"
    return None


def hostname_problem(name: str) -> str | None:
    """Why ``name`` is not an RFC 1123 host name, or None.

    One trailing dot (the absolute form) is accepted; case does not matter.
    """
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        return "the name is empty"
    if len(bare) > MAX_HOSTNAME:
        return f"it is {len(bare)} characters long; the limit is {MAX_HOSTNAME}"
    labels = bare.split(".")
    for label in labels:
        problem = _label_problem(label)
        if problem is not None:
            return problem
    # RFC 1123 2.1: the highest-level label is alphabetic, so that a host name
    # can never be mistaken for a dotted-decimal address.
    if labels[-1].isdigit():
        return f"its last label {labels[-1]!r} is all digits, so it reads as an address"
    lower = bare.lower()
    if any(lower == zone or lower.endswith("." + zone) for zone in _REVERSE_ZONES):
        return "names under in-addr.arpa and ip6.arpa are reverse-DNS (PTR) names"
    return None


def service_problem(name: str) -> str | None:
    """Why ``name`` is not an RFC 6335 service name, or None (case-insensitive)."""
    if not name:
        return "the service name is empty"
    if len(name) > MAX_SERVICE:
        return f"{name!r} is {len(name)} characters long; the limit is {MAX_SERVICE}"
    if not _LABEL_CHARS.fullmatch(name):
        bad = next(ch for ch in name if not _LABEL_CHARS.fullmatch(ch))
        return f"{name!r} contains {bad!r}; use letters, digits and '-'"
    if name.startswith("-") or name.endswith("-"):
        return f"{name!r} starts or ends with '-'"
    if "--" in name:
        return f"{name!r} contains '--'"
    if not any(ch.isalpha() for ch in name):
        return f"{name!r} has no letter (a service name needs at least one)"
    return None


def jail_name_problem(name: str) -> str | None:
    """Why ``name`` is not a jail name, or None.

    A jail name becomes the DNS label of ``<jail>.jail.<zone>`` and a jail(8)
    name, so it is one lower-case label: jail(8) names may not contain dots.
    """
    if not name:
        return "the jail name is empty"
    if "." in name:
        return f"{name!r} contains '.'; jail names may not contain dots"
    problem = _label_problem(name, "name")
    if problem is not None:
        return problem
    if name != name.lower():
        return f"{name!r} contains upper-case letters; jail names are lower case"
    # kern_jail.c: "name cannot be numeric (unless it is the jid)"; jexec and
    # jls would read an all-digit name as a jail ID anyway.
    if name.isdigit():
        return f"{name!r} is all digits, which jail(8) reads as a jail ID"
    return None


def suggest_jail_name(name: str) -> str | None:
    """A valid jail name close to ``name`` (``My_App`` → ``my-app``), or None."""
    guess = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:MAX_LABEL].strip("-")
    if guess and jail_name_problem(guess) is None:
        return guess
    return None


def check_jail_name(name: str) -> str:
    """``name`` if it is a valid jail name; otherwise a UsageError with a hint."""
    problem = jail_name_problem(name)
    if problem is None:
        return name
    hint = "a jail name is 1-63 lower-case letters, digits and '-', not starting or ending with '-'"
    guess = suggest_jail_name(name)
    if guess is not None:
        hint += f"; try --name {guess}"
    raise UsageError(f"bad jail name: {problem}", hint=hint)


# -- names rex reserves in the cluster zone ------------------------------------------

RESERVED_HINT = (
    "HOSTNAME takes one fully qualified name such as docs.example.com; host.{zone}, "
    "jail.{zone} and svc.{zone} hold the names rex gives to hosts, jails and services"
)


def _under(name: str, parent: str) -> bool:
    return name == parent or name.endswith("." + parent)


def reserved_name_problem(name: str, jail: str, zone: str) -> str | None:
    """Why jail ``jail`` may not claim ``name`` (its HOSTNAME) in cluster zone
    ``zone``, or None.

    A jail's certificate and DNS records carry its HOSTNAME, and whatever a jail
    claims is hostile input: a HOSTNAME under ``host.<zone>`` would name a host
    (the agents' API identifies hosts by ``<host>.host.<zone>``), one under
    ``svc.<zone>`` a service rex publishes from SERVICE lines, one under
    ``jail.<zone>`` another jail. Only the jail's own ``<jail>.jail.<zone>``
    is allowed there."""
    name, zone = name.lower().rstrip("."), zone.lower().rstrip(".")
    if name == zone:
        return f"is the cluster zone {zone} itself"
    if _under(name, f"host.{zone}"):
        return f"lies inside host.{zone}, where rex names the cluster's hosts"
    if _under(name, f"svc.{zone}"):
        return f"lies inside svc.{zone}, which rex names from SERVICE lines"
    if name != f"{jail}.jail.{zone}" and _under(name, f"jail.{zone}"):
        return f"lies inside jail.{zone}, where only {jail}.jail.{zone} is this jail's own name"
    return None
