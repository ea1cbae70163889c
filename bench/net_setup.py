"""Cost of plugging a network namespace into a Carte bridge (veth + address + route + up).

    .venv/bin/python bench/net_setup.py [--runs 50]
    chrt -f 10 .venv/bin/python bench/net_setup.py   # on a busy machine: no CPU starvation

Creates a private bridge and 2 x RUNS namespaces (names carry a random id), then times,
interleaved, `LinkControl.connect` (one reused netlink socket) and the same work done with
ip(8) commands (what a shell script or CNI-style plugin pays), and `delete_link` afterwards.
Prints median / p90 / max in milliseconds (target: <= 30 ms added per container start) and
the load average, since other work on the machine moves these numbers a lot; the CPU time
(user+sys, netlink work runs in the sender's context) is what the connect itself costs.
Everything it made is removed, also on failure.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import time
from ipaddress import IPv4Interface, IPv4Network

from carte.net.ipam import AddressAllocator, default_gateway
from carte.net.links import LinkControl

TARGET_MS = 30.0


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:<28} median {statistics.median(ordered):6.2f} ms   p90 {p90:6.2f} ms   "
        f"max {ordered[-1]:6.2f} ms   (n={len(ordered)})"
    )


def _connect_with_ip(
    ns: str, bridge: str, veth: str, address: IPv4Interface, gateway: str, mtu: int
) -> None:
    for command in (
        f"ip link add {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {ns}",
        f"ip -n {ns} addr add {address} dev eth0",
        f"ip -n {ns} link set lo up",
        f"ip -n {ns} link set eth0 up",
        f"ip -n {ns} route add default via {gateway}",
        f"ip link set {veth} master {bridge} up",
    ):
        subprocess.run(command.split(), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    uid = secrets.token_hex(3)
    bridge = f"cbb{uid}"
    namespaces = [f"carte-bench-{uid}-{n}" for n in range(args.runs)]
    ip_namespaces = [f"carte-bench-{uid}-ip{n}" for n in range(args.runs)]
    veths = [f"cbv{uid}{n}" for n in range(args.runs)]
    ip_veths = [f"cbi{uid}{n}" for n in range(args.runs)]

    started = time.perf_counter()
    links = LinkControl()
    open_ms = (time.perf_counter() - started) * 1000
    made: list[str] = []
    try:
        taken = links.host_networks()
        subnet = next(
            net
            for net in IPv4Network("10.240.0.0/12").subnets(new_prefix=24)
            if not any(net.overlaps(t) for t in taken)
        )
        gateway = default_gateway(subnet)
        allocator = AddressAllocator(subnet, gateway)
        mtu = links.uplink_mtu()
        links.ensure_bridge(bridge, IPv4Interface(f"{gateway}/24"), mtu)
        for ns in namespaces + ip_namespaces:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)

        connect_ms, connect_cpu_ms, ip_ms = [], [], []
        for n in range(args.runs):
            address = IPv4Interface(f"{allocator.allocate()}/24")
            started, cpu_started = time.perf_counter(), time.process_time()
            links.connect(
                namespaces[n],
                bridge=bridge,
                host_ifname=veths[n],
                address=address,
                gateway=gateway,
                mtu=mtu,
            )
            connect_ms.append((time.perf_counter() - started) * 1000)
            connect_cpu_ms.append((time.process_time() - cpu_started) * 1000)
            address = IPv4Interface(f"{allocator.allocate()}/24")
            started = time.perf_counter()
            _connect_with_ip(ip_namespaces[n], bridge, ip_veths[n], address, str(gateway), mtu)
            ip_ms.append((time.perf_counter() - started) * 1000)

        delete_ms = []
        for veth in veths:
            started = time.perf_counter()
            links.delete_link(veth)
            delete_ms.append((time.perf_counter() - started) * 1000)
    finally:
        for veth in veths + ip_veths:
            links.delete_link(veth)
        links.delete_link(bridge)
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        links.close()

    print(f"{'open netlink socket (once)':<28} {open_ms:6.2f} ms")
    print(_summary("connect netns to bridge", connect_ms))
    print(_summary("  CPU time of that (user+sys)", connect_cpu_ms))
    print(_summary("same with ip(8) commands", ip_ms))
    print(_summary("delete veth pair", delete_ms))
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    verdict = "meets" if statistics.median(connect_ms) <= TARGET_MS else "MISSES"
    print(f"connect {verdict} the {TARGET_MS:.0f} ms target (first call: {connect_ms[0]:.2f} ms)")


if __name__ == "__main__":
    main()
