"""LIMIT and SECRET through the engine, on the in-memory drivers: what reaches the
runtime, what the record and the store hold (names, never values), and what
is refused before anything changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rexcarcer.engine import jails, update
from rexcarcer.engine.base import Engine
from rexcarcer.engine.plan import plan_up
from rexcarcer.errors import NotSupported
from rexcarcer.model.jail import JailInfo
from rexcarcer.platform.fake import FakePlatform
from rexcarcer.rexfile.limits import LimitError, Limits
from rexcarcer.rexfile.parser import parse
from rexcarcer.runtime.base import Secret
from rexcarcer.secret import SecretError
from rexcarcer.secret.files import LocalSecrets
from rexcarcer.secret.source import Secrets
from tests.unit.fakes import fake_engine, fake_runtime

VALUE = b"correct horse battery staple"
FILE = "BASE bb\nLIMIT memory 64M\nLIMIT pids 50\nSECRET db\n"


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    e = fake_engine(tmp_path)
    e.secrets = Secrets()
    return e


def _nothing_created(eng: Engine) -> None:
    assert eng.host.store.list("") == []
    assert not eng.host.storage.exists("jails/app")
    assert fake_runtime(eng.host).running == {}


def _store_text(eng: Engine) -> str:
    return json.dumps([(e.key, e.value) for e in eng.host.store.list("")])


def test_limits_and_secrets_reach_the_runtime_and_only_names_are_kept(
    eng: Engine, tmp_path: Path
) -> None:
    LocalSecrets(eng.host.config.root).set("db", VALUE)
    rex = parse(FILE, path=tmp_path / "app.rex")
    info = jails.up(eng, rex, "app")
    spec = fake_runtime(eng.host).running["app"]
    assert spec.limits == Limits(memory=64 << 20, pids=50)
    assert spec.secrets == (Secret("db", VALUE),)
    assert "correct horse" not in repr(spec)  # a repr never shows the value
    rec = jails.record(eng, "app")
    assert rec is not None and rec.secrets == ("db",) and rec.limits == spec.limits
    assert "correct horse" not in _store_text(eng)
    assert info.limits == spec.limits
    assert "correct horse" not in json.dumps(info.as_json())
    assert isinstance(eng.host.platform, FakePlatform)
    assert eng.host.platform.checked_limits[-1] == spec.limits


def test_an_unknown_secret_fails_before_anything_changes(eng: Engine, tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="no secret named 'db'") as err:
        jails.up(eng, parse(FILE, path=tmp_path / "app.rex"), "app")
    assert err.value.exit_code == 70
    _nothing_created(eng)
    with pytest.raises(SecretError):
        plan_up(eng, parse(FILE, path=tmp_path / "app.rex"), "app")


def test_no_secret_store_refuses_secret(tmp_path: Path) -> None:
    eng = fake_engine(tmp_path)  # an engine without a secret source
    with pytest.raises(NotSupported, match="no secret store"):
        jails.up(eng, parse("BASE bb\nSECRET db\n", path=tmp_path / "app.rex"), "app")
    _nothing_created(eng)


def test_a_limit_the_host_cannot_enforce_fails_before_anything_changes(
    eng: Engine, tmp_path: Path
) -> None:
    platform = eng.host.platform
    assert isinstance(platform, FakePlatform)

    def refuse(limits: Limits) -> None:
        raise LimitError("cannot enforce LIMIT: resource accounting is off")

    platform.check_limits = refuse  # type: ignore[method-assign]
    with pytest.raises(LimitError, match="accounting is off"):
        jails.up(eng, parse("BASE bb\nLIMIT pids 5\n", path=tmp_path / "app.rex"), "app")
    _nothing_created(eng)


def test_a_new_value_takes_effect_at_the_next_start(eng: Engine, tmp_path: Path) -> None:
    secrets = LocalSecrets(eng.host.config.root)
    secrets.set("db", VALUE)
    jails.up(eng, parse(FILE, path=tmp_path / "app.rex"), "app")
    secrets.set("db", b"rotated")
    assert fake_runtime(eng.host).running["app"].secrets[0].data == VALUE  # until restarted
    jails.restart(eng, "app")
    assert fake_runtime(eng.host).running["app"].secrets[0].data == b"rotated"
    secrets.remove("db")
    jails.stop(eng, "app")
    with pytest.raises(SecretError, match="no secret named 'db'"):
        jails.start(eng, "app")


def test_a_changed_limit_is_an_update_that_says_so(eng: Engine, tmp_path: Path) -> None:
    LocalSecrets(eng.host.config.root).set("db", VALUE)
    jails.up(eng, parse(FILE, path=tmp_path / "app.rex"), "app")
    changed = FILE.replace("LIMIT pids 50", "LIMIT pids 80")
    rec = jails.record(eng, "app")
    assert rec is not None
    new = parse(changed, path=tmp_path / "app.rex")
    assert update.changes(rec, new.canonical(), rec.image, rec.image) == ["LIMIT changed"]
    jails.up(eng, new, "app")
    assert fake_runtime(eng.host).running["app"].limits.pids == 80
    rec = jails.record(eng, "app")
    assert rec is not None and rec.generation == 2


def test_the_plan_shows_limits_and_secret_names_never_values(eng: Engine, tmp_path: Path) -> None:
    LocalSecrets(eng.host.config.root).set("db", VALUE)
    actions = plan_up(eng, parse(FILE, path=tmp_path / "app.rex"), "app")
    kinds = [a.kind for a in actions]
    assert kinds == ["address", "clone", "firewall", "files", "limits", "secrets", "start"]
    text = json.dumps([a.as_json() for a in actions])
    assert "LIMIT memory 67108864" in text and "/run/secrets/db (0400)" in text
    assert "correct horse" not in text


def test_ls_reports_usage_of_running_jails(eng: Engine, tmp_path: Path) -> None:
    jails.up(eng, parse("BASE bb\nLIMIT pids 5\n", path=tmp_path / "app.rex"), "app")
    fake_runtime(eng.host).usages["app"] = {"memory": 1234, "pids": 3}
    [info] = jails.list_jails(eng)
    assert info.usage == {"memory": 1234, "pids": 3}
    data = info.as_json()
    assert data["usage"] == {"memory": 1234, "pids": 3} and data["limits"] == {"pids": 5}
    assert JailInfo.from_json(data) == info  # crosses the agent's doors unchanged
    jails.stop(eng, "app")
    assert jails.list_jails(eng)[0].usage == {}
