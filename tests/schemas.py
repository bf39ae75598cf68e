"""The JSON schemas of ``-o json`` (docs/schemas/, docs/json.md): which command each
one documents, where it is tested, and validation.

A published schema lets objects carry properties it does not name, so that a
consumer holding v1 keeps working when a later rex adds one. The tests are
stricter: ``validate`` also checks the output against a copy in which every
object with ``properties`` forbids any other, so a field rex prints is a field
the schema documents.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "docs" / "schemas"
VERSION = "v1"

# schema name -> (the command, the test layer that runs it and validates its output)
COMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("ls", "unit"),
    "up": ("up", "unit"),
    "build": ("build", "unit"),
    "check": ("check", "unit"),
    "plan": ("plan", "unit"),
    "logs": ("logs", "unit"),
    "doctor": ("doctor", "unit"),
    "base-ls": ("base ls", "unit"),
    "base-import": ("base import", "integration"),
    "base-import-release": ("base import-release", "integration"),
    "base-fetch": ("base fetch", "integration"),
    "base-publish": ("base publish", "integration"),
    "base-sign": ("base sign", "integration"),
    "trust-add": ("trust add", "integration"),
    "trust-ls": ("trust ls", "integration"),
    "dns-ls": ("dns ls", "unit"),
    "dns-check": ("dns check", "integration"),
    "ca-init": ("ca init", "unit"),
    "ca-show": ("ca show", "unit"),
    "ca-renew": ("ca renew", "unit"),
    "ca-crl": ("ca crl", "unit"),
    "host-setup": ("host setup", "integration"),
    "host-serve": ("host serve", "integration"),
    "cluster-init": ("cluster init", "integration"),
    "cluster-join": ("cluster join", "integration"),
    "cluster-leave": ("cluster leave", "integration"),
    "hosts": ("hosts", "integration"),
    "cluster-token": ("cluster token", "integration"),
    "cluster-renew": ("cluster renew", "integration"),
    "history": ("history", "unit"),
    "rollback": ("rollback", "unit"),
    "volume-ls": ("volume ls", "unit"),
    "volume-snapshot": ("volume snapshot", "unit"),
    "base-update": ("base update", "unit"),
    "state-backup": ("state backup", "unit"),
    "state-backups": ("state backups", "unit"),
    "state-rebuild": ("state rebuild", "unit"),
    "secret-set": ("secret set", "integration"),
    "secret-ls": ("secret ls", "integration"),
    "secret-rm": ("secret rm", "integration"),
    "export": ("export", "cluster"),
    "import": ("import", "cluster"),
    "move": ("move", "cluster"),
}

# Commands that print no data (their -o json prints nothing on stdout), or a
# stream that is not JSON (exec and console pass the command's output through).
NO_DATA = {"agent", "completion", "exec", "start", "stop", "restart", "destroy", "base rm",
           "trust rm", "volume rm", "cp", "console",
           "state restore"}  # fmt: skip


def path(name: str) -> Path:
    return SCHEMAS / f"{name}.{VERSION}.json"


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path(name).read_text())
    return data


def strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object type that
    lists its properties (and says nothing about others)."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node
                    and "additionalProperties" not in node):  # fmt: skip
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def validate(name: str, data: Any) -> None:
    """``data`` is what the schema ``name`` documents, every field named."""
    schema = load(name)
    Draft202012Validator(schema).validate(data)
    Draft202012Validator(strict(schema)).validate(data)
