"""The platforms rex knows, which one this process runs on, and the built-in
settings that depend on it (config.py adds the portable ones)."""

from __future__ import annotations

from enum import StrEnum

from rexcarcer.platform.defaults import DEFAULTS as PLAIN
from rexcarcer.platform.defaults import this_os


class PlatformKind(StrEnum):
    FREEBSD = "freebsd"
    LINUX = "linux"
    FAKE = "fake"


def detect() -> PlatformKind:
    """The platform this process runs on."""
    return PlatformKind(this_os())


# The plain-string table is platform/defaults.py, which the front door reads
# without importing enum; here it is keyed by the kinds.
DEFAULTS: dict[PlatformKind, dict[str, str]] = {PlatformKind(k): v for k, v in PLAIN.items()}
DEFAULTS[PlatformKind.FAKE] = DEFAULTS[PlatformKind.LINUX]
