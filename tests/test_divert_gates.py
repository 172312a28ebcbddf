"""The sanity gates (divert/gates.py) and the protected prefixes (divert/protect.py): pure
functions of answers, the previous set, the memory of last answers, and the clock."""

from __future__ import annotations

import pathlib

import pytest

from divert.config import ConfigError, DivertConfig
from divert.dataset import DiversionSet
from divert.gates import Decision, decide, literal
from divert.lookup import Answer, Resolution
from divert.protect import BUILTIN, Protected, load_file, own_addresses

NOW = 1_800_000_000.0
HOUR = 3600.0
CONFIG = DivertConfig(grace=6 * HOUR, max_per_host=4, growth_allowance=0)
PROTECTED = Protected()


def ok(*addresses: str) -> Resolution:
    v4 = tuple(a for a in addresses if ":" not in a)
    v6 = tuple(a for a in addresses if ":" in a)
    return Resolution(
        Answer("ok", v4) if v4 else Answer("nodata"), Answer("ok", v6) if v6 else Answer("nodata")
    )


def status(s: str) -> Resolution:
    return Resolution(Answer(s), Answer(s))  # type: ignore[arg-type]


PREVIOUS = DiversionSet.build(
    {"h1": ["192.0.2.10", "2001:db8::10"], "h2": ["192.0.2.20"]}, created_at=NOW - HOUR
)
MEMORY = {"h1": {"4": NOW - HOUR, "6": NOW - HOUR}, "h2": {"4": NOW - HOUR}}


def run(answers, *, previous=PREVIOUS, memory=MEMORY, config=CONFIG, now=NOW, **kw):
    return decide(
        answers,
        previous=previous,
        memory=memory,
        protected=kw.pop("protected", PROTECTED),
        config=config,
        now=now,
        **kw,
    )


# -- protected prefixes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("10.20.30.40", "10.0.0.0/8"),
        ("172.31.255.255", "172.16.0.0/12"),
        ("192.168.1.1", "192.168.0.0/16"),
        ("100.64.0.1", "100.64.0.0/10"),
        ("169.254.169.254", "169.254.0.0/16"),
        ("224.0.0.251", "224.0.0.0/4"),
        ("0.0.0.0", "0.0.0.0/8"),
        ("255.255.255.255", "240.0.0.0/4"),
        ("::", "::/128"),
        ("::1", "::1/128"),
        ("fe80::1", "fe80::/10"),
        ("fd00::53", "fc00::/7"),
        ("ff02::1", "ff00::/8"),
        ("::ffff:192.0.2.1", "::ffff:0.0.0.0/96"),
        ("192.0.2.10", None),  # documentation ranges: what tests divert
        ("198.51.100.7", None),
        ("203.0.113.9", None),
        ("2001:db8::10", None),
        ("100.63.255.255", None),
        ("172.32.0.1", None),
    ],
)
def test_builtin_protected(address: str, prefix: str | None) -> None:
    found = PROTECTED.match(address)
    assert (None if found is None else str(found)) == prefix


def test_operator_prefixes_from_config_and_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "protect.txt"
    path.write_text("# our resolvers and customers\n198.51.100.0/24\n\n2001:db8:5::/48  # v6\n")
    protected = Protected.from_sources(["203.0.113.128/25"], [path])
    assert str(protected.match("198.51.100.99")) == "198.51.100.0/24"
    assert str(protected.match("2001:db8:5::1")) == "2001:db8:5::/48"
    assert str(protected.match("203.0.113.200")) == "203.0.113.128/25"
    assert protected.match("203.0.113.5") is None
    assert str(protected.match("10.0.0.1")) == "10.0.0.0/8"  # the built-in ones stay
    assert len(protected) == len(BUILTIN) + 3


