"""nftables: the batch for a ruleset (golden JSON), the reader of real
``nft -j list table inet rexcarcer`` output, and NftFirewall's commands.

tests/data/firewall/nft-list-*.json were printed by nft 1.0.6 (Debian 12) on
Linux 6.18 after loading sample.nft.json (and, for -foreign, one rule added
by hand with ``nft add rule``); the *.stderr files are nft's own errors.
"""

from __future__ import annotations

import json

import pytest

from rexcarcer.firewall import FirewallError, nft
from rexcarcer.firewall.nft import NftFirewall
from rexcarcer.firewall.rules import Guard, PortForward, Ruleset
from rexcarcer.rexfile.ast import Proto
from rexcarcer.run import Completed, ScriptedRunner
from tests.firewall_support import DATA, ip, net, sample_ruleset

LIST = ("nft", "-j", "list", "table", "inet", "rexcarcer")
APPLY = ("nft", "-j", "-f", "-")


def test_batch_matches_golden_file() -> None:
    # sample.nft.json was loaded by the real nft to make nft-list-sample.json
    assert nft.batch(sample_ruleset()) == json.loads((DATA / "sample.nft.json").read_text())


def test_batch_replaces_only_the_rexcarcer_table_and_comments_every_rule() -> None:
    cmds = nft.batch(sample_ruleset())["nftables"]
    table = {"table": {"family": "inet", "name": "rexcarcer"}}
    assert cmds[:3] == [{"add": table}, {"delete": table}, {"add": table}]
    for cmd in cmds[3:]:
        (verb, body), = cmd.items()  # fmt: skip
        assert verb == "add"
        obj = body.get("chain") or body["rule"]
        assert (obj["family"], obj["table"]) == ("inet", "rexcarcer")
        if "rule" in body:
            assert obj["comment"]
    # every jail's forward names the jail in each of its rules
    comments = [c["add"]["rule"]["comment"] for c in cmds if "rule" in c.get("add", {})]
    assert sum("web" in c for c in comments) == 4  # prerouting, output, 2 hairpins


def test_base_chains_accept_by_default_and_use_standard_priorities() -> None:
    cmds = nft.batch(sample_ruleset())["nftables"]
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"]
              for c in cmds if "chain" in c.get("add", {})}  # fmt: skip
    assert {n: (c.get("hook"), c.get("prio"), c.get("policy")) for n, c in chains.items()} == {
        "prerouting": ("prerouting", -100, "accept"), "output": ("output", -100, "accept"),
        "postrouting": ("postrouting", 100, "accept"), "input": ("input", 0, "accept"),
        "forward": ("forward", 0, "accept"), "guard_in": (None, None, None),
        "guard_out": (None, None, None),
    }  # fmt: skip


def test_only_the_chains_a_ruleset_needs_are_made() -> None:
    only = Ruleset((PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80),))
    names = [c["add"]["chain"]["name"] for c in nft.batch(only)["nftables"]
             if "chain" in c.get("add", {})]  # fmt: skip
    assert names == ["prerouting", "output", "postrouting"]
    empty = nft.batch(Ruleset())["nftables"]
    assert len(empty) == 3  # an empty table


@pytest.mark.parametrize(
    "guard",
    [Guard(net("203.0.113.0/24"), "rex0"), Guard(net("203.0.113.0/24"), "rex0", (), ()),
     Guard(net("203.0.113.0/24"), "rex0", (), (ip("198.51.100.7"),))],
)  # fmt: skip
def test_every_chain_a_rule_names_or_jumps_to_is_made(guard: Guard) -> None:
    cmds = nft.batch(Ruleset(guard=guard))["nftables"]
    made = {c["add"]["chain"]["name"] for c in cmds if "chain" in c.get("add", {})}
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    named = {r["chain"] for r in rules}
    jumped = {s["jump"]["target"] for r in rules for s in r["expr"] if "jump" in s}
    assert named | jumped <= made
    assert ("forward" in made) == bool(guard.addresses)


def test_hairpin_from_jails_needs_a_known_jail_subnet() -> None:
    web = PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80)
    alone = nft.comments_of(nft.batch(Ruleset((web,))))
    assert dict(alone)["postrouting"] == ("hairpin web tcp/8080 from the host",)
    guarded = Ruleset((web,), guard=Guard(net("203.0.113.0/24"), "rex0"))
    assert dict(nft.comments_of(nft.batch(guarded)))["postrouting"] == (
        "hairpin web tcp/8080 from jails", "hairpin web tcp/8080 from the host",
    )  # fmt: skip


def test_real_listing_reads_back_as_the_ruleset_that_was_loaded() -> None:
    listing = nft.parse_listing((DATA / "nft-list-sample.json").read_text())
    assert listing.ruleset == sample_ruleset()
    assert listing.comments == nft.comments_of(nft.batch(sample_ruleset()))


def test_real_listing_with_a_rule_added_by_hand_is_refused() -> None:
    with pytest.raises(FirewallError, match=r"rule rex did not write.*added by hand"):
        nft.parse_listing((DATA / "nft-list-foreign.json").read_text())


def test_listing_that_is_not_nft_json_is_refused() -> None:
    for text in ("", "[]", '{"x": 1}'):
        with pytest.raises(FirewallError):
            nft.parse_listing(text)


