"""Kill anywhere, between hosts (the three-host bed of test_move.py): the
`rex move` client and the agent serving a remote `rex up` are killed with
SIGKILL right after each step they report (the k-th ``==>`` line, for every
k of an uninterrupted run; tests/killsteps.py); then one command converges:

- `rex move NAME --to h2` run on h1 without h1's agent (the engine in the
  `rex` process: that process is the move's source), killed after its k-th
  step; then the same `rex move` again: the jail runs on h2 only, its volume's
  data intact;
- `rex up FILE --name NAME --host h2` asked on h1: h2's agent builds and
  starts the jail and is killed after the k-th step it logs (the API answers
  once, at the end: the steps are in the agent's log); the agent is started
  again, and the same `rex up` converges (the jail runs on h2, complete), or
  `rex destroy NAME` does (nothing of it anywhere).

"Nothing left over" is checked on every host and in etcd: datasets and
snapshots (a transfer's ``_in-`` ones and those a move marked ``moved``
included), network namespaces, mounts, processes; the jail's record, kept
generations, address and HOSTNAME claims, DNS records, certificate and health
(tests/integration/faults.py); every host's resolver answers the one address
(or nothing); no route or firewall rule of any host names an address the jail
left. ``REX_KILL_REPORT`` collects the matrix (command x step) as JSON lines.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from rexcarcer.errors import Busy
from tests.cluster.conftest import ClusterHost, stop
from tests.cluster.test_move import AGENTS, _agent, _dig, _fill, _ls, bed  # noqa: F401
from tests.cluster.test_security import PREFIX, etcd
from tests.integration.conftest import Rex, wait_until
from tests.integration.faults import Reader, assert_no_build_leftovers, jail_keys, traces
from tests.killsteps import follow, kill_at_step, report, run_and_kill, steps, verbs

NAME = "kmove"
FQDN = f"{NAME}.jail.rex.internal"
NOT_FOUND = 11


def definition(round_: str) -> str:
    return (f"BASE busybox\nENV ROUND={round_}\nVOLUME data /srv/data\n"
            f"PROVISION RUN echo {round_} > /marker; sleep 0.3\nSERVICE s PORT 7\n")  # fmt: skip


def as_rex(h: ClusterHost) -> Rex:
    return Rex(root=h.root, dataset=h.dataset, netns=h.netns, env=h.env)


def reader(h: ClusterHost) -> Reader:
    def read(prefix: str) -> dict[str, object]:
        return {k.removeprefix(PREFIX): json.loads(v) for k, v in etcd(h, prefix).items()}

    return read


def in_process(h: ClusterHost) -> dict[str, str]:
    """``h``'s environment with no agent to ask: `rex` runs the engine itself."""
    return {**h.env, "REX_AGENT_SOCKET": str(h.root / "run" / "no-agent.sock")}


