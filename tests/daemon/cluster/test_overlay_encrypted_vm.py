"""Encrypted overlay networks between real nodes, checked on the wire, in a kernel that has
WireGuard.

This machine's kernel has neither WireGuard nor ESP, so the check boots Debian's stock kernel
with virtme-ng (tests/support/vm.py) and runs encrypted_overlay_guest.py there: a two-node
cluster lab (namespaces, one daemon each, a real etcd) where a network created with
``-o encrypted=true`` carries a known payload between nodes while a raw capture on node 1's
LAN port looks for it; an unencrypted network's fetch is the control (its payload must be
seen). Then ``carte network rotate-keys`` gives both nodes new keys and traffic flows again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.vm import run_in_vm

GUEST = Path(__file__).with_name("encrypted_overlay_guest.py")


@pytest.mark.slow
def test_an_encrypted_network_carries_no_plaintext_between_nodes_and_keys_rotate() -> None:
    verdict = run_in_vm(GUEST, "CARTE_ENC_VERDICT ", timeout=900, memory="2G")
    assert "error" not in verdict, verdict.get("error")
    assert verdict["support"]["wireguard"], verdict["support"]
    assert verdict["encrypted_on_node2"] is True, "the cluster's record makes it encrypted"
    assert verdict["clear_encrypted"] is False
    plain, encrypted = verdict["plain"], verdict["encrypted"]
    assert plain["received"] and plain["plaintext_on_lan"] and plain["vxlan_in_clear"] > 0, (
        f"the control fetch was not seen in clear, so the capture proves nothing: {plain}"
    )
    assert encrypted["received"], f"nothing crossed the encrypted network: {encrypted}"
    assert not encrypted["plaintext_on_lan"], f"payload seen on the LAN: {encrypted}"
    assert encrypted["vxlan_in_clear"] == 0 and encrypted["wireguard_frames"] > 0, encrypted
    assert verdict["mtu"] == "1370", "1500 minus WireGuard's 80 minus VXLAN's 50"
    rotate = verdict["rotate"]
    assert rotate["code"] == 0 and "rotated on node1, node2" in rotate["out"], rotate
    assert verdict["keys_changed"] == [True, True], "both nodes have new key pairs"
    after = verdict["after_rotation"]
    assert after["received"] and not after["plaintext_on_lan"], after
    assert verdict["tunnels_left"] == [[], []], "the tunnel goes with the last encrypted network"