def test_protect_file_errors_name_the_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "protect.txt"
    path.write_text("198.51.100.0/24\nour-resolver.example.net\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_file(tmp_path / "missing.txt")


# -- per host -------------------------------------------------------------------------


def test_fresh_answers_replace_the_previous_ones() -> None:
    out = run({"h1": ok("192.0.2.11", "2001:db8::11"), "h3": ok("203.0.113.3")})
    assert out.dset.hosts == {"h1": ("192.0.2.11", "2001:db8::11"), "h3": ("203.0.113.3",)}
    assert out.states == {"h1": "ok", "h3": "ok"}
    assert out.memory == {"h1": {"4": NOW, "6": NOW}, "h3": {"4": NOW}}
    assert out.refused is None and not out.decisions


def test_a_family_that_vanished_is_kept_for_the_grace_period() -> None:
    out = run({"h1": ok("192.0.2.10")})  # no AAAA any more
    assert out.dset.hosts["h1"] == ("192.0.2.10", "2001:db8::10")
    detail = "AAAA nodata: keeps its 1 previous address(es), last answered 60 min ago (grace 6 h)"
    assert out.decisions == [Decision("kept", detail, "h1")]


def test_a_removed_host_is_gone_at_once() -> None:
    out = run({"h1": ok("192.0.2.10", "2001:db8::10")})
    assert out.dset.hosts == {"h1": ("192.0.2.10", "2001:db8::10")}
    assert out.dset.addresses == {"192.0.2.10", "2001:db8::10"}
    assert out.states == {"h1": "ok"} and out.decisions == []


@pytest.mark.parametrize("why", ["timeout", "servfail", "error", "nxdomain", "nodata"])
def test_no_answer_keeps_previous_addresses_within_grace(why: str) -> None:
    out = run({"h1": status(why), "h2": ok("192.0.2.20")})
    assert out.dset.hosts["h1"] == ("192.0.2.10", "2001:db8::10")
    assert out.states["h1"] == "kept"
    assert out.memory["h1"] == {"4": NOW - HOUR, "6": NOW - HOUR}  # not refreshed
    kept = f"{why}: keeps its 1 previous address(es), last answered 60 min ago (grace 6 h)"
    assert out.decisions == [
        Decision("kept", f"A {kept}", "h1"),
        Decision("kept", f"AAAA {kept}", "h1"),
    ]


@pytest.mark.parametrize("why", ["timeout", "servfail", "nxdomain"])
def test_no_answer_beyond_grace_removes_them(why: str) -> None:
    out = run({"h1": status(why), "h2": ok("192.0.2.20")}, now=NOW + 6 * HOUR)
    assert out.dset.hosts == {"h2": ("192.0.2.20",)}
    assert out.states == {"h1": "expired", "h2": "ok"}
    gone = f"{{}} {why} for 7 h, beyond grace 6 h: its 1 previous address(es) removed"
    assert out.decisions == [
        Decision("expired", gone.format("A"), "h1"),
        Decision("expired", gone.format("AAAA"), "h1"),
    ]
    assert out.memory == {"h2": {"4": NOW + 6 * HOUR}}


def test_one_family_failing_keeps_only_that_family() -> None:
    answer = Resolution(Answer("ok", ("192.0.2.11",)), Answer("timeout"))
    out = run({"h1": answer})
    assert out.dset.hosts["h1"] == ("192.0.2.11", "2001:db8::10")
    assert out.memory["h1"] == {"4": NOW, "6": NOW - HOUR}


def test_memory_lost_counts_from_the_previous_set() -> None:
    out = run({"h1": status("timeout")}, memory={}, now=NOW + 5 * HOUR)
    assert out.states["h1"] == "kept"  # the set is from NOW - 1 h: 6 h not yet passed
    out = run({"h1": status("timeout")}, memory={}, now=NOW + 5 * HOUR + 1)
    assert out.states["h1"] == "expired"


def test_a_new_host_without_answer_is_simply_absent() -> None:
    out = run({"h9": status("timeout"), "h8": status("nxdomain"), "h2": ok("192.0.2.20")})
    assert out.states["h9"] == "timeout" and out.states["h8"] == "nxdomain"
    assert set(out.dset.hosts) == {"h2"}
    assert out.failed == 1  # nxdomain is an answer; a timeout is not


def test_cleanfeed_attack_to_a_protected_address_is_refused_and_keeps_the_old_one() -> None:
    """A listed host points its name at an address in a protected prefix (an ISP's own
    resolver, a customer range): never diverted; the host keeps its last real address."""
    protected = Protected.from_sources(["198.51.100.0/24"])
    out = run({"h2": ok("198.51.100.53")}, protected=protected)
    assert out.dset.addresses == {"192.0.2.20"}
    assert out.dset.hosts == {"h2": ("192.0.2.20",)}
    assert out.states == {"h2": "refused"}
    assert out.decisions == [
        Decision(
            "protected",
            "1 of 1 addresses in protected prefixes (198.51.100.53 in 198.51.100.0/24): "
            "not diverted",
            "h2",
        ),
        Decision(
            "kept",
            "A refused by a gate: keeps its 1 previous address(es), last answered 60 min ago "
            "(grace 6 h)",
            "h2",
        ),
    ]


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("64:ff9b::198.51.100.53", "198.51.100.0/24"),  # NAT64 well-known prefix (RFC 6052)
        ("64:ff9b::10.1.2.3", "10.0.0.0/8"),
        ("64:ff9b:1::198.51.100.53", "198.51.100.0/24"),  # local-use /48 (RFC 8215), as /96
        ("64:ff9b:1:c633:64:3500::", "198.51.100.0/24"),  # ... in the /48 format (u octet)
        ("2002:c633:6435::1", "198.51.100.0/24"),  # 6to4 (RFC 3056)
        ("2002:7f00:1::1", "127.0.0.0/8"),
        ("64:ff9b::192.0.2.10", None),  # an IPv4 address that may be diverted
        ("2002:c000:20a::1", None),
        ("2001:db8::c633:6435", None),  # not a translation prefix: no IPv4 inside
        # Teredo (RFC 4380): server 65.54.227.120, the client stored with its bits inverted
        ("2001:0:4136:e378:8000:63bf:39cc:9bca", "198.51.100.0/24"),  # client 198.51.100.53
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", None),  # client 192.0.2.45
        ("2001:0:c633:6435:8000:63bf:3fff:fdd2", "198.51.100.0/24"),  # the server's
        ("2001:0:4136:e378:8000:63bf:c633:6435", None),  # not inverted: 57.204.155.202
        # the operator's NAT64 prefixes (nat64_prefixes): a /96 and the /64 format
        ("2001:db8:64::198.51.100.53", "198.51.100.0/24"),
        ("2001:db8:6464:0:c6:3364:3500:0", "198.51.100.0/24"),
        ("2001:db8:64::192.0.2.10", None),
        ("2001:db8:65::198.51.100.53", None),  # not one of them
    ],
)
def test_ipv4_embedded_in_ipv6_is_protected_like_the_ipv4(address: str, prefix: str | None) -> None:
    """A listed host answering AAAA 64:ff9b::<protected IPv4> would divert that IPv4
    address for every IPv6-only subscriber behind NAT64 (and 6to4 likewise)."""
    nat64 = ["2001:db8:64::/96", "2001:db8:6464::/64"]
    protected = Protected.from_sources(["198.51.100.0/24"], nat64=nat64)
    found = protected.match(address)
    assert (None if found is None else str(found)) == prefix


