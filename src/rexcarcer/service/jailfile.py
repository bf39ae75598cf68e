"""``rex export`` and ``rex import`` in process: the engine's side (engine/carry.py,
engine/importing.py) joined with the export file and its signature
(transfer/). The file is the caller's: it is opened by the CLI, which runs as
root on the host whose jail it exports or which imports it.
"""

from __future__ import annotations

import time
from typing import IO

from rexcarcer.base.progress import transfer_for
from rexcarcer.config import Config
from rexcarcer.engine import carry, importing, lifecycle
from rexcarcer.engine.base import Engine
from rexcarcer.errors import Conflict
from rexcarcer.model.jail import JailInfo, Status
from rexcarcer.names import check_jail_name
from rexcarcer.storage.pipe import sending
from rexcarcer.transfer import archive, signer
from rexcarcer.transfer.manifest import Manifest


def host_ranges(config: Config) -> list[carry.Network]:
    """The addresses this host's jails may have: its jail subnet, and the public
    ranges its jail CA certifies (as pki/hook.py reads them)."""
    from rexcarcer.pki import ca, jailca
    from rexcarcer.pki.layout import CaPaths, JailCaPaths

    jpaths = JailCaPaths.under(config.root)
    public = (jailca.public_ranges(jpaths) if jpaths.exists()
              else ca.public_ranges(CaPaths.under(config.root)))  # fmt: skip
    return [config.subnet, *public]


def export(eng: Engine, name: str, out: IO[bytes]) -> Manifest:
    """Write jail ``name`` (its current generation, its volumes, its record) into
    ``out`` as a signed export; it runs on meanwhile."""
    host, config = eng.host, eng.host.config
    check_jail_name(name)
    key = signer.host_key(config, host.store)  # no certificate: refused before any snapshot
    label = time.strftime("rex-export-%Y%m%d-%H%M%S")
    with host.lock(lifecycle.lock_name(name)):  # no update renames its root under the snapshot
        rec = lifecycle.require(eng, name)
        if rec.status is not Status.READY:
            raise Conflict(f"jail {name!r} is being {rec.status} by another rex run",
                           hint="wait for it to finish")  # fmt: skip
        carry.snapshot(host, rec, label)
    parts = carry.pieces(rec)
    try:
        writer = archive.Writer(out, transfer_for(host.progress))
        for p in parts:
            host.progress.step(f"Exporting the {p.part} of {name}")
            with sending(host.storage, f"{p.dataset}@{label}") as stream:
                writer.add(p.part, stream)
        exported = rec.replace(pid=None, pid_start=None, replacing=0)
        manifest = Manifest(exported, config.host, config.zone, int(time.time()), label,
                            lifecycle.osrelease_of(eng, rec), tuple(writer.parts))  # fmt: skip
        writer.finish(signer.sign(key, manifest))
    finally:
        carry.drop_snapshots(host, [p.dataset for p in parts], [label])
    return manifest


def import_(eng: Engine, f: IO[bytes], name: str | None = None) -> JailInfo:
    """Verify the export in ``f`` completely, then make it a jail of this host
    (as ``name``, or the name it was exported with)."""
    host, config = eng.host, eng.host.config
    transfer = transfer_for(host.progress)
    host.progress.step("Verifying the export")
    manifest = signer.verify(archive.read_header(f), config, host.store)
    rec = manifest.jail
    new = check_jail_name(name or rec.name)
    hostname = (f"{new}.jail.{config.zone}" if carry.default_hostname(rec, manifest.zone)
                else rec.hostname)  # fmt: skip
    rec = rec.replace(name=new, hostname=hostname, status=Status.READY, pid=None, pid_start=None,
                      replacing=0)  # fmt: skip
    ranges = host_ranges(config)
    importing.check(eng, rec, ranges)  # a taken name or address: refused before reading on
    archive.check_parts(f, manifest, transfer)
    where = {part.part: (part, offset) for part, offset in archive.regions(manifest)}

    def receive(piece: carry.Piece) -> None:
        part, offset = where[piece.part]
        host.progress.step(f"Receiving the {piece.part} of {new}")
        archive.receive_part(host.storage, f, part, offset, piece.temp, transfer)

    return importing.import_jail(eng, rec, receive, label=manifest.snapshot,
                                 osrelease=manifest.osrelease, ranges=ranges)  # fmt: skip
