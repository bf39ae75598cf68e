"""Base verbs: rex base import / import-release / fetch / publish / sign / ls / rm."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rexcarcer.cli import complete
from rexcarcer.cli.context import Ctx, pass_ctx

if TYPE_CHECKING:
    from rexcarcer.model.base import BaseInfo

FILE = click.Path(path_type=Path, dir_okay=False)


@click.group()
def base() -> None:
    """Manage bases: the read-only snapshots jails are cloned from."""


def _emit_base(ctx: Ctx, info: BaseInfo) -> None:
    data = {"name": info.name, "version": info.version, "snapshot": info.snapshot,
            "url": info.props.get("url", ""), "digest": info.props.get("digest", ""),
            "signer": _signers(info), "current": info.is_current,
            "versions": [v.version for v in info.versions]}  # fmt: skip
    ctx.emit(data, lambda: click.echo(f"{ctx.config.dataset}/{info.snapshot}"))


def _signers(info: BaseInfo) -> list[str]:
    """The fingerprints of the signers a base was verified with."""
    return [s for s in info.props.get("signer", "").split(",") if len(s) == 64]


@base.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.argument("name")
@click.option(
    "--version", "version", help="Snapshot name (default: freebsd-version or a timestamp)."
)
@pass_ctx
def import_(ctx: Ctx, path: Path, name: str, version: str | None) -> None:
    """Make base NAME from a directory or a tarball at PATH.

    When NAME exists, PATH becomes its new version: the base's dataset is updated
    in place (only files that changed are written) and snapshotted, so that `rex
    base publish --incremental-from` can publish the change alone. Jails and
    images built on older versions keep them."""
    from rexcarcer.base.local import check_base_name, import_base

    check_base_name(name)
    if version is not None:
        check_base_name(version)
    host = ctx.host()
    try:
        info = import_base(host, path, name, version=version)
    finally:
        host.close()
    _emit_base(ctx, info)


@base.command(name="import-release")
@click.argument("url")
@click.argument("name")
@pass_ctx
def import_release(ctx: Ctx, url: str, name: str) -> None:
    """Make base NAME from a FreeBSD release directory at URL (base.txz + MANIFEST).

    base.txz is checked against the MANIFEST beside it: integrity, not
    authenticity. Publish the result with `rex base publish` to sign it."""
    from rexcarcer.base.release import import_release as run

    host = ctx.host()
    try:
        info = run(host, url, name)
    finally:
        host.close()
    _emit_base(ctx, info)


@base.command()
@click.argument("url")
@click.argument("pin", required=False)
@pass_ctx
def fetch(ctx: Ctx, url: str, pin: str | None) -> None:
    """Fetch, verify and receive the published base at URL.

    \b
    URL is https://, http:// or file:// and names NAME in NAME.sha256,
    NAME.sha256sig.<fingerprint>, NAME.base and NAME.zfs.bz2. Only signatures by
    certificates in the trust directory count (`rex trust add`). PIN, as
    sha256:HEX, must be the manifest's digest. Downloads are cached by digest
    and resumed."""
    from rexcarcer.base.receive import fetch_base

    host = ctx.host()
    try:
        info = fetch_base(host, url, pin=pin)
    finally:
        host.close()
    _emit_base(ctx, info)


def _pairs(keys: tuple[Path, ...], certs: tuple[Path, ...]) -> list[tuple[Path, Path]]:
    from rexcarcer.errors import UsageError

    if len(keys) != len(certs):
        raise UsageError("give one --cert for each --key, in the same order")
    return list(zip(keys, certs, strict=True))


@base.command()
@click.argument("name", shell_complete=complete.base_names)
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--key", "keys", multiple=True, required=True, type=FILE,
              help="Signer's private key (PEM, RSA 2048+ or ECDSA P-256); repeatable.")  # fmt: skip
@click.option("--cert", "certs", multiple=True, required=True, type=FILE,
              help="Signer's X.509 certificate, one per --key.")  # fmt: skip
@click.option("--incremental-from", "since", multiple=True, metavar="VERSION",
              help="Also write NAME.from-VERSION.zfs.bz2, the increment from that older "
              "version (zfs send -i); repeatable.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace a base already published in DIRECTORY.")
@pass_ctx
def publish(
    ctx: Ctx, name: str, directory: Path, keys: tuple[Path, ...], certs: tuple[Path, ...],
    since: tuple[str, ...], force: bool,
) -> None:  # fmt: skip
    """Write the current version of base NAME, signed, into DIRECTORY as
    NAME.zfs.bz2, NAME.base, NAME.sha256 and NAME.sha256sig.<fingerprint> (one per
    signer), and NAME.from-VERSION.zfs.bz2 for each --incremental-from.

    A newer version replaces an older one published there without --force: hosts
    that fetch the same URL receive it as a new version, through an increment
    when they have its older version."""
    from rexcarcer.base.publish import load_signers, publish_base

    signers = load_signers(_pairs(keys, certs))
    host = ctx.host()
    try:
        done = publish_base(host, name, directory, signers, force=force, incremental_from=since)
    finally:
        host.close()
    data = {"files": [str(f) for f in done.files], "digest": done.digest,
            "signers": [s.fingerprint for s in done.signers]}  # fmt: skip

    def text() -> None:
        for f in done.files:
            click.echo(str(f))
        click.echo(f"pin: sha256:{done.digest}")

    ctx.emit(data, text)


@base.command()
@click.argument("path")
@click.option("--key", "keys", multiple=True, required=True, type=FILE, help="Private key.")
@click.option("--cert", "certs", multiple=True, required=True, type=FILE, help="Certificate.")
@pass_ctx
def sign(ctx: Ctx, path: str, keys: tuple[Path, ...], certs: tuple[Path, ...]) -> None:
    """Add signatures to a base published at PATH (DIR/NAME), after checking that
    its manifest matches the files beside it."""
    from rexcarcer.base.publish import load_signers, sign_published

    written = sign_published(path, load_signers(_pairs(keys, certs)))
    ctx.emit([str(p) for p in written], lambda: click.echo("\n".join(map(str, written))))


@base.command(name="ls")
@pass_ctx
def ls_(ctx: Ctx) -> None:
    """List bases: current version, older versions, origin, signer, size and the
    jails using them."""
    from rexcarcer.base.local import jails_using, list_bases
    from rexcarcer.cli.output import table

    host = ctx.host()
    try:
        bases = list_bases(host)
        users = {b.name: jails_using(host, b) for b in bases}
    finally:
        host.close()
    names = _signer_names(ctx, [fp for b in bases for fp in _signers(b)])
    data = [_ls_json(b, users[b.name]) for b in bases]
    rows = [[b.name, b.version, _older(b), b.props.get("origin", ""),
             ",".join(names.get(s, s) for s in _signers(b)) or b.props.get("signer") or "-",
             _size(b.props.get("size")), ",".join(users[b.name]) or "-"]
            for b in bases]  # fmt: skip
    headers = ["name", "version", "older", "origin", "signer", "size", "jails"]
    ctx.emit(data, lambda: click.echo(table(headers, rows)))


def _older(b: BaseInfo) -> str:
    return ",".join(v.version for v in b.versions if v.version != b.version) or "-"


def _ls_json(b: BaseInfo, users: list[str]) -> dict[str, Any]:
    def size(props: dict[str, str]) -> int | None:
        text = props.get("size", "")
        return int(text) if text.isdigit() else None

    versions = [{"version": v.version, "snapshot": v.snapshot, "current": v.version == b.version,
                 "digest": v.props.get("digest", ""), "id": v.id,
                 "osrelease": v.props.get("osrelease", ""), "size": size(v.props)}
                for v in b.versions]  # fmt: skip
    return {
        "name": b.name, "version": b.version, "snapshot": b.snapshot,
        "origin": b.props.get("origin", ""),
        "url": b.props.get("url", ""), "digest": b.props.get("digest", ""),
        "signer": _signers(b), "osrelease": b.props.get("osrelease", ""),
        "size": size(b.props), "jails": users, "versions": versions,
    }  # fmt: skip


def _signer_names(ctx: Ctx, fingerprints: list[str]) -> dict[str, str]:
    """Fingerprint → "subject (fp…)" for the signers still in the trust directory."""
    if not fingerprints:
        return {}
    from rexcarcer.base.trust import TrustStore, trust_dir

    out = {fp: fp[:16] for fp in fingerprints}
    for info in TrustStore(trust_dir(ctx.config.root)).list():
        out[info.fingerprint] = f"{info.subject} ({info.fingerprint[:8]})"
    return out


def _size(text: str | None) -> str:
    if not text or not text.isdigit():
        return "-"
    from rexcarcer.base.progress import human

    return human(int(text))


@base.command(name="rm")
@click.argument("name", metavar="NAME[@VERSION]", shell_complete=complete.base_names)
@pass_ctx
def rm(ctx: Ctx, name: str) -> None:
    """Remove base NAME, every version, and its cached images; refused while jails
    use it. NAME@VERSION removes one older version (not the current one) and the
    images built on it; refused while jails were cloned from it."""
    from rexcarcer.base.local import find_base, jails_using, remove_base, remove_version, split_ref

    base_name, version = split_ref(name)
    host = ctx.host()
    try:
        if version is not None:
            remove_version(host, base_name, version)
        else:
            remove_base(host, base_name, jails_using(host, find_base(host, base_name)))
    finally:
        host.close()


def register(group: click.Group) -> None:
    group.add_command(base)