def test_the_configs_own_addresses_are_protected() -> None:
    """The proxy (next hop), the resolvers and the health host: a listed host pointing its
    name at them would divert the gateway's own infrastructure."""
    config = DivertConfig(
        next_hop=("192.0.2.2", "2001:db8:3::2"),
        resolvers=("203.0.113.53:5353", "[2001:db8::53]:53"),
        health_url="http://198.51.100.9:18081/healthz",
    )
    protected = Protected.for_config(config)
    for address in ("192.0.2.2", "2001:db8:3::2", "203.0.113.53", "2001:db8::53", "198.51.100.9"):
        bits = 128 if ":" in address else 32
        assert str(protected.match(address)) == f"{address}/{bits}", address
    assert str(protected.match("64:ff9b::192.0.2.2")) == "192.0.2.2/32"
    assert protected.match("192.0.2.3") is None
    out = run({"h2": ok("2001:db8:3::2")}, protected=protected)
    assert out.dset.hosts == {"h2": ("192.0.2.20",)}  # its previous A: the AAAA is refused
    assert out.states == {"h2": "refused"}
    assert [d.gate for d in out.decisions] == ["protected", "kept"]


def test_the_health_urls_host_name_is_resolved_once_and_protected() -> None:
    """The health URL may name the proxy by a name: its addresses (through the system's
    resolver, /etc/hosts here) are protected like an address would be."""
    config = DivertConfig(health_url="http://localhost:18081/healthz")
    # /etc/hosts names localhost 127.0.0.1, and on some systems ::1 as well
    assert sorted(own_addresses(config)) in (["127.0.0.1"], ["127.0.0.1", "::1"])
    assert own_addresses(DivertConfig(health_url="http://nowhere.invalid/healthz")) == []


