"""docs/cli.md is the CLI's own --help output: regenerate it when a command changes
(``python -m rexcarcer.cli.docgen > docs/cli.md``)."""

from __future__ import annotations

from pathlib import Path

from rexcarcer.cli.docgen import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_the_command_reference_matches_the_commands() -> None:
    text = render()
    for verb in ("up", "plan", "agent", "cluster join", "base fetch", "trust add", "ca init"):
        assert f"## `rex {verb}`" in text
    assert DOC.read_text() == text, (
        "docs/cli.md is stale: python -m rexcarcer.cli.docgen > docs/cli.md"
    )
