"""agent/apirequest.py: what a request to the agents' API may be, from its head
alone. Pure; the server's tests (test_agent_remote.py) send the same over TLS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rexcarcer.agent.apirequest import (
    MAX_EXEC_BODY,
    Call,
    Head,
    Op,
    Refused,
    exec_argv,
    parse,
)
from rexcarcer.buildctx import MAX_CONTEXT
from rexcarcer.names import jail_name_problem


def _refused(head: Head) -> tuple[int, int]:
    with pytest.raises(Refused) as err:
        parse(head)
    return err.value.status, err.value.error.exit_code


def test_the_endpoints() -> None:
    assert parse(Head("GET", "/v1/health", "")) == Call(Op.HEALTH)
    up = parse(Head("POST", "/v1/up", "name=web&file=web.rex&origin=%2Fsrv%2Fweb.rex", "10"))
    assert up == Call(Op.UP, "web", file="web.rex", origin="/srv/web.rex", body=10)
    assert parse(Head("POST", "/v1/up", "file=a+b.rex&name=web", "1")).file == "a b.rex"
    assert parse(Head("POST", "/v1/jails/web/stop", "", "0")) == Call(Op.LIFECYCLE, "web", "stop")
    assert parse(Head("POST", "/v1/jails/web/exec", "", "20")) == Call(Op.EXEC, "web", body=20)


@pytest.mark.parametrize(
    ("head", "status", "code"),
    [
        (Head("POST", "/v1/up", "name=../../victim&file=a.rex", "1"), 400, 2),
        (Head("POST", "/v1/up", "name=web&file=a%2Fb.rex", "1"), 400, 2),
        (Head("POST", "/v1/up", "name=web&file=.", "1"), 400, 2),
        (Head("POST", "/v1/up", "name=web&file=a%00.rex", "1"), 400, 2),
        (Head("POST", "/v1/up", "name=web&file=" + "a" * 256, "1"), 400, 2),
        (Head("POST", "/v1/up", "name=web&file=a.rex&origin=", "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex&origin=" + "a" * 4097, "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex&origin=%1B[2J", "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex&name=web", "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex&verbose", "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=%ff.rex", "1"), 400, 38),
        (Head("POST", "/v1/up", "&".join(f"k{i}=v" for i in range(9)), "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web", "1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "-1"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "abc"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "1 2"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "+5"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "0"), 400, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", str(2**63)), 413, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", str(MAX_CONTEXT + 1)), 413, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", None), 411, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", None, chunked=True), 411, 38),
        (Head("POST", "/v1/up", "name=web&file=a.rex", "9", encoded=True), 400, 38),
        (Head("POST", "/v1/jails/web/exec", "", str(MAX_EXEC_BODY + 1)), 413, 38),
        (Head("POST", "/v1/jails/web/exec", "", None, chunked=True), 411, 38),
        (Head("POST", "/v1/jails/web/start", "", "3"), 400, 38),
        (Head("POST", "/v1/jails/web/start", "", None, chunked=True), 400, 38),
        (Head("POST", "/v1/jails/web/start", "a=b"), 400, 38),
        (Head("POST", "/v1/jails/We%62/start", ""), 400, 2),
        (Head("POST", "/v1/jails/../start", ""), 400, 2),
        (Head("POST", "/v1/jails//start", ""), 400, 2),
        (Head("POST", "/v1/jails/web/../../start", ""), 404, 38),
        (Head("POST", "/v1/jails/web/start/", ""), 404, 38),
        (Head("DELETE", "/v1/jails/web/start", ""), 405, 38),
        (Head("POST", "/v1/health", ""), 405, 38),
        (Head("GET", "/v1/health", "x=1"), 400, 38),
        (Head("GET", "/v1/health", "", "-1"), 400, 38),
        (Head("GET", "/", ""), 404, 38),
    ],
)
def test_bad_requests(head: Head, status: int, code: int) -> None:
    assert _refused(head) == (status, code)


def test_405_says_what_is_allowed() -> None:
    with pytest.raises(Refused) as err:
        parse(Head("GET", "/v1/up", ""))
    assert err.value.allow == "POST"


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "get"]),
    path=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda n, v: f"/v1/jails/{n}/{v}",
            st.text(max_size=20),
            st.sampled_from(["start", "exec", "destroy", "x"]),
        ),
        st.just("/v1/up"),
    ),
    query=st.text(max_size=60),
    length=st.one_of(st.none(), st.text(max_size=25), st.integers(-5, 2**70).map(str)),
)
def test_any_head_is_a_valid_call_or_refused(
    method: str, path: str, query: str, length: str | None
) -> None:
    try:
        call = parse(Head(method, path, query, length))
    except Refused as refused:
        assert refused.status in (400, 404, 405, 411, 413)
        assert refused.error.message
        return
    if call.jail:
        assert jail_name_problem(call.jail) is None
    assert "/" not in call.file and call.file not in (".", "..")
    assert 0 <= call.body <= MAX_CONTEXT


def test_exec_argv() -> None:
    assert exec_argv(b'{"argv": ["sh", "-c", "echo hi"]}') == ["sh", "-c", "echo hi"]
    for body in (b"", b"[]", b'{"argv": "ls"}', b'{"argv": []}', b'{"argv": [1]}',
                 b'{"argv": ["a"], "env": {}}', b'{"argv": ["a\\u0000"]}', b"\xff"):  # fmt: skip
        with pytest.raises(Refused) as err:
            exec_argv(body)
        assert err.value.status == 400
