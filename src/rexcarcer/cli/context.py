"""What every command gets: the global options, the configuration (read on first
use), this host's drivers or engine, the jail service, and output in text or
JSON. The command modules import this; cli/main.py imports the command modules."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rexcarcer.config import Config
    from rexcarcer.engine.base import Engine
    from rexcarcer.host import Host
    from rexcarcer.progress import Progress
    from rexcarcer.service.api import JailService


@dataclass
class Ctx:
    root: Path | None
    config_file: Path | None
    output: str
    debug: bool
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from rexcarcer.config import load_config

            self._config = load_config(config_file=self.config_file, root=self.root)
        return self._config

    def progress(self) -> Progress:
        from rexcarcer.cli.output import ConsoleProgress

        return ConsoleProgress(quiet=self.output == "json")

    def host(self) -> Host:
        """This host's drivers, for the commands that are not jail verbs (bases,
        DNS, the CA, the jailer services)."""
        from rexcarcer.wiring import open_host

        return open_host(self.config, self.progress())

    def dry_host(self, platform: str) -> Host:
        """A host for a dry run on ``platform``: that OS's configuration (its
        defaults) and builders; another OS's commands are never run here."""
        from rexcarcer.config import load_config
        from rexcarcer.platform.kinds import PlatformKind
        from rexcarcer.wiring import open_dry_host

        kind = PlatformKind(platform)
        config = load_config(config_file=self.config_file, root=self.root, platform=kind)
        foreign = kind is not self.config.runtime
        return open_dry_host(config, foreign=foreign, progress=self.progress())

    def engine(self) -> Engine:
        from rexcarcer.wiring import open_engine

        return open_engine(self.config, self.progress())

    def service(self) -> JailService:
        """The jail service: through this host's agent when it answers, else in
        process (service/connect.py)."""
        from rexcarcer.service.connect import open_service

        return open_service(self.config, self.progress())

    def emit(self, data: Any, text: Callable[[], None]) -> None:
        if self.output == "json":
            click.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            text()


pass_ctx = click.make_pass_decorator(Ctx)
