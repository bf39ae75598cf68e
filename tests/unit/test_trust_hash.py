"""platform/trust.subject_hash: openssl runs once per CA certificate, its
answer remembered in the process and in the state directory, keyed by the
certificate's bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rexcarcer.errors import UnsafePath
from rexcarcer.platform import trust
from rexcarcer.run import ScriptedRunner

OPENSSL = ("openssl", "x509", "-noout", "-subject_hash")


@pytest.fixture(autouse=True)
def _fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trust, "_MEMO", {})


def _runner(answer: str = "abcdef01\n") -> ScriptedRunner:
    runner = ScriptedRunner(strict=True)
    runner.on(OPENSSL, answer)
    return runner


def _openssl_calls(runner: ScriptedRunner) -> int:
    return sum(1 for call in runner.calls if call[:4] == OPENSSL)


def test_openssl_runs_once_per_certificate_in_a_process(tmp_path: Path) -> None:
    runner = _runner()
    assert trust.subject_hash(runner, b"CA one") == "abcdef01"
    assert trust.subject_hash(runner, b"CA one") == "abcdef01"
    assert _openssl_calls(runner) == 1
    trust.subject_hash(runner, b"CA two")  # other bytes: asked again
    assert _openssl_calls(runner) == 2
    assert runner.inputs[-1] == b"CA two"


def test_the_hash_kept_in_the_state_directory_spares_the_next_process(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "subject-hash"
    first = _runner()
    assert trust.subject_hash(first, b"CA", cache) == "abcdef01"
    assert [p.read_text() for p in cache.iterdir()] == ["abcdef01\n"]
    trust._MEMO.clear()  # another process: only the file is left
    second = _runner("ffffffff\n")
    assert trust.subject_hash(second, b"CA", cache) == "abcdef01"
    assert _openssl_calls(second) == 0


@pytest.mark.parametrize("content", ["", "abc\n", "ABCDEF01\n", "abcdef01 extra\n", "x" * 100])
def test_a_bad_cache_file_is_ignored_and_rewritten(tmp_path: Path, content: str) -> None:
    cache = tmp_path / "c"
    trust.subject_hash(_runner(), b"CA", cache)
    (entry,) = cache.iterdir()
    entry.write_text(content)
    trust._MEMO.clear()
    runner = _runner("0badf00d\n")
    assert trust.subject_hash(runner, b"CA", cache) == "0badf00d"
    assert _openssl_calls(runner) == 1
    assert entry.read_text() == "0badf00d\n"


def test_a_symlink_in_the_cache_is_not_followed(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    trust.subject_hash(_runner(), b"CA", cache)
    (entry,) = cache.iterdir()
    target = tmp_path / "elsewhere"
    target.write_text("12345678\n")
    entry.unlink()
    entry.symlink_to(target)
    trust._MEMO.clear()
    runner = _runner()
    assert trust.subject_hash(runner, b"CA", cache) == "abcdef01"
    assert _openssl_calls(runner) == 1


def test_an_unreadable_answer_is_refused_and_not_remembered(tmp_path: Path) -> None:
    cache = tmp_path / "c"
    with pytest.raises(UnsafePath):
        trust.subject_hash(_runner("not a hash\n"), b"CA", cache)
    assert not cache.exists()
    assert trust.subject_hash(_runner(), b"CA", cache) == "abcdef01"


def test_an_unwritable_cache_only_costs_openssl(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert trust.subject_hash(_runner(), b"CA", blocker / "c") == "abcdef01"