@pytest.mark.parametrize("prefix", ["2001:db8:64::/80", "192.0.2.0/24", "2001:db8:64::1%eth0"])
def test_nat64_prefixes_must_be_ipv6_of_an_rfc_6052_length(prefix: str) -> None:
    with pytest.raises(ConfigError, match="nat64_prefixes"):
        DivertConfig(nat64_prefixes=(prefix,))


def test_protected_addresses_are_dropped_from_a_mixed_answer() -> None:
    out = run({"h3": ok("192.0.2.30", "10.0.0.1", "127.0.0.1")})
    assert out.dset.hosts["h3"] == ("192.0.2.30",)
    assert out.states["h3"] == "protected"
    detail = (
        "2 of 3 addresses in protected prefixes (10.0.0.1 in 10.0.0.0/8, 127.0.0.1 in "
        "127.0.0.0/8): not diverted"
    )
    assert out.decisions == [Decision("protected", detail, "h3")]


def test_a_fan_out_over_max_per_host_is_refused_whole() -> None:
    many = [f"203.0.113.{i}" for i in range(1, 6)]  # 5 > max_per_host 4
    out = run({"h2": ok(*many), "h3": ok(*many)})
    assert not set(many) & out.dset.addresses
    assert out.dset.hosts["h2"] == ("192.0.2.20",)  # its previous address, within grace
    assert out.dset.hosts == {"h2": ("192.0.2.20",)}
    assert out.states == {"h2": "refused", "h3": "refused"}
    over = "5 addresses, over max_per_host 4: none diverted"
    assert [d for d in out.decisions if d.digest == "h3"] == [Decision("per-host", over, "h3")]


def test_ip_literals() -> None:
    answers = {
        "l4": literal("192.0.2.44"),
        "l6": literal("[2001:db8::44]"),
        "lp": literal("10.1.1.1"),
    }
    out = run(answers, previous=None, memory={}, literals=frozenset(answers))
    assert out.dset.hosts == {"l4": ("192.0.2.44",), "l6": ("2001:db8::44",)}
    assert out.states["lp"] == "refused"
    assert out.failed == 0


# -- the whole set ----------------------------------------------------------------------


