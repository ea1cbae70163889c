"""From stored networks to nftables rules: selectors resolved to addresses, tracking exemption."""

from __future__ import annotations

import pytest

from carte.api.errors import InvalidArgument
from carte.api.networks import NetworkPolicy
from carte.handlers.network._records import EndpointRecord, NetworkRecord
from carte.handlers.network._ruleset import build_ruleset, parse_selector
from carte.net.rules import render


def endpoint(name: str, ip: str, **labels: str) -> EndpointRecord:
    return EndpointRecord(
        container_id=name * 8, name=name, hostname=name, ip=ip, mac="", host_ifname=f"v{name}",
        labels=labels,
    )  # fmt: skip


def record(policies: list[NetworkPolicy]) -> NetworkRecord:
    return NetworkRecord(
        name="n", id="i", created="", bridge="cbr-test", subnet="10.9.0.0/24",
        gateway="10.9.0.1", policies=policies,
        endpoints={
            "a": endpoint("web", "10.9.0.2", app="web"),
            "b": endpoint("db", "10.9.0.3", app="db"),
        },
    )  # fmt: skip


def test_selectors_become_member_addresses() -> None:
    policy = NetworkPolicy(from_label="app=web", to_label="name=db", port=5432)
    script = render(build_ruleset("carte-t", [record([policy])], log_denied=False))
    assert "ip saddr { 10.9.0.2 } ip daddr { 10.9.0.3 } tcp dport 5432 accept" in script
    assert "notrack" not in script  # a network with policies keeps connection tracking


def test_members_of_a_network_without_policy_are_not_tracked() -> None:
    script = render(build_ruleset("carte-t", [record([])], log_denied=False))
    assert 'iifname "cbr-test" ip daddr 10.9.0.0/24 fib daddr type != local notrack' in script


@pytest.mark.parametrize("text", ["app", "=web", "app=", ""])
def test_malformed_selectors_name_the_text(text: str) -> None:
    with pytest.raises(InvalidArgument, match=f'"{text}"'):
        parse_selector(text)
