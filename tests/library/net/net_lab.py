"""A per-test network lab: namespaces, bridges, veths and an nft table, all uniquely named.

Everything a test makes is recorded and removed by `close` (the `lab` fixture's
finalizer), also when the test fails. Names: netns ``carte-t-<uid><tag>``, links
``ct<kind><uid><tag>``, table ``carte-t-<uid>``; <uid> is 8 hex digits per test so
concurrent runs never collide.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from carte.net import nft
from carte.net.ipam import AddressAllocator, default_gateway
from carte.net.links import Endpoint, LinkControl

SERVER = r"""
import socket, sys
port, proto, banner = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(f"{banner} {peer[0]}".encode(), peer)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{banner} {peer[0]}".encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
host, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if proto == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(b"hi", (host, port))
    print(s.recv(100).decode())
else:
    s = socket.create_connection((host, port), timeout=timeout)
    print(s.recv(100).decode())
"""


@dataclass
class Container:
    """A network namespace plugged into a bridge, standing in for a container."""

    netns: str
    address: IPv4Address


@dataclass
class Bridge:
    name: str
    subnet: IPv4Network
    gateway: IPv4Address
    allocator: AddressAllocator


class NetLab:
    """Creates uniquely named network objects and removes exactly those afterwards."""

    def __init__(self) -> None:
        self.uid = secrets.token_hex(4)
        self.table = f"carte-t-{self.uid}"
        self.links = LinkControl()
        self.mtu = self.links.uplink_mtu()
        self._netns: list[str] = []
        self._links: list[str] = []
        self._servers: list[subprocess.Popen[str]] = []
        self._veth_count = 0

    # -- making things ----------------------------------------------------------------------

    def free_subnet(self) -> IPv4Network:
        """A random 10.x.y.0/24 that overlaps nothing on the host right now."""
        taken = self.links.host_networks()
        while True:
            candidate = IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
            if not any(candidate.overlaps(net) for net in taken):
                return candidate

    def netns(self, tag: str) -> str:
        name = f"carte-t-{self.uid}{tag}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self._netns.append(name)
        return name

    def link_name(self, kind: str, tag: str) -> str:
        return f"ct{kind}{self.uid}{tag}"

    def bridge(self, tag: str) -> Bridge:
        name = self.link_name("b", tag)
        subnet = self.free_subnet()
        gateway = default_gateway(subnet)
        self._links.append(name)
        self.links.ensure_bridge(name, IPv4Interface(f"{gateway}/{subnet.prefixlen}"), self.mtu)
        return Bridge(name, subnet, gateway, AddressAllocator(subnet, gateway))

    def container(self, bridge: Bridge, tag: str) -> Container:
        netns = self.netns(tag)
        address = bridge.allocator.allocate()
        self._veth_count += 1
        host_ifname = self.link_name("v", f"{self._veth_count}")
        self._links.append(host_ifname)
        self.connect(netns, bridge, host_ifname, address)
        return Container(netns, address)

    def connect(
        self,
        netns: str | int,
        bridge: Bridge,
        host_ifname: str,
        address: IPv4Address,
        gateway: IPv4Address | None = None,
    ) -> Endpoint:
        """`links.connect` of `netns` (name or pid) to `bridge` at `address` on its subnet, with
        the bridge as its gateway unless `gateway` is given, at this lab's MTU."""
        return self.links.connect(
            netns,
            bridge=bridge.name,
            host_ifname=host_ifname,
            address=IPv4Interface(f"{address}/{bridge.subnet.prefixlen}"),
            gateway=gateway or bridge.gateway,
            mtu=self.mtu,
        )

    def outside(self) -> tuple[str, IPv4Address, IPv4Address]:
        """A namespace standing in for the internet: (netns, its address, the host's address).

        Joined to the host by a plain veth pair (no Carte bridge) with no route back to any
        container subnet, so only masqueraded traffic gets answers.
        """
        netns = self.netns("out")
        subnet = self.free_subnet()
        host_side, far_side = subnet.network_address + 1, subnet.network_address + 2
        name = self.link_name("o", "")
        self._links.append(name)
        run = ["ip", "-n", netns]
        for command in (
            ["ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", netns],
            ["ip", "addr", "add", f"{host_side}/24", "dev", name],
            ["ip", "link", "set", name, "up"],
            [*run, "addr", "add", f"{far_side}/24", "dev", "eth0"],
            [*run, "link", "set", "eth0", "up"],
            [*run, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True)
        return netns, far_side, host_side

    # -- traffic ----------------------------------------------------------------------------

    def serve(self, netns: str | None, port: int, banner: str, proto: str = "tcp") -> None:
        """Start a server answering "<banner> <peer address>" and wait until it listens."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        server = subprocess.Popen(
            [*prefix, sys.executable, "-c", SERVER, str(port), proto, banner],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._servers.append(server)
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", "test server did not start"

    def fetch(
        self, netns: str | None, host: IPv4Address | str, port: int, proto: str = "tcp"
    ) -> str | None:
        """What a client in `netns` (None: the host) receives, or None if it gets nothing."""
        prefix = ["ip", "netns", "exec", netns] if netns else []
        done = subprocess.run(
            [*prefix, sys.executable, "-c", CLIENT, str(host), str(port), proto, "0.7"],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    # -- cleanup ----------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """Names of this lab's links, namespaces and table that still exist."""
        found = [name for name in self._links if self.links.index_of(name) is not None]
        existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        found += [ns for ns in self._netns if ns in existing.split()]
        if nft.list_table(self.table) is not None:
            found.append(f"table ip {self.table}")
        return found

    def close(self) -> None:
        for server in self._servers:
            server.kill()
            server.wait()
            if server.stdout is not None:
                server.stdout.close()
        nft.delete(self.table)
        for name in reversed(self._links):
            self.links.delete_link(name)
        for name in self._netns:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        remaining = self.leftovers()
        self.links.close()
        assert not remaining, f"left behind: {remaining}"
