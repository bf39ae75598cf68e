"""Which door the CLI uses: this host's agent when it answers on its socket,
else the engine in process (routed through the cluster when the host is in
one). Both give the same output and exit status (tests/integration/
test_service_doors.py runs the same commands through each)."""

from __future__ import annotations

from rexcarcer.config import Config
from rexcarcer.progress import Progress
from rexcarcer.service.api import JailService
from rexcarcer.service.socket import SocketService, connect


def in_process(config: Config, progress: Progress) -> JailService:
    """The engine in this process; in a cluster, requests for another host's
    jails go to that host's agent (service/routed.py)."""
    # here, not at the top: with an agent answering, the CLI needs no engine
    from rexcarcer.service.local import LocalService
    from rexcarcer.wiring import open_engine

    local = LocalService(lambda: open_engine(config, progress))
    if not config.etcd:
        return local
    from rexcarcer.service.remote import RemoteService
    from rexcarcer.service.routed import RoutedService

    return RoutedService(local, lambda store, host: RemoteService(config, store, host), progress)


def open_service(config: Config, progress: Progress) -> JailService:
    sock = connect(config.agent_socket)
    if sock is None:
        return in_process(config, progress)
    sock.close()
    return SocketService(config.agent_socket, progress, lambda: in_process(config, progress))
