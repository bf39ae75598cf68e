"""The host's configuration file, as ``rex cluster join`` and ``leave`` rewrite it.

Settings are flat strings or lists of strings (config.py), so the file is
rewritten whole from its parsed content plus the changes; comments are not
kept, which the header says.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path

from rexcarcer.errors import ConfigError
from rexcarcer.fsutil import atomic_write

HEADER = "# rexcarcer.toml: rewritten by `rex cluster join` / `rex cluster leave`\n"


def _render(values: Mapping[str, str | list[str]]) -> str:
    # a JSON string is a valid TOML basic string (same escapes for what we write)
    lines = [f"{key} = {json.dumps(value)}" for key, value in sorted(values.items())]
    return HEADER + "\n".join(lines) + "\n"


def update(path: Path, changes: Mapping[str, str | list[str] | None]) -> None:
    """Set (or, for None, remove) settings in ``path``; other settings stay."""
    values: dict[str, str | list[str]] = {}
    try:
        if path.exists():
            values = dict(tomllib.loads(path.read_text()))
        for key, value in changes.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        atomic_write(path, _render(values), mode=0o644, make_parents=True)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"cannot update {path}: {exc}", hint="fix or remove the file and try again"
        ) from exc
