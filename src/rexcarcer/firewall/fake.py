"""An in-memory firewall for unit tests: keeps the last applied Ruleset and
counts loads, so a test can tell an idempotent apply from a reload."""

from __future__ import annotations

from dataclasses import dataclass, field

from rexcarcer.firewall import FirewallError
from rexcarcer.firewall.rules import Ruleset


@dataclass
class FakeFirewall:
    ruleset: Ruleset = field(default_factory=Ruleset)
    loads: int = 0
    fail_with: str | None = None  # the next apply raises this, like nft refusing a batch
    missing: list[str] = field(default_factory=list)  # pf.conf hook lines "absent"

    def apply(self, ruleset: Ruleset) -> bool:
        if self.fail_with is not None:
            message, self.fail_with = self.fail_with, None
            raise FirewallError(message)
        if ruleset == self.ruleset:
            return False
        self.ruleset = ruleset
        self.loads += 1
        return True

    def apply_commands(self, ruleset: Ruleset) -> list[list[str]]:
        return [] if ruleset == self.ruleset else [["fake-firewall", "apply"]]

    def current(self) -> Ruleset:
        return self.ruleset

    def missing_hooks(self) -> list[str]:
        return list(self.missing)

    def clear(self) -> None:
        self.ruleset = Ruleset()
