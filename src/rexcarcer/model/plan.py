"""An action of ``rex plan``: what ``rex up`` would do, with the exact command
lines (each an argv list) the drivers would run."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # place, remote, fetch, firewall, build, cached, address, clone, files, start,
    # publish, none
    description: str
    commands: tuple[tuple[str, ...], ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # what runs inside the jail, files written

    def lines(self) -> list[str]:
        """The command lines, shell-quoted, then the notes."""
        return [shlex.join(argv) for argv in self.commands] + list(self.notes)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.kind, "description": self.description, "commands": self.lines()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Action:
        """The form a client reads back (command lines stay rendered)."""
        return cls(str(data["action"]), str(data["description"]),
                   notes=tuple(str(c) for c in data.get("commands", ())))  # fmt: skip


def argvs(commands: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(a) for a in argv) for argv in commands)
