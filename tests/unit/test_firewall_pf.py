"""pf: the anchors' pf.conf(5) text (golden files), pfctl(8) argv, the check
that the loaded main ruleset hooks the anchors, and PfFirewall's commands.

There is no FreeBSD machine here: the pfctl outputs below are written from
the code that prints them (sbin/pfctl/pfctl_parser.c print_rule(),
print_fromto(), print_pool(); sbin/pfctl/pfctl.c pfctl_show_anchors()), not
captured. The rendered text was not loaded by a real pfctl either.
"""

from __future__ import annotations

import logging

import pytest

from rexcarcer.firewall import FirewallError, pf
from rexcarcer.firewall.pf import PfFirewall
from rexcarcer.firewall.rules import Guard, Masquerade, PortForward, Ruleset
from rexcarcer.rexfile.ast import Proto
from rexcarcer.run import Completed, ScriptedRunner
from tests.firewall_support import DATA, ip, net, sample_ruleset

JAILS = net("203.0.113.0/24")

# pfctl -s nat / -s rules of a main ruleset with rex's hooks and others'
MAIN_NAT = """\
nat on em0 inet from 10.0.0.0/24 to any -> (em0) round-robin
nat-anchor "rexcarcer/*" all
rdr-anchor "bastille/*" all
rdr-anchor "rexcarcer/*" all
"""
MAIN_RULES = """\
block drop in all
anchor "rexcarcer/*" all
pass out all flags S/SA keep state
"""


def test_anchors_match_golden_files() -> None:
    rendered = pf.render(sample_ruleset())
    golden = {f"rexcarcer/{p.stem}": p.read_text() for p in (DATA / "pf").glob("*.conf")}
    assert rendered == golden
    assert set(rendered) == {"rexcarcer/web", "rexcarcer/dns1", "rexcarcer/v6",
                             "rexcarcer/nat", "rexcarcer/guard"}  # fmt: skip


def test_a_jail_named_like_a_shared_anchor_shares_it_translation_first() -> None:
    rs = Ruleset(
        (PortForward("guard", Proto.TCP, 8080, ip("203.0.113.5"), 80),
         PortForward("nat", Proto.TCP, 8081, ip("203.0.113.6"), 80)),
        Masquerade(JAILS, "em0"),
        Guard(JAILS, "lo1"),
    )  # fmt: skip
    anchors = pf.render(rs)
    assert set(anchors) == {"rexcarcer/guard", "rexcarcer/nat"}
    guard = anchors["rexcarcer/guard"].splitlines()
    rdr = next(i for i, line in enumerate(guard) if line.startswith("rdr pass"))
    block = next(i for i, line in enumerate(guard) if line.startswith("block"))
    assert rdr < block  # pf.conf(5) STATEMENT ORDER
    nat = anchors["rexcarcer/nat"]
    assert "-> 203.0.113.6 port 80" in nat and "-> (em0)" in nat


def test_masquerade_on_pf_needs_an_interface() -> None:
    with pytest.raises(FirewallError, match="pf needs the outgoing interface"):
        pf.render(Ruleset(masquerade=Masquerade(JAILS)))


def test_forward_on_one_address_needs_no_exception_for_jail_addresses() -> None:
    f = PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80, ip("198.51.100.1"))
    text = pf.render(Ruleset((f,), guard=Guard(JAILS, "lo1")))["rexcarcer/web"]
    assert "no rdr" not in text
    rdr = "rdr pass inet proto tcp from any to 198.51.100.1 port 8080 -> 203.0.113.5 port 80\n"
    assert rdr in text


def test_argv() -> None:
    assert pf.load_argv("rexcarcer/web") == ["pfctl", "-a", "rexcarcer/web", "-f", "-"]
    assert pf.flush_argv("rexcarcer/nat") == ["pfctl", "-a", "rexcarcer/nat", "-F", "all"]
    assert pf.show_argv("rexcarcer/web") == ["pfctl", "-P", "-a", "rexcarcer/web", "-s", "nat"]
    assert pf.anchors_argv() == ["pfctl", "-a", "rexcarcer", "-s", "Anchors"]
    assert pf.main_argv("rules") == ["pfctl", "-s", "rules"]