def _popen(h: ClusterHost, *args: str | Path, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:  # fmt: skip
    pipe = subprocess.PIPE
    return subprocess.Popen(h.argv(*args), env=env or h.env, stdout=pipe, stderr=pipe, text=True)


def _addresses_named(h: ClusterHost, ips: set[str]) -> list[str]:
    """Lines of ``h``'s routes and firewall rules that name one of ``ips``."""
    found = (
        h.ns("ip", "route", "show", "table", "all").stdout + h.ns("nft", "list", "ruleset").stdout
    )
    return [ln for ln in found.splitlines()
            if any(re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d])", ln) for ip in ips)]  # fmt: skip


def assert_runs_on(hosts: list[ClusterHost], where: ClusterHost, digest: str | None,
                   gone: set[str], *, kept: bool = False) -> str:  # fmt: skip
    """Jail NAME runs on ``where`` only, complete; its address. ``gone``: addresses
    it had before, which no host may route or filter any more; ``kept``: it was
    updated, ``where`` keeps its earlier generation."""
    read = reader(where)
    for h in hosts:
        info = _ls(h)[NAME]
        assert info["host"] == where.name and info["state"] == "running", (h.name, info)
    ip = str(_ls(where)[NAME]["ips"][0]).split("/")[0]
    if digest is not None:
        got = where.rex("exec", NAME, "--", "sha256sum", "/srv/data/blob").stdout.split()[0]
        assert got == digest
    for h in hosts:
        left = traces(as_rex(h), NAME)
        if h is where:
            # an update keeps the earlier root and snapshots the volumes
            earlier = [d for d in left["datasets"] if "/generations/" in d or "@gen" in d]
            current = sorted(d for d in left["datasets"] if d not in earlier)
            assert current == [f"{h.dataset}/jails/{NAME}", f"{h.dataset}/volumes/{NAME}.data"]
            assert bool(earlier) == kept, left
            assert len(left["netns"]) == 1 and left["processes"], left
        else:
            assert left == {"datasets": [], "netns": [], "mounts": [], "processes": []}, (
                h.name,
                left,
            )
        assert_no_build_leftovers(as_rex(h), read)
    keys = jail_keys(read, NAME)
    assert f"jails/{NAME}" in keys and f"dns/{NAME}" in keys and f"pki/certs/{NAME}" in keys, keys
    claims = {k: v for p in ("ipam/", "names/") for k, v in read(p).items()
              if isinstance(v, dict) and v.get("jail") == NAME}  # fmt: skip
    assert [k for k in claims if k.startswith("ipam/")] == [f"ipam/{ip}"], claims
    assert all(v["host"] == where.name for v in claims.values()), claims  # type: ignore[index]
    rec = read(f"jails/{NAME}")[f"jails/{NAME}"]
    assert isinstance(rec, dict) and rec["status"] == "ready" and rec["host"] == where.name, rec
    for h in hosts:
        wait_until(lambda h=h: _dig(h, FQDN) == ip, f"{FQDN} at {ip} in {h.name}'s resolver")
        assert _addresses_named(h, gone - {ip}) == [], h.name
    return ip


def assert_gone(hosts: list[ClusterHost], gone: set[str]) -> None:
    read = reader(hosts[0])
    assert jail_keys(read, NAME) == []
    for h in hosts:
        assert NAME not in _ls(h)
        left = traces(as_rex(h), NAME)
        assert left == {"datasets": [], "netns": [], "mounts": [], "processes": []}, (h.name, left)
        assert_no_build_leftovers(as_rex(h), read)
        wait_until(lambda h=h: _dig(h, FQDN) == "", f"{FQDN} gone from {h.name}'s resolver")
        assert _addresses_named(h, gone) == [], h.name


def eventually(check: Callable[[], object], timeout: float = 60.0) -> bool:
    """Run ``check`` until it passes (an agent may still be finishing the
    repair); whether it had to wait."""
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            check()
            return waited
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        waited = True
        time.sleep(1.0)


def _address(h: ClusterHost) -> str:
    return str(_ls(h)[NAME]["ips"][0]).split("/")[0]


def _matrix(
    command: str,
    start: Callable[[str], subprocess.Popen[str]],
    kill: Callable[[subprocess.Popen[str], int], tuple[bool, list[str]]],
    converge: Callable[[str], str],
) -> list[str]:
    """``start(round)`` brings the bed to the start state and starts the command
    whose run ``kill`` interrupts after its k-th step; ``converge(round)`` runs
    the converging command, checks the end state, removes the jail and names
    what converged. The reference run's steps."""
    # rounds named afresh for each matrix: the bed's image cache outlives a test,
    # and a kill at the build step must fall inside a real build
    tag = uuid.uuid4().hex[:6]
    ref = start(f"ref-{tag}")
    killed, want = kill(ref, 0)  # k=0: never killed, every step seen
    assert not killed and want, want
    converge(f"ref-{tag}")
    for k in range(1, len(want) + 1):
        round_ = f"k{k}-{tag}"
        killed, seen = kill(start(round_), k)
        assert verbs(seen[:k]) == verbs(want[:k]), (seen, want)
        t0 = time.monotonic()
        how = converge(round_)
        report(command, k, want[k - 1], killed, how, time.monotonic() - t0)
    return want


def _client_kill(proc: subprocess.Popen[str], k: int) -> tuple[bool, list[str]]:
    if k == 0:
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        return False, steps(err)
    return run_and_kill(proc, k)


@pytest.mark.parametrize("door", ["in process", "agent"])
def test_kill_rex_move(bed: list[ClusterHost], tmp_path: Path, door: str) -> None:  # noqa: F811
    """``door``: the move runs in the killed `rex` process, or in h1's agent
    (the client streams its steps; killed, it closes the connection the agent
    reports progress on)."""
    h1, h2, _h3 = bed
    rexfile = tmp_path / f"{NAME}.rex"
    state: dict[str, object] = {}

    def start(round_: str) -> subprocess.Popen[str]:
        rexfile.write_text(definition(round_))
        state["log"] = (h1.root / "agent.log").stat().st_size
        h1.rex("up", rexfile, "--name", NAME, "--host", "h1")
        state["digest"] = _fill(h1, NAME, 2)
        state["old"] = _address(h1)
        env = in_process(h1) if door == "in process" else h1.env
        return _popen(h1, "move", NAME, "--to", "h2", env=env)

    def converge(round_: str) -> str:
        again = h1.rex("move", NAME, "--to", "h2", check=False)
        addresses = {str(state["old"])}
        try:
            assert again.returncode == 0, again.stderr
            old = {str(state["old"])}
            waited = eventually(lambda: addresses.add(assert_runs_on(bed, h2, digest(), old)))
            assert h2.rex("exec", NAME, "--", "cat", "/marker").stdout == f"{round_}\n"
        finally:
            h2.rex("destroy", "--volumes", NAME, check=False)
        assert_gone(bed, addresses)
        log = (h1.root / "agent.log").read_text()[int(str(state["log"])) :]
        if f"removed what a move of {NAME} left here" in log:
            return "rex move; h1's agent finished the release"
        return "rex move (waited for the agents)" if waited else "rex move"

    def digest() -> str:
        return str(state["digest"])

    _matrix(f"move ({door})", start, _client_kill, converge)


def restart(h: ClusterHost) -> None:
    """Start ``h``'s agent again; return once it serves its API (the dead agent's
    lease outlives it by its TTL: the new one puts its own after it listens)."""
    log = h.root / "agent.log"
    offset = log.stat().st_size
    _agent(h)
    wait_until(lambda: "granted (TTL" in log.read_text()[offset:], f"{h.name}'s agent back")


def _agent_kill(
    h: ClusterHost, mark: dict[str, int]
) -> Callable[[subprocess.Popen[str], int], tuple[bool, list[str]]]:
    """Kill ``h``'s agent after the k-th step it logs (from ``mark["offset"]`` of
    its log on) for the request the client ``proc`` made; start it again."""

    def kill(proc: subprocess.Popen[str], k: int) -> tuple[bool, list[str]]:
        log, offset = h.root / "agent.log", mark["offset"]
        if k == 0:
            _out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            return False, steps(log.read_text()[offset:])
        try:
            reached, seen = kill_at_step(follow(log, offset), k,
                                         lambda: stop(AGENTS[h.name], signal.SIGKILL))  # fmt: skip
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        if AGENTS[h.name].poll() is not None:
            restart(h)
        return reached and proc.returncode != 0, seen

    return kill


def _remote_up(hosts: list[ClusterHost], tmp_path: Path, *, update: bool, destroy: bool) -> None:
    """The matrix of h2's agent killed while it serves `rex up --host h2` asked on
    h1 (of a new jail, or with ``update`` of one that runs), converged by the
    same `rex up` or with ``destroy`` by `rex destroy`."""
    h1, h2, _h3 = hosts
    rexfile = tmp_path / f"{NAME}.rex"
    gone: set[str] = set()
    mark: dict[str, int] = {}

    def start(round_: str) -> subprocess.Popen[str]:
        if update:
            rexfile.write_text(definition(f"old-{round_}"))
            h1.rex("up", rexfile, "--name", NAME, "--host", "h2")
        rexfile.write_text(definition(round_))
        mark["offset"] = (h2.root / "agent.log").stat().st_size
        return _popen(h1, "up", rexfile, "--name", NAME, "--host", "h2")

    def converge(round_: str) -> str:
        if destroy:
            done = h1.rex("destroy", "--volumes", NAME, check=False)
            if done.returncode == Busy.exit_code:  # the restarted agent's repair went first
                done = h1.rex("destroy", "--volumes", NAME, check=False)
            # killed before it claimed the name, there is nothing to destroy
            assert done.returncode in (0, NOT_FOUND), done.stderr
            eventually(lambda: assert_gone(hosts, gone))
            return "rex destroy"
        again = h1.rex("up", rexfile, "--name", NAME, "--host", "h2", check=False)
        if again.returncode == Busy.exit_code:
            # h2's restarted agent, repairing the run it was killed in, held the
            # jail's lock first and changed it: that run's result stands, and the
            # error's hint is to run `rex up` again, which an administrator does
            again = h1.rex("up", rexfile, "--name", NAME, "--host", "h2", check=False)
        try:
            assert again.returncode == 0, again.stderr
            gone.add(assert_runs_on(hosts, h2, None, gone, kept=update))
            assert h2.rex("exec", NAME, "--", "cat", "/marker").stdout == f"{round_}\n"
        finally:
            h1.rex("destroy", "--volumes", NAME, check=False)
        assert_gone(hosts, gone)
        return "rex up"

    what = "remote up (update)" if update else "remote up (new jail)"
    _matrix(f"{what}, h2's agent killed" + (", then destroy" if destroy else ""), start,
            _agent_kill(h2, mark), converge)  # fmt: skip


def test_kill_the_agent_serving_a_remote_up(bed: list[ClusterHost], tmp_path: Path) -> None:  # noqa: F811
    _remote_up(bed, tmp_path, update=False, destroy=False)


def test_kill_the_agent_serving_a_remote_up_then_destroy(
    bed: list[ClusterHost],  # noqa: F811
    tmp_path: Path,
) -> None:
    _remote_up(bed, tmp_path, update=False, destroy=True)


def test_kill_the_agent_serving_a_remote_update(bed: list[ClusterHost], tmp_path: Path) -> None:  # noqa: F811
    _remote_up(bed, tmp_path, update=True, destroy=False)
