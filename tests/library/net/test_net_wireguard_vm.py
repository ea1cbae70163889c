"""Encrypted overlay traffic, checked on the wire, in a kernel that has WireGuard.

This machine's kernel has neither WireGuard nor ESP, so the check boots Debian's stock kernel
with virtme-ng (tests/support/vm.py) and runs wireguard_guest_check.py there: two network
namespaces on a LAN bridge get tunnels from `carte.net.wireguard` and a VXLAN to each other's
tunnel address, as an encrypted overlay does, and a raw capture on node 1's LAN port looks for a
known payload sent over TCP through the VXLAN. The same exchange on a VXLAN over the bare LAN is
the control: there the payload must be seen, or the capture proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.vm import run_in_vm

from carte.api.errors import InvalidArgument
from carte.net import wireguard

GUEST_CHECK = Path(__file__).with_name("wireguard_guest_check.py")


def test_keys_are_wireguard_keys_and_bad_ones_are_named() -> None:
    pair = wireguard.generate_keypair()
    assert wireguard.check_key(pair.private_key, "private key") == pair.private_key
    assert pair.public_key != pair.private_key
    with pytest.raises(InvalidArgument, match=r"peer key 'bm90LWEta2V5'.*base64 of 32"):
        wireguard.check_key("bm90LWEta2V5", "peer key")


def test_this_kernel_says_why_it_cannot_encrypt() -> None:
    support = wireguard.encryption_support()
    if support.wireguard:
        pytest.skip("this kernel has WireGuard; the refusal is for kernels without it")
    assert "wireguard" in support.wireguard_detail


@pytest.mark.slow
def test_encrypted_overlay_shows_no_plaintext_on_the_lan() -> None:
    verdict = run_in_vm(GUEST_CHECK, "CARTE_WG_VERDICT ")
    assert verdict["support"]["wireguard"], verdict["support"]
    plain, encrypted = verdict["plain"], verdict["wg"]
    assert plain["received"] and plain["plaintext_on_lan"] and plain["vxlan_in_clear"] > 0, (
        f"the control exchange was not seen in clear, so the capture proves nothing: {plain}"
    )
    assert encrypted["received"], f"nothing crossed the encrypted overlay: {encrypted}"
    assert not encrypted["plaintext_on_lan"], f"payload seen on the LAN: {encrypted}"
    assert encrypted["vxlan_in_clear"] == 0 and encrypted["wireguard_frames"] > 0, encrypted