def test_growth_beyond_the_ratio_is_refused_unless_forced() -> None:
    answers = {f"n{i}": ok(f"203.0.113.{i}") for i in range(1, 8)}  # 3 before, 7 after
    out = run(answers)
    assert out.refused == Decision(
        "growth",
        "7 addresses, 2.3x the previous 3 (max_growth 2, growth_allowance 0): not published "
        "(--force to accept)",
    )
    assert run(answers, force=True).refused is None
    assert run(answers, config=DivertConfig(max_per_host=4, growth_allowance=4)).refused is None
    assert run(answers, config=DivertConfig(max_growth=3.0, growth_allowance=0)).refused is None


def test_the_first_set_has_no_growth_gate() -> None:
    answers = {f"n{i}": ok(f"203.0.113.{i}") for i in range(1, 50)}
    assert run(answers, previous=None, memory={}).refused is None


def test_most_listed_hosts_vanishing_at_once_is_refused_unless_forced() -> None:
    """A resolver that filters the listed names (RPZ: NXDOMAIN for exactly these) would
    otherwise empty the set once the grace period ends."""
    before = {f"n{i}": [f"203.0.113.{i}"] for i in range(1, 13)}
    previous = DiversionSet.build(before, created_at=NOW - 8 * HOUR)
    memory = {d: {"4": NOW - 8 * HOUR} for d in before}
    answers = {d: status("nxdomain") for d in before}
    answers |= {"n1": ok("203.0.113.1"), "n2": ok("203.0.113.2")}  # 10 of 12 gone
    out = run(answers, previous=previous, memory=memory)
    assert out.refused == Decision(
        "vanished",
        "10 of the 12 listed hosts that had addresses lost all of them in one run (max_vanished "
        "0.5, vanished_allowance 8): do the resolvers filter or rewrite these names? (--force "
        "to publish anyway)",
    )
    assert (out.held, out.vanished) == (12, 10)
    assert run(answers, previous=previous, memory=memory, force=True).refused is None
    lenient = DivertConfig(grace=6 * HOUR, growth_allowance=0, max_vanished=0.9)
    assert run(answers, previous=previous, memory=memory, config=lenient).refused is None
    few = DivertConfig(grace=6 * HOUR, growth_allowance=0, vanished_allowance=10)
    assert run(answers, previous=previous, memory=memory, config=few).refused is None
    # Within the grace period they keep their addresses: nothing vanished yet.
    recent = {d: {"4": NOW - HOUR} for d in before}
    assert run(answers, previous=previous, memory=recent).refused is None


def test_hosts_the_list_dropped_do_not_count_as_vanished() -> None:
    before = {f"n{i}": [f"203.0.113.{i}"] for i in range(1, 13)}
    previous = DiversionSet.build(before, created_at=NOW - 8 * HOUR)
    answers = {"n1": ok("203.0.113.1"), "n2": ok("203.0.113.2")}  # the list now has two
    out = run(answers, previous=previous, memory={})
    assert out.refused is None and (out.held, out.vanished) == (2, 0)
    assert out.dset.addresses == {"203.0.113.1", "203.0.113.2"}


def test_max_total_is_refused_even_when_forced() -> None:
    answers = {f"n{i}": ok(f"203.0.113.{i}") for i in range(1, 12)}
    config = DivertConfig(max_total=10)
    out = run(answers, previous=None, config=config, force=True)
    assert out.refused == Decision("total", "11 addresses, over max_total 10: not published")


def test_most_hosts_unanswered_means_broken_resolvers() -> None:
    answers = {"h1": status("timeout"), "h2": status("servfail"), "h3": ok("192.0.2.30")}
    out = run(answers)
    assert out.refused == Decision(
        "failed",
        "2 of 3 hosts got no answer from the resolvers (timeout, SERVFAIL), over max_failed 0.5: "
        "are the resolvers working? (--force to publish anyway)",
    )
    assert run(answers, force=True).refused is None
    assert run(answers, config=DivertConfig(max_failed=0.7, growth_allowance=0)).refused is None


# -- what the decisions say: the lines `blocklist-divert` logs and prints, and its status -

GRACE = "(grace 6 h)"


