"""FreeBSD release MANIFEST parsing (the format of release/scripts/make-manifest.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.base import VerificationError
from rexcarcer.base.release import parse_release_manifest, release_dir

DATA = Path(__file__).parent.parent / "data" / "base"


def test_parse_a_release_manifest() -> None:
    entries = parse_release_manifest((DATA / "MANIFEST").read_text())
    assert sorted(entries) == [
        "base-dbg.txz", "base.txz", "kernel.txz", "lib32.txz", "src.txz", "tests.txz",
    ]  # fmt: skip
    base = entries["base.txz"]
    assert base.dist == "base" and base.count == 27603 and base.default_on
    assert base.description == "Base system (MANDATORY)"
    assert len(base.sha256) == 64
    assert not entries["src.txz"].default_on


@pytest.mark.parametrize(
    "line",
    ["base.txz abc 1 base x on", "base.txz\t" + "a" * 63 + "\t1\tbase\t\"B\"\ton",
     "base.txz\t" + "a" * 64 + "\tmany\tbase\t\"B\"\ton"],
)  # fmt: skip
def test_bad_lines_are_refused(line: str) -> None:
    with pytest.raises(VerificationError, match="not a release MANIFEST line"):
        parse_release_manifest(line + "\n")


def test_duplicates_are_refused() -> None:
    line = "base.txz\t" + "a" * 64 + '\t1\tbase\t"B"\ton\n'
    with pytest.raises(VerificationError, match="listed twice"):
        parse_release_manifest(line * 2)


@pytest.mark.parametrize(
    "url",
    ["https://download.freebsd.org/releases/amd64/14.1-RELEASE",
     "https://download.freebsd.org/releases/amd64/14.1-RELEASE/",
     "https://download.freebsd.org/releases/amd64/14.1-RELEASE/MANIFEST",
     "https://download.freebsd.org/releases/amd64/14.1-RELEASE/base.txz"],
)  # fmt: skip
def test_release_directory(url: str) -> None:
    assert release_dir(url) == "https://download.freebsd.org/releases/amd64/14.1-RELEASE/"
