"""How long work reports itself: the CLI draws it, an agent streams it to its
client, tests record it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A new step of the work (``==> message`` on a terminal)."""
        ...

    def output(self, line: str) -> None:
        """A line a command printed while doing the work (a build step's output)."""
        ...


@dataclass
class QuietProgress:
    """Records what it is told; prints nothing."""

    messages: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.messages.append(message)

    def output(self, line: str) -> None:
        self.lines.append(line)