def test_a_decision_names_its_host_by_digest_or_the_whole_set() -> None:
    """``line()`` is what the log and the CLI print; ``to_dict()`` is the status JSON."""
    host = Decision("kept", "A timeout: ...", "h1")
    whole = Decision("total", "11 addresses")
    assert host.line() == "host h1: kept: A timeout: ..."
    assert whole.line() == "set: total: 11 addresses"
    assert host.to_dict() == {"gate": "kept", "detail": "A timeout: ...", "digest": "h1"}
    assert whole.to_dict() == {"gate": "total", "detail": "11 addresses", "digest": ""}
    assert (host.refusal, whole.refusal) == (False, True)


def test_counts_by_state_most_notable_first() -> None:
    """The status shows the states in STATES order, each with how many hosts are in it."""
    answers = {
        "h1": status("timeout"),
        "h2": ok("192.0.2.20"),
        "h3": ok("192.0.2.30"),
        "h9": status("nxdomain"),
    }
    assert list(run(answers).counts().items()) == [("kept", 1), ("nxdomain", 1), ("ok", 2)]


def test_ip_literals_answer_their_own_family_and_nodata_for_the_other() -> None:
    assert literal("192.0.2.44") == Resolution(Answer("ok", ("192.0.2.44",)), Answer("nodata"))
    assert literal("[2001:db8:0::44]") == Resolution(
        Answer("nodata"), Answer("ok", ("2001:db8::44",))
    )


def test_the_new_set_is_dated_by_the_run_not_the_clock() -> None:
    assert run({"h2": ok("192.0.2.20")}).dset.created_at == NOW


def test_the_protected_decision_shows_four_addresses_and_counts_the_rest() -> None:
    """Four blocked addresses are all shown; a fifth is counted, not shown."""
    four = [f"10.0.0.{i}" for i in range(1, 5)]
    shown = ", ".join(f"{a} in 10.0.0.0/8" for a in four)
    out = run({"h3": ok(*four)}, previous=None, memory={})
    detail = f"4 of 4 addresses in protected prefixes ({shown}): not diverted"
    assert out.decisions == [Decision("protected", detail, "h3")]
    assert out.states == {"h3": "refused"} and out.dset.hosts == {}
    out = run({"h3": ok(*four, "10.0.0.5", "192.0.2.30")}, previous=None, memory={})
    detail = f"5 of 6 addresses in protected prefixes ({shown} and 1 more): not diverted"
    assert out.decisions == [Decision("protected", detail, "h3")]
    assert out.states == {"h3": "protected"} and out.dset.hosts == {"h3": ("192.0.2.30",)}


def test_max_per_host_addresses_are_diverted_one_more_refuses_them_all() -> None:
    four = [f"203.0.113.{i}" for i in range(1, 5)]
    out = run({"h3": ok(*four)}, previous=None, memory={})
    assert out.dset.hosts == {"h3": tuple(four)} and out.decisions == []
    out = run({"h3": ok(*four, "2001:db8::5")}, previous=None, memory={})
    detail = "5 addresses, over max_per_host 4: none diverted"
    assert out.decisions == [Decision("per-host", detail, "h3")] and out.dset.hosts == {}


def test_a_refused_answer_keeps_the_previous_addresses_saying_why() -> None:
    many = [f"203.0.113.{i}" for i in range(1, 6)]
    out = run({"h2": ok(*many)})
    assert out.decisions == [
        Decision("per-host", "5 addresses, over max_per_host 4: none diverted", "h2"),
        Decision(
            "kept",
            f"A refused by a gate: keeps its 1 previous address(es), last answered 60 min ago "
            f"{GRACE}",
            "h2",
        ),
    ]