@pytest.mark.parametrize(
    "anchor", ["", "rexcarcer", "rexcarcer/", "other/web", "rexcarcer/a/b", "rexcarcer/_web",
               "rexcarcer/../x", "rexcarcer/*", "rexcarcer/Web"],
)  # fmt: skip
def test_only_anchors_below_rexcarcer_are_ever_touched(anchor: str) -> None:
    # an empty anchor is the main ruleset: -F all there flushes the host's firewall
    with pytest.raises(FirewallError):
        pf.flush_argv(anchor)
    with pytest.raises(FirewallError):
        pf.load_argv(anchor)


def test_hooks_present_in_the_loaded_main_ruleset() -> None:
    assert pf.missing_hooks(MAIN_NAT, MAIN_RULES) == []


def test_missing_hooks_are_named_as_pf_conf_lines_in_order() -> None:
    assert pf.missing_hooks("", "") == list(pf.HOOKS) == [
        'nat-anchor "rexcarcer/*"', 'rdr-anchor "rexcarcer/*"', 'anchor "rexcarcer/*"',
    ]  # fmt: skip
    nat_only = 'nat-anchor "rexcarcer/*" all\nrdr-anchor "bastille/*" all\n'
    assert pf.missing_hooks(nat_only, MAIN_RULES) == ['rdr-anchor "rexcarcer/*"']
    # the hooks in the wrong listing do not count
    assert pf.missing_hooks(MAIN_RULES, MAIN_NAT) == ['nat-anchor "rexcarcer/*"',
                                                      'rdr-anchor "rexcarcer/*"',
                                                      'anchor "rexcarcer/*"']  # fmt: skip


def test_absolute_hooks_count_and_conditional_ones_do_not() -> None:
    absolute = MAIN_NAT.replace('"rexcarcer/*"', '"/rexcarcer/*"')
    assert pf.missing_hooks(absolute, MAIN_RULES) == []
    conditional = MAIN_RULES.replace('"rexcarcer/*" all', '"rexcarcer/*" on em0 all')
    assert pf.missing_hooks(MAIN_NAT, conditional) == ['anchor "rexcarcer/*"']
    not_wildcard = MAIN_RULES.replace('"rexcarcer/*"', '"rexcarcer"')
    assert pf.missing_hooks(MAIN_NAT, not_wildcard) == ['anchor "rexcarcer/*"']


def test_anchor_listing_keeps_only_names_rex_could_have_made() -> None:
    listed = "  rexcarcer/web\n  rexcarcer/nat\n  rexcarcer/Odd\n  rexcarcer/a/b\n  other/web\n"
    assert pf.parse_anchors(listed) == {"rexcarcer/web", "rexcarcer/nat"}


def test_forwards_read_back_from_pfctl_show_nat() -> None:
    shown = (
        "no rdr inet proto tcp from any to 203.0.113.0/24 port = 8080\n"
        "rdr pass inet proto tcp from any to (self) port = 8080 -> 203.0.113.5 port 80\n"
        "rdr pass inet proto udp from any to 198.51.100.1 port = 5353 -> 203.0.113.5 port 53\n"
        "rdr pass inet6 proto tcp from any to (self) port = 8443 -> 2001:db8:1::5 port 443\n"
        "rdr pass inet proto tcp from any to (self) port = 1 -> 203.0.113.5 port 1 junk\n"
    )
    assert pf.parse_forwards("web", shown) == [
        PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80),
        PortForward("web", Proto.UDP, 5353, ip("203.0.113.5"), 53, ip("198.51.100.1")),
        PortForward("web", Proto.TCP, 8443, ip("2001:db8:1::5"), 443),
    ]


def test_forwards_rex_did_not_write_are_refused() -> None:
    odd = "rdr pass inet proto tcp from any to (em0) port = 8080 -> 203.0.113.5 port 80\n"
    with pytest.raises(FirewallError, match="did not write"):
        pf.parse_forwards("web", odd)
    with pytest.raises(FirewallError, match="is not a port"):
        pf.parse_forwards("web", odd.replace("(em0)", "(self)").replace("8080", "0"))


def pf_runner(anchors: str, rules: str = MAIN_RULES) -> ScriptedRunner:
    r = ScriptedRunner(strict=True)
    r.on(["pfctl", "-a", "rexcarcer", "-s", "Anchors"], anchors)
    r.on(["pfctl", "-a"], "")  # loads and flushes
    r.on(["pfctl", "-s", "nat"], MAIN_NAT)
    r.on(["pfctl", "-s", "rules"], rules)
    return r