@pytest.mark.parametrize(
    ("chain", "expr"),
    [("prerouting", [{"match": "x"}]),
     ("postrouting", [{"match": {"op": "==", "left": {"payload": {"field": "saddr"}},
                                 "right": "not-a-net"}}]),
     ("input", [{"match": {"op": "==", "left": {"payload": {"field": "saddr"}},
                           "right": {"prefix": {"addr": "x", "len": 3}}}}]),
     ("guard_in", [{"match": {"op": "==", "left": {"payload": {"protocol": "sctp",
                                                               "field": "dport"}},
                              "right": 1}}, {"drop": None}])],
)  # fmt: skip
def test_odd_rules_in_the_table_are_firewall_errors(chain: str, expr: list[object]) -> None:
    data = json.loads((DATA / "nft-list-sample.json").read_text())
    rule = {"family": "inet", "table": "rexcarcer", "chain": chain, "handle": 99,
            "comment": "masquerade x" if chain == "postrouting" else "publish web x",
            "expr": expr}  # fmt: skip
    data["nftables"].append({"rule": rule})
    with pytest.raises(FirewallError):
        nft.parse_listing(json.dumps(data))


def test_hostile_comment_cannot_smuggle_a_jail_name() -> None:
    data = json.loads((DATA / "nft-list-sample.json").read_text())
    for obj in data["nftables"]:
        if obj.get("rule", {}).get("chain") == "prerouting":
            obj["rule"]["comment"] = 'publish ../../x" tcp/8080'
    with pytest.raises(FirewallError, match="bad jail name"):
        nft.parse_listing(json.dumps(data))


def listing_runner(listed: str | None, applied: Completed | None = None) -> ScriptedRunner:
    r = ScriptedRunner(strict=True)
    if listed is None:
        r.on(LIST, Completed(LIST, 1, "", (DATA / "nft-list-missing.stderr").read_text()))
    else:
        r.on(LIST, listed)
    r.on(APPLY, applied or Completed(APPLY, 0))
    return r


def test_apply_sends_one_batch_on_stdin() -> None:
    r = listing_runner(None)
    assert NftFirewall(r).apply(sample_ruleset()) is True
    assert r.calls == [LIST, APPLY]
    sent = r.inputs[-1]
    assert isinstance(sent, str)
    assert json.loads(sent) == nft.batch(sample_ruleset())


def test_apply_of_what_is_loaded_does_nothing() -> None:
    r = listing_runner((DATA / "nft-list-sample.json").read_text())
    assert NftFirewall(r).apply(sample_ruleset()) is False
    assert r.calls == [LIST]


def test_apply_replaces_a_table_with_foreign_rules_or_other_content() -> None:
    r = listing_runner((DATA / "nft-list-foreign.json").read_text())
    assert NftFirewall(r).apply(sample_ruleset()) is True
    assert r.calls[-1] == APPLY
    r = listing_runner((DATA / "nft-list-sample.json").read_text())
    changed = Ruleset(sample_ruleset().forwards[1:], sample_ruleset().masquerade)
    assert NftFirewall(r).apply(changed) is True


def test_apply_of_nothing_where_there_is_no_table_does_nothing() -> None:
    r = listing_runner(None)
    assert NftFirewall(r).apply(Ruleset()) is False
    assert r.calls == [LIST]


def test_current_of_a_missing_table_is_empty() -> None:
    assert NftFirewall(listing_runner(None)).current() == Ruleset()
    full = NftFirewall(listing_runner((DATA / "nft-list-sample.json").read_text()))
    assert full.current() == sample_ruleset()


def test_argv_prefix_runs_nft_elsewhere_and_clear_deletes_only_the_table() -> None:
    r = ScriptedRunner()
    NftFirewall(r, argv_prefix=["ip", "netns", "exec", "h1"]).clear()
    assert r.calls == [("ip", "netns", "exec", "h1", *APPLY)]
    assert json.loads(str(r.inputs[0])) == nft.clear_batch()
    assert nft.clear_batch()["nftables"][-1] == {
        "delete": {"table": {"family": "inet", "name": "rexcarcer"}}
    }


def test_nft_refusing_a_batch_is_a_firewall_error_with_nfts_words() -> None:
    refused = Completed(APPLY, 1, "", (DATA / "nft-apply-error.stderr").read_text())
    r = listing_runner(None, refused)
    with pytest.raises(FirewallError, match="Could not process rule") as err:
        NftFirewall(r).apply(sample_ruleset())
    assert err.value.exit_code == 42


def _guard_with_sources() -> Guard:
    from rexcarcer.firewall.rules import CONTROL_PORTS

    return Guard(
        net("203.0.113.0/24"), "rex0", CONTROL_PORTS, (ip("198.51.100.12"), ip("198.51.100.65")),
        (net("198.51.100.16/28"), net("198.51.100.64/26"), net("2001:db8:5::/64")),
    )  # fmt: skip


def test_guard_sources_match_per_family_and_read_back() -> None:
    """nft-list-guard-sources.json: printed by nft 1.0.6 after loading this guard."""
    rs = Ruleset(guard=_guard_with_sources())
    rules = [c["add"]["rule"] for c in nft.batch(rs)["nftables"] if "rule" in c.get("add", {})]
    tags = [r["comment"] for r in rules if r["chain"] == "input"]
    assert tags == ["guard jails on rex0", "guard jail subnet 203.0.113.0/24",
                    "guard jail sources ipv4", "guard jail sources ipv6"]  # fmt: skip
    listing = nft.parse_listing((DATA / "nft-list-guard-sources.json").read_text())
    assert listing.ruleset == rs
    assert listing.comments == nft.comments_of(nft.batch(rs))


def test_apply_commands_are_empty_when_the_table_holds_the_ruleset() -> None:
    loaded = listing_runner((DATA / "nft-list-sample.json").read_text())
    assert NftFirewall(loaded).apply_commands(sample_ruleset()) == []
    assert loaded.calls == [LIST]  # read, nothing sent
    assert NftFirewall(listing_runner(None)).apply_commands(sample_ruleset()) == [[*APPLY]]
