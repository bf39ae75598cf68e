"""A local base as the engine sees it: ``bases/<name>@<version>`` and its
``rexcarcer:*`` properties."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BaseInfo:
    name: str
    version: str
    snapshot: str  # relative to the parent dataset: bases/<name>@<version>
    props: dict[str, str]

    @property
    def id(self) -> str:
        """What the build cache keys hang off: the base's id, else its snapshot."""
        return self.props.get("id", self.snapshot)