def test_kept_and_expired_name_the_family_the_failure_and_the_age() -> None:
    answers = {"h1": status("timeout"), "h2": ok("192.0.2.20")}
    kept = "{} timeout: keeps its 1 previous address(es), last answered 60 min ago " + GRACE
    assert run(answers).decisions == [
        Decision("kept", kept.format("A"), "h1"),
        Decision("kept", kept.format("AAAA"), "h1"),
    ]
    gone = "{} timeout for 7 h, beyond grace 6 h: its 1 previous address(es) removed"
    out = run(answers, now=NOW + 6 * HOUR)
    assert out.decisions == [
        Decision("expired", gone.format("A"), "h1"),
        Decision("expired", gone.format("AAAA"), "h1"),
    ]
    assert out.refused is None  # 1 of 2 hosts failed: max_failed 0.5 is not exceeded


@pytest.mark.parametrize(
    ("age", "shown"),
    [
        (-5.0, "0 s"),  # the clock went back
        (0.0, "0 s"),
        (119.0, "119 s"),
        (120.0, "2 min"),
        (7199.0, "119 min"),
        (7200.0, "2 h"),
        (10799.0, "2 h"),
    ],
)
def test_ages_in_seconds_minutes_then_hours(age: float, shown: str) -> None:
    out = run({"h2": status("timeout")}, memory={"h2": {"4": NOW - age}})
    detail = f"A timeout: keeps its 1 previous address(es), last answered {shown} ago {GRACE}"
    assert out.decisions[0] == Decision("kept", detail, "h2")


def test_max_total_addresses_are_published_one_more_is_refused() -> None:
    answers = {f"n{i}": ok(f"203.0.113.{i}") for i in range(1, 11)}
    config = DivertConfig(max_total=10)
    assert run(answers, previous=None, memory={}, config=config).refused is None
    answers["n11"] = ok("203.0.113.11")
    out = run(answers, previous=None, memory={}, config=config)
    assert out.refused == Decision("total", "11 addresses, over max_total 10: not published")
    assert out.decisions == [out.refused]


def test_ip_literals_do_not_count_among_the_hosts_the_resolvers_answer() -> None:
    """One host asked, one timed out: the resolvers failed, whatever the literals."""
    answers = {"h3": status("timeout"), "l1": literal("192.0.2.44"), "l2": literal("192.0.2.45")}
    out = run(answers, previous=None, memory={}, literals=frozenset({"l1", "l2"}))
    detail = (
        "1 of 1 hosts got no answer from the resolvers (timeout, SERVFAIL), over max_failed "
        "0.5: are the resolvers working? (--force to publish anyway)"
    )
    assert out.refused == Decision("failed", detail)
    assert out.decisions == [out.refused]


def test_the_growth_decision_gives_the_ratio_or_from_nothing() -> None:
    answers = {f"n{i}": ok(f"203.0.113.{i}") for i in range(1, 8)}
    limits = "(max_growth 2, growth_allowance 0): not published (--force to accept)"
    detail = f"7 addresses, 2.3x the previous 3 {limits}"
    assert run(answers).refused == Decision("growth", detail)
    empty = DiversionSet.build({}, created_at=NOW - HOUR)
    out = run({"n1": ok("203.0.113.1")}, previous=empty, memory={})
    assert out.refused == Decision("growth", f"1 addresses, from nothing the previous 0 {limits}")


def test_the_vanished_decision_asks_about_the_resolvers() -> None:
    before = {f"n{i}": [f"203.0.113.{i}"] for i in range(1, 13)}
    previous = DiversionSet.build(before, created_at=NOW - 8 * HOUR)
    memory = {d: {"4": NOW - 8 * HOUR} for d in before}
    answers = {d: status("nxdomain") for d in before}
    answers |= {"n1": ok("203.0.113.1"), "n2": ok("203.0.113.2")}
    detail = (
        "10 of the 12 listed hosts that had addresses lost all of them in one run (max_vanished "
        "0.5, vanished_allowance 8): do the resolvers filter or rewrite these names? (--force "
        "to publish anyway)"
    )
    assert run(answers, previous=previous, memory=memory).refused == Decision("vanished", detail)
