"""An action of ``rex plan`` (and of ``rex host setup --dry-run``): what would
be done, with the exact command lines (each an argv list) and the files, with
their content, that rex would write."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FileWrite:
    """A file rex writes: its path (on the host, or in a jail's root on the
    host), mode and content (None: not shown, e.g. a private key; ``note`` says
    why or what)."""

    path: str
    mode: int
    content: str | None
    note: str = ""

    def lines(self) -> list[str]:
        head = f"write {self.path} ({self.mode:04o})"
        if self.note:
            head += f": {self.note}"
        if self.content is None:
            return [head]
        return [head, *(f"  | {line}" for line in self.content.splitlines())]

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "mode": f"{self.mode:04o}", "content": self.content,
                "note": self.note}  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FileWrite:
        content = d.get("content")
        return cls(str(d["path"]), int(str(d.get("mode", "0644")), 8),
                   None if content is None else str(content), str(d.get("note", "")))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # place, remote, fetch, firewall, build, cached, address, clone, files, start,
    # replace, none, setup
    description: str
    commands: tuple[tuple[str, ...], ...] = field(default=())
    notes: tuple[str, ...] = field(default=())  # what runs inside the jail, what is decided
    files: tuple[FileWrite, ...] = field(default=())  # written before the commands run

    def lines(self) -> list[str]:
        """The files with their content, the command lines shell-quoted, then the notes."""
        out = [line for f in self.files for line in f.lines()]
        return out + [shlex.join(argv) for argv in self.commands] + list(self.notes)

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.kind, "description": self.description,
            "commands": [shlex.join(argv) for argv in self.commands] + list(self.notes),
            "files": [f.as_json() for f in self.files],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Action:
        """The form a client reads back (command lines stay rendered)."""
        return cls(str(data["action"]), str(data["description"]),
                   notes=tuple(str(c) for c in data.get("commands", ())),
                   files=tuple(FileWrite.from_json(f) for f in data.get("files", ())))  # fmt: skip


def argvs(commands: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(str(a) for a in argv) for argv in commands)
