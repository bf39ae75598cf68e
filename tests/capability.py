"""Missing capabilities: a skip on a developer's machine, a failure in CI.

``scripts/test`` (and so ``.ci/run``) sets ``REX_TESTS_STRICT=1``: there a test
that cannot run because a tool or a package is missing fails, so that CI never
passes by running less. Every skip in the tests goes through ``missing`` (a
unit test, tests/unit/test_skips.py, checks that no other skip is written).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

STRICT = os.environ.get("REX_TESTS_STRICT") == "1"


def missing(what: str) -> NoReturn:
    """Skip (fail when strict) because ``what`` is not on this machine."""
    message = f"missing capability: {what}"
    if STRICT:
        pytest.fail(message + " (REX_TESTS_STRICT=1: CI must have it)")
    pytest.skip(message)


def require_tools(*tools: str) -> None:
    """Every command in ``tools`` is on PATH, or ``missing``."""
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        missing(", ".join(absent))


def platform() -> str:
    """The platform the integration tests run on: this OS's (REX_TEST_PLATFORM
    can only name it, never another: the tests run real commands)."""
    import sys

    return "freebsd" if sys.platform.startswith("freebsd") else "linux"


def linux_only(why: str) -> None:
    """Skip on FreeBSD what exists only on Linux, saying what (never a failure,
    strict or not: the FreeBSD CI runs every other test body)."""
    if platform() != "linux":
        pytest.skip(f"Linux-only: {why}")


def freebsd_only(why: str) -> None:
    """The converse: a body that needs FreeBSD itself (its rc(8), local_unbound).
    Also at module level, before any fixture (a session pool) is made for it."""
    if platform() != "freebsd":
        pytest.skip(f"FreeBSD-only: {why}", allow_module_level=True)
