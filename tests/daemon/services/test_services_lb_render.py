"""The load-balancing table as text, checked by `nft -c` (parse and validate, no change)."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address

import pytest

from carte.api.errors import InvalidArgument
from carte.net.lb import BalancedService, ServicePort, render

VIP = IPv4Address("10.77.0.254")
A, B = IPv4Address("10.77.0.2"), IPv4Address("10.77.0.3")


def nft_accepts(script: str) -> None:
    done = subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_ready_replicas_are_a_numgen_map() -> None:
    web = BalancedService(
        name="s_web",
        vip=VIP,
        ports=(ServicePort(80, 80), ServicePort(18080, 80, published=True)),
        backends=(B, A),
    )
    script = render("s2-render-test", [web])
    assert (
        f"ip daddr {VIP} tcp dport 80 dnat ip to numgen random mod 2 map {{ 0 : {A}, 1 : {B} }}"
        in script
    )
    assert (
        "fib daddr type local tcp dport 18080 dnat ip to numgen random mod 2 "
        f"map {{ 0 : {A} . 80, 1 : {B} . 80 }}" in script
    )
    nft_accepts(script)


def test_no_ready_replica_means_refused_not_dnat() -> None:
    script = render(
        "s2-render-test", [BalancedService(name="s_db", vip=VIP, ports=(ServicePort(5432, 5432),))]
    )
    assert "dnat" not in script
    assert "ip daddr @vips meta l4proto tcp reject with tcp reset" in script
    assert f"elements = {{ {VIP} }}" in script
    nft_accepts(script)


def test_bad_table_name_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        render("bad name", [])
