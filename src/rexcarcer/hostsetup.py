"""``rex host setup``: configure the jailer services and hand them to the OS.

Plan, then apply (STYLE.md 7). The features render what is theirs (dns:
unbound's files; logs: the collector's), the platform reads the host's facts
(read-only commands) and turns both into steps, files and commands, in order
(platform/freebsd_host.py, platform/linux.py). ``--dry-run`` prints exactly
those steps; a real run writes the files (atomically) and runs the commands.
For another OS (``--platform``) the facts are a freshly installed host's, and
nothing of this host is run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rexcarcer.dns.hook import backend_for, publisher_for
from rexcarcer.dns.records import render_data_file
from rexcarcer.dns.services import serve_argv, setup_files
from rexcarcer.dns.unbound import HEADER as DATA_HEADER
from rexcarcer.dns.unbound import DnsBackend, wait_ready
from rexcarcer.errors import NotSupported, RexError
from rexcarcer.fsutil import atomic_write
from rexcarcer.logs import LogsError
from rexcarcer.logs import collector as coll
from rexcarcer.logs import service as logs
from rexcarcer.model.plan import Action, FileWrite
from rexcarcer.platform.base import HostFacts, SetupCommand, SetupFile, SetupInputs, SetupStep
from rexcarcer.state.records import list_jails

if TYPE_CHECKING:
    from rexcarcer.host import Host

READY_TIMEOUT = 15.0


def inputs(host: Host, global_args: Sequence[str]) -> SetupInputs:
    """What the features render: unbound's files, the collector's."""
    layout = host.platform.unbound_layout()
    publisher = publisher_for(host)
    records = [r for recs in publisher.published().values() for r in recs]
    data = render_data_file(records, header=DATA_HEADER)
    paths = logs.paths_for(host.config)
    # the platform leaves them out where no rsyslogd is installed (HostFacts.tools)
    settings = coll.CollectorSettings(
        listen=host.config.host_address, freebind=host.platform.collector_freebind
    )
    table = coll.render_table(coll.table_of(list_jails(host.store)))
    collector = (
        SetupFile(paths.dir, None, "the collector's directory", 0o755),
        SetupFile(paths.work, None, "rsyslog's work directory", 0o755),
        SetupFile(paths.logs, None, "one log file per jail (rex logs)", 0o750),
        SetupFile(paths.conf, coll.render_conf(paths, settings), "the collector's rsyslog.conf"),
        SetupFile(paths.table, table, "the collector's address -> jail table"),
    )
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("REX_")))
    return SetupInputs(
        unbound=setup_files(host.config, layout, data),
        unbound_server=layout.server_conf,
        collector=collector,
        collector_check=tuple(coll.check_argv(paths)),
        collector_rc=coll.freebsd_rc_script(paths),
        serve=tuple(serve_argv(global_args)),
        serve_env=env,
        agent=(*serve_argv(global_args)[:-2], "agent"),
    )


def plan(host: Host, global_args: Sequence[str], *, fresh: bool = False) -> list[SetupStep]:
    """The steps, from this host's facts (``fresh``: a freshly installed host's)."""
    platform = host.platform
    facts: HostFacts = platform.fresh_facts() if fresh else platform.setup_facts()
    return platform.setup_steps(inputs(host, global_args), facts)


def actions(steps: Sequence[SetupStep]) -> list[Action]:
    """The steps as ``rex plan`` prints actions: each file with its content, each
    command line."""
    out = []
    for step in steps:
        if isinstance(step, SetupCommand):
            out.append(Action("run", step.why, (step.argv,)))
        elif step.content is None:
            out.append(
                Action(
                    "mkdir",
                    step.why,
                    files=(FileWrite(str(step.path), step.mode, None, "a directory"),),
                )
            )
        else:
            out.append(
                Action(
                    "write", step.why, files=(FileWrite(str(step.path), step.mode, step.content),)
                )
            )
    return out


def apply(host: Host, steps: Sequence[SetupStep], *, commands: bool = True) -> None:
    for step in steps:
        if isinstance(step, SetupCommand):
            if commands:
                host.progress.step(step.why)
                host.runner.run(step.argv)
            continue
        try:
            if step.content is None:
                step.path.mkdir(parents=True, exist_ok=True)
                os.chmod(step.path, step.mode)
            else:
                changed = atomic_write(
                    step.path, step.content, mode=step.mode, only_if_changed=True, make_parents=True
                )
                host.progress.step(f"{'Wrote' if changed else 'Checked'} {step.path}")
        except OSError as exc:
            raise RexError(f"cannot write {step.path}: {exc}", hint=step.why) from exc


def setup(
    host: Host, *, start: bool, global_args: Sequence[str], backend: DnsBackend | None = None
) -> str:
    """``rex host setup``: apply the plan; with ``start``, wait until DNS answers
    (``backend``: unbound's control socket unless a test gives its own) and the
    collector listens."""
    try:
        steps = plan(host, global_args)
    except NotSupported:
        if start:
            raise
        # --no-start on a host without a service manager: rex's own files only
        given = inputs(host, global_args)
        steps = [*given.unbound, *given.collector]
    apply(host, steps, commands=start)
    if not start:
        return f"configuration written ({host.platform.unbound_layout().server_conf}); not started"
    # the time daemon, the third jailer service: asked first (a daemon rex does
    # not manage is left alone), so only on a real run (platform/timesync.py)
    clock = host.platform.time_service()
    for step in clock.setup_steps():
        host.progress.step(step.why)
        host.runner.run(step.argv)
    dns = backend if backend is not None else backend_for(host.config)
    status = wait_ready(dns, timeout=READY_TIMEOUT)
    publisher_for(host, dns).resync()
    logs_line = _collector(host, steps)
    # a daemon just started is not synchronised yet: reported, not waited for
    time_line = f"; time: {clock.status().detail}"
    return (f"{status}: serving {host.config.zone} on {host.config.host_address}{logs_line}"
            f"{time_line}")  # fmt: skip


def _collector(host: Host, steps: Sequence[SetupStep]) -> str:
    """Where the collector listens, once the OS's service manager started it
    (under systemd, `rex host serve` starts it itself, later)."""
    paths = logs.paths_for(host.config)
    if not any(isinstance(s, SetupFile) and s.path == paths.conf for s in steps):
        return "; jail logs are not collected (install rsyslog)"
    if not any(isinstance(s, SetupCommand) and "rexcarcer_logs" in s.argv for s in steps):
        return ""
    address = host.config.host_address
    deadline = time.monotonic() + logs.READY_TIMEOUT
    while time.monotonic() < deadline:
        pid = host.platform.collector_listening(paths.pidfile, paths.conf, address, coll.LOG_PORT)
        if pid is not None:
            return f"; jail logs collected by rsyslogd {pid} on {address}:{coll.LOG_PORT}"
        time.sleep(0.05)
    raise LogsError(
        f"the log collector does not listen on {address}:{coll.LOG_PORT}",
        hint=f"see {paths.output} and `service rexcarcer_logs status`",
    )
