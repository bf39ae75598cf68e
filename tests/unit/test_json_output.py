"""``-o json`` against its documented schema (docs/schemas/, docs/json.md).

The commands run through click with the host's drivers replaced by the
in-memory ones (tests/unit/fakes.py), the DNS hook on a fake unbound and the
identity hook on a real CA; the commands that need real daemons or ZFS streams
are validated by tests/integration/test_json_output.py. The first tests check
that every command that prints data has a schema, and every schema a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from jsonschema import Draft202012Validator

from rexcarcer.cli.main import build_cli
from rexcarcer.logs.service import paths_for
from rexcarcer.run import ScriptedRunner
from tests.schemas import COMMANDS, NO_DATA, REPO, SCHEMAS, VERSION, load, path, validate
from tests.unit.fakes import FakeCtx, fake_ctx, rex, web

# -- every command that prints data has a schema, every schema a test -------------------------


def _leaves(cmd: click.Command, prefix: str = "") -> Iterator[str]:
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _leaves(sub, f"{prefix} {name}".strip())
    else:
        yield prefix


def test_every_command_has_a_schema_or_prints_no_data() -> None:
    commands = set(_leaves(build_cli()))
    documented = {cmd for cmd, _ in COMMANDS.values()}
    assert commands == documented | NO_DATA, "a new command: add its schema, or list it in NO_DATA"
    assert not documented & NO_DATA


def test_schemas_are_valid_draft_2020_12_each_listed_in_json_md() -> None:
    files = {p.name for p in SCHEMAS.glob("*.json")}
    assert files == {path(n).name for n in COMMANDS}
    index = (REPO / "docs" / "json.md").read_text()
    for name, (cmd, _) in COMMANDS.items():
        schema = load(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:rexcarcer:schema:{name}.{VERSION}"
        assert schema["title"] == f"rex {cmd} -o json ({VERSION})"
        assert f"[`{path(name).name}`](schemas/{path(name).name})" in index, name
        assert f"`rex {cmd}`" in index, cmd


def test_each_schema_is_validated_by_the_tests_of_its_layer() -> None:
    for name, (_, layer) in COMMANDS.items():
        tests = "".join(p.read_text() for p in (REPO / "tests" / layer).glob("test_*.py"))
        assert f'validate("{name}",' in tests, f"{name}: no {layer} test validates it"


# -- the unit layer ---------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> FakeCtx:
    return fake_ctx(tmp_path)


def test_jail_verbs(ctx: FakeCtx) -> None:
    validate("check", rex(ctx, "check", web(ctx)))
    validate("plan", rex(ctx, "plan", web(ctx)))
    validate("build", rex(ctx, "build", web(ctx)))
    up = rex(ctx, "up", web(ctx))
    validate("up", up)
    assert up["created"] > 0 and up["services"][1] == {"name": "dns", "port": 53, "proto": "udp"}
    second = Path(web(ctx)).with_name("second.rex")
    second.write_text("BASE bb\nSERVICE web PORT 80\n")
    rex(ctx, "up", str(second))
    listed = rex(ctx, "ls")
    validate("ls", listed)
    assert [j["name"] for j in listed] == ["second", "web"]


def test_logs(ctx: FakeCtx) -> None:
    rex(ctx, "up", web(ctx))
    log = paths_for(ctx.config).jail_log("web")
    log.parent.mkdir(parents=True)
    log.write_text("2026-11-30T02:00:00+00:00 203.0.113.2 rc: started\n")
    out = rex(ctx, "logs", "web")
    validate("logs", out)
    assert out == {"jail": "web", "lines": ["2026-11-30T02:00:00+00:00 203.0.113.2 rc: started"]}


def test_dns_and_bases(ctx: FakeCtx) -> None:
    rex(ctx, "up", web(ctx))
    records = rex(ctx, "dns", "ls")
    validate("dns-ls", records)
    assert {"jail": "web", "name": "_dns._udp.svc.rex.internal.", "ttl": 30, "type": "SRV",
            "data": "10 100 53 web.jail.rex.internal."} in records  # fmt: skip
    bases = rex(ctx, "base", "ls")
    validate("base-ls", bases)
    assert bases[0]["jails"] == ["web"]


def test_ca(ctx: FakeCtx) -> None:
    validate("ca-init", rex(ctx, "ca", "init", "--name", "Test CA", "--jail-days", "30"))
    validate("ca-init", rex(ctx, "ca", "init", "--force"))  # replaced_kept_in
    validate("ca-show", rex(ctx, "ca", "show"))
    rex(ctx, "up", web(ctx))
    cert = rex(ctx, "ca", "show", "web")
    validate("ca-show", cert)
    assert "key_file" not in cert and "web.jail.rex.internal" in cert["identity"]["names"]
    validate("ca-renew", rex(ctx, "ca", "renew", "web"))
    validate("ca-renew", rex(ctx, "ca", "renew", "--due"))
    crl = rex(ctx, "ca", "crl")
    validate("ca-crl", crl)
    assert [e["reason"] for e in crl] == ["superseded"]


def test_doctor(ctx: FakeCtx) -> None:
    runner = ctx.eng.host.runner
    assert isinstance(runner, ScriptedRunner)
    synced = (REPO / "tests" / "data" / "time" / "chronyc-synced.txt").read_text()
    runner.on(["chronyc"], synced)
    rows = rex(ctx, "doctor", status=(0, 1))  # 1: a check failed (not root, say)
    validate("doctor", rows)
    time = next(r for r in rows if r["check"] == "time")
    assert time["ok"] and time["data"]["source"] == "203.0.113.1"


def test_generations_and_volumes(ctx: FakeCtx, tmp_path: Path) -> None:
    app = tmp_path / "app.rex"
    for step in ("one", "two"):  # a changed definition: generation 2 replaces 1
        app.write_text(f"BASE bb\nPROVISION RUN echo {step}\nVOLUME data /var/db/app 1G\n")
        rex(ctx, "up", str(app))
    gens = rex(ctx, "history", "app")
    validate("history", gens)
    assert [(g["generation"], g["current"]) for g in gens] == [(1, False), (2, True)]
    back = rex(ctx, "rollback", "app")
    validate("rollback", back)
    assert back["name"] == "app" and back["state"] == "running"
    made = rex(ctx, "volume", "snapshot", "app.data", "--name", "before")
    validate("volume-snapshot", made)
    assert made == {"volume": "app.data", "snapshot": "before"}
    vols = rex(ctx, "volume", "ls")
    validate("volume-ls", vols)
    assert vols[0]["jail"] == "app" and vols[0]["size"] == 1 << 30
    assert "before" in vols[0]["snapshots"] and vols[0]["attached"]