def test_apply_loads_every_anchor_on_stdin_then_flushes_stale_ones() -> None:
    r = pf_runner("  rexcarcer/web\n  rexcarcer/old\n")
    assert PfFirewall(r).apply(sample_ruleset()) is True
    loads = [(c, i) for c, i in zip(r.calls, r.inputs, strict=True) if c[-2:] == ("-f", "-")]
    assert [c[2] for c, _ in loads] == sorted(pf.render(sample_ruleset()))
    assert all(i == pf.render(sample_ruleset())[c[2]] for c, i in loads)
    assert ("pfctl", "-a", "rexcarcer/old", "-F", "all") in r.calls
    assert not any(c[2] == "rexcarcer/web" and "-F" in c for c in r.calls)


def test_apply_warns_when_pf_conf_does_not_hook_the_anchors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = pf_runner("", rules="block drop in all\n")
    with caplog.at_level(logging.WARNING, logger="rexcarcer.firewall"):
        PfFirewall(r).apply(Ruleset())
    assert 'add: anchor "rexcarcer/*"' in caplog.text


def test_nothing_loaded_yet_and_clear() -> None:
    r = ScriptedRunner(strict=True)
    args = ("pfctl", "-a", "rexcarcer", "-s", "Anchors")
    r.on(args, Completed(args, 1, "", "Anchor 'rexcarcer' not found.\n"))
    assert PfFirewall(r).current() == Ruleset()
    r = pf_runner("  rexcarcer/web\n  rexcarcer/guard\n")
    PfFirewall(r).clear()
    assert r.calls[1:] == [("pfctl", "-a", "rexcarcer/guard", "-F", "all"),
                           ("pfctl", "-a", "rexcarcer/web", "-F", "all")]  # fmt: skip


def test_current_reads_each_jail_anchor() -> None:
    r = pf_runner("  rexcarcer/web\n  rexcarcer/guard\n")
    shown = "rdr pass inet proto tcp from any to (self) port = 8080 -> 203.0.113.5 port 80\n"
    r.on(["pfctl", "-P", "-a", "rexcarcer/web", "-s", "nat"], shown)
    r.on(["pfctl", "-P", "-a", "rexcarcer/guard", "-s", "nat"], "")
    assert PfFirewall(r).current() == Ruleset(
        (PortForward("web", Proto.TCP, 8080, ip("203.0.113.5"), 80),)
    )


def test_pfctl_refusing_rules_is_a_firewall_error() -> None:
    r = pf_runner("")
    load = ("pfctl", "-a", "rexcarcer/web", "-f", "-")
    said = "stdin:3: syntax error\npfctl: Syntax error in config file\n"
    r.on(load, Completed(load, 1, "", said))
    with pytest.raises(FirewallError, match="syntax error") as err:
        PfFirewall(r).apply(sample_ruleset())
    assert err.value.hint is not None and "pf.conf" in err.value.hint


def test_guard_sources_block_from_every_network_jails_send_from() -> None:
    guard = Guard(JAILS, "em0", ((Proto.TCP, 7443),), (ip("198.51.100.12"), ip("2001:db8::12")),
                  (net("198.51.100.16/28"), net("2001:db8:5::/64")))  # fmt: skip
    text = pf.render(Ruleset(guard=guard))["rexcarcer/guard"]
    assert text.splitlines()[2:] == [
        "block drop quick inet proto tcp from { 203.0.113.0/24, 198.51.100.16/28 } to (self) "
        "port { 7443 }",
        "block drop quick inet from { 203.0.113.0/24, 198.51.100.16/28 } to { 198.51.100.12 }",
        "block drop quick inet6 proto tcp from 2001:db8:5::/64 to (self) port { 7443 }",
        "block drop quick inet6 from 2001:db8:5::/64 to { 2001:db8::12 }",
    ]


def test_apply_commands_load_every_anchor_and_flush_stale_ones() -> None:
    r = pf_runner("  rexcarcer/web\n  rexcarcer/old\n")
    cmds = PfFirewall(r).apply_commands(sample_ruleset())
    assert cmds == [pf.load_argv(a) for a in pf.render(sample_ruleset())] + [
        pf.flush_argv("rexcarcer/old")]  # fmt: skip
    assert all("-s" in c for c in r.calls)  # it only read
