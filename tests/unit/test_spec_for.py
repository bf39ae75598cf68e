"""lifecycle.spec_for reads the jail's mountpoint and its image's osrelease
with one storage call; the answers are those of Storage.mountpoint and
lifecycle.osrelease_of, each asked on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.engine import jails, lifecycle
from rexcarcer.engine.base import Engine
from rexcarcer.errors import StorageError
from rexcarcer.model.jail import JailRecord
from tests.unit.fakes import fake_engine


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    e = fake_engine(tmp_path)
    s = e.host.storage
    s.set_props("bases/bb", {"osrelease": "14.1-RELEASE"})
    s.snapshot("bases/bb@2")
    s.set_props("bases/bb@2", {"osrelease": "14.2-RELEASE"})  # a version's own
    s.clone("bases/bb@1", "images/k", props={"osrelease": "14.0-RELEASE"})
    s.snapshot("images/k@img")
    s.clone("bases/bb@1", "images/plain")  # an image without one
    s.snapshot("images/plain@img")
    return e


@pytest.mark.parametrize(
    ("image", "jail_props", "osrelease"),
    [
        ("images/k@img", {}, "14.0-RELEASE"),
        ("images/plain@img", {"osrelease": "13.0-RELEASE"}, None),  # the image says none
        ("bases/bb@2", {}, "14.2-RELEASE"),  # the version's snapshot first
        ("bases/bb@1", {}, "14.1-RELEASE"),  # then its dataset
        ("images/gone@img", {"osrelease": "13.0-RELEASE"}, "13.0-RELEASE"),  # moved here
        ("bases/bb@9", {"osrelease": "13.0-RELEASE"}, "13.0-RELEASE"),
        ("images/gone@img", {}, None),
        ("", {"osrelease": "13.0-RELEASE"}, "13.0-RELEASE"),  # no image recorded
    ],
)
def test_one_call_answers_as_the_two(
    eng: Engine, image: str, jail_props: dict[str, str], osrelease: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    storage = eng.host.storage
    storage.clone("bases/bb@1", "jails/web", props=jail_props)
    rec = JailRecord("web", image=image)
    expected = (storage.mountpoint("jails/web"), lifecycle.osrelease_of(eng, rec))
    assert expected[1] == osrelease
    asked: list[str] = []
    monkeypatch.setattr(storage, "mountpoint", lambda n: asked.append(n))
    spec = jails.spec_for(eng, rec)
    assert (spec.root, spec.osrelease) == expected
    assert asked == [] or not image  # the fake answers a record without an image at once too


def test_a_jail_without_its_dataset_is_an_error(eng: Engine) -> None:
    with pytest.raises(StorageError, match="jails/web': dataset does not exist"):
        jails.spec_for(eng, JailRecord("web", image="images/k@img"))
