"""Skips stay honest: every one goes through tests/capability.py, which fails
instead of skipping when REX_TESTS_STRICT=1 (CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# pytest.skip(, pytest.importorskip(, @pytest.mark.skip / skipif, pytest.xfail(
_RAW_SKIP = re.compile(r"\bpytest\.(?:skip|importorskip|xfail)\(|\bmark\.(?:skip|skipif|xfail)\b")


def test_no_test_skips_on_its_own() -> None:
    allowed = {TESTS / "capability.py", Path(__file__).resolve()}
    found = [
        f"{path.relative_to(TESTS.parent)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py")) if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _RAW_SKIP.search(line)
    ]  # fmt: skip
    assert found == [], "skip through tests.capability.missing / require_tools:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(("strict", "outcome"), [("1", "1 failed"), ("", "1 skipped")])
def test_a_missing_capability_fails_when_strict(tmp_path: Path, strict: str, outcome: str) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "from tests.capability import require_tools\n\n"
        "def test_needs_a_tool() -> None:\n"
        "    require_tools('no-such-tool-rexcarcer')\n"
    )
    env = {**os.environ, "REX_TESTS_STRICT": strict, "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert outcome in done.stdout, done.stdout + done.stderr
    assert "missing capability: no-such-tool-rexcarcer" in done.stdout + done.stderr


def test_a_linux_only_body_skips_on_freebsd_even_when_strict(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "from tests import capability\n\n"
        "def test_cgroups() -> None:\n"
        "    capability.platform = lambda: 'freebsd'\n"
        "    capability.linux_only('cgroups')\n"
    )
    env = {**os.environ, "REX_TESTS_STRICT": "1", "PYTHONPATH": str(TESTS.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(probe)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert "1 skipped" in done.stdout and "Linux-only: cgroups" in done.stdout, done.stdout
