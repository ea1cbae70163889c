"""Run inside a VM booted with Debian's kernel (which has WireGuard): two nodes, one LAN.

Each node is a network namespace with a veth on a LAN bridge in the VM's root namespace. The
nodes get tunnels from `carte.net.wireguard` and a VXLAN whose far end is the peer's tunnel
address, as an encrypted overlay does; a known payload goes over TCP across the VXLAN while a
raw socket captures every frame node 1 puts on the LAN (on its bridge port: a socket on the
bridge device sees only what the bridge delivers to the host). The same exchange over a VXLAN
on the bare LAN (no tunnel) is captured too, as the control: the payload must show there, else
the capture proves nothing. Prints one line `CARTE_WG_VERDICT {json}`.

Usage: python wireguard_guest_check.py            (the whole check, in the VM)
       python wireguard_guest_check.py node ARGS  (one node's setup, inside its namespace)
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address, IPv4Interface

NODES = {
    "n1": ("192.168.77.1", "10.77.0.1", "10.66.0.1"),
    "n2": ("192.168.77.2", "10.77.0.2", "10.66.0.2"),
}
PAYLOAD = b"CARTE-PLAINTEXT-MARKER-7f3a9c"
ETH_P_ALL = 0x0003


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def in_node(node: str, *args: str) -> str:
    return sh("ip", "netns", "exec", node, sys.executable, __file__, "node", *args)


def node_setup(args: list[str]) -> None:
    """Inside a node: a tunnel (when asked) and a VXLAN to the peer."""
    from carte.net import wireguard

    mode, lan_ip, tunnel_ip, overlay_ip, peer_lan, peer_tunnel, keyfile, peer_pub = args
    if mode == "wg":
        keys = json.loads(open(keyfile).read())
        pair = wireguard.KeyPair(private_key=keys["private"], public_key=keys["public"])
        wireguard.ensure_tunnel(
            "cwg0", pair, wireguard.DEFAULT_PORT, IPv4Interface(f"{tunnel_ip}/24"), 1420
        )
        peer = wireguard.Peer(
            public_key=peer_pub,
            endpoint=IPv4Address(peer_lan),
            port=wireguard.DEFAULT_PORT,
            tunnel_address=IPv4Address(peer_tunnel),
        )
        wireguard.set_peers("cwg0", [peer])
        assert wireguard.current_peers("cwg0") == [peer_pub]
        local, remote, mtu = tunnel_ip, peer_tunnel, "1370"
    else:
        local, remote, mtu = lan_ip, peer_lan, "1450"
    sh(
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        local,
        "dstport",
        "4789",
        "nolearning",
    )
    sh("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", remote)
    sh("ip", "link", "set", "vx0", "mtu", mtu, "up")
    sh("ip", "addr", "add", f"{overlay_ip}/24", "dev", "vx0")


def capture(bridge: str, frames: list[bytes], stop: threading.Event) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((bridge, 0))
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            frames.append(sock.recv(65535))
        except TimeoutError:
            continue
    sock.close()


def udp_frames(frames: list[bytes], port: int) -> int:
    """How many captured IPv4/UDP frames go to or from ``port``."""
    wanted = port.to_bytes(2, "big")
    return sum(
        1
        for f in frames
        if len(f) > 37 and f[12:14] == b"\x08\x00" and f[23] == 17
        and wanted in (f[34:36], f[36:38])
    )  # fmt: skip


def exchange(mode: str) -> dict[str, object]:
    """Set both nodes up in `mode` ("wg" or "plain"), send the payload, capture the LAN."""
    subprocess.run(["ip", "link", "del", "lan0"], capture_output=True, check=False)
    for node in NODES:
        subprocess.run(["ip", "netns", "del", node], capture_output=True, check=False)
    sh("ip", "link", "add", "lan0", "type", "bridge")
    sh("ip", "link", "set", "lan0", "up")
    from carte.net import wireguard

    keys = {node: wireguard.generate_keypair() for node in NODES}
    for node, (lan_ip, _, _) in NODES.items():
        sh("ip", "netns", "add", node)
        sh("ip", "link", "add", f"l{node}", "type", "veth", "peer", "name", "eth0", "netns", node)
        sh("ip", "link", "set", f"l{node}", "master", "lan0", "up")
        sh("ip", "netns", "exec", node, "ip", "addr", "add", f"{lan_ip}/24", "dev", "eth0")
        sh("ip", "netns", "exec", node, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", node, "ip", "link", "set", "lo", "up")
        with open(f"/tmp/{node}.key", "w") as f:
            json.dump({"private": keys[node].private_key, "public": keys[node].public_key}, f)
    for node, (lan_ip, tunnel_ip, overlay_ip) in NODES.items():
        peer = "n2" if node == "n1" else "n1"
        peer_lan, peer_tunnel, _ = NODES[peer]
        in_node(
            node,
            mode,
            lan_ip,
            tunnel_ip,
            overlay_ip,
            peer_lan,
            peer_tunnel,
            f"/tmp/{node}.key",
            keys[peer].public_key,
        )

    frames: list[bytes] = []
    stop = threading.Event()
    catcher = threading.Thread(target=capture, args=("ln1", frames, stop))
    catcher.start()
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            "n2",
            sys.executable,
            "-c",
            "import socket;s=socket.create_server(('10.66.0.2',7000));c,_=s.accept();"
            "print(c.recv(1000).decode(),flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    sent = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            "n1",
            sys.executable,
            "-c",
            "import socket,sys;c=socket.create_connection(('10.66.0.2',7000),timeout=10);"
            f"c.sendall({PAYLOAD!r});c.close()",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    received = server.communicate(timeout=15)[0].strip()
    time.sleep(0.3)
    stop.set()
    catcher.join()

    return {
        "sent": sent.returncode == 0,
        "received": received == PAYLOAD.decode(),
        "frames": len(frames),
        "plaintext_on_lan": any(PAYLOAD in f for f in frames),
        "vxlan_in_clear": udp_frames(frames, 4789),
        "wireguard_frames": udp_frames(frames, 51820),
        "error": sent.stderr[-500:],
    }


def main() -> None:
    if sys.argv[1:2] == ["node"]:
        node_setup(sys.argv[2:])
        return
    from carte.net import wireguard

    support = wireguard.encryption_support()
    verdict: dict[str, object] = {"kernel": platform.release(), "support": support.__dict__}
    verdict["plain"] = exchange("plain")
    verdict["wg"] = exchange("wg")
    print("CARTE_WG_VERDICT " + json.dumps(verdict), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
