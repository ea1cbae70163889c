"""TCP throughput between two namespaces: across a Carte bridge versus a bare veth pair.

    .venv/bin/python bench/net_throughput.py [--seconds 4] [--rounds 3]

Three set-ups, measured interleaved in one run with iperf3 (apt-get install iperf3):
  veth   two namespaces joined directly by one veth pair (the floor),
  bridge two namespaces plugged into a bridge with `LinkControl.connect`,
  rules  the same bridge with Carte's nftables table applied and a network policy allowing the
         flow (bridged traffic then passes netfilter and conntrack via br_netfilter).
Prints the median Gbit/s of each and the ratios to `veth` (target: bridge >= 0.9x).
All namespaces, links and the table carry a random id and are removed, also on failure.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import iperf_gbits  # noqa: E402
from carte.net import nft  # noqa: E402
from carte.net.ipam import AddressAllocator, default_gateway  # noqa: E402
from carte.net.links import LinkControl  # noqa: E402
from carte.net.rules import NetworkRules, PolicyRule, Ruleset  # noqa: E402
from carte.net.sysctl import enable_bridge_netfilter  # noqa: E402


def _run(command: str) -> None:
    subprocess.run(command.split(), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        raise SystemExit("iperf3 is not installed; apt-get install iperf3")
    uid = secrets.token_hex(3)
    ns = {name: f"carte-bench-{uid}-{name}" for name in ("v1", "v2", "b1", "b2")}
    bridge, pair = f"cbb{uid}", f"cbp{uid}"
    table = f"carte-bench-{uid}"
    links = LinkControl()
    made: list[str] = []
    try:
        for name in ns.values():
            _run(f"ip netns add {name}")
            made.append(name)
        taken = links.host_networks()
        free = (
            net
            for net in IPv4Network("10.240.0.0/12").subnets(new_prefix=24)
            if not any(net.overlaps(t) for t in taken)
        )
        subnet, veth_subnet = next(free), next(free)
        mtu = links.uplink_mtu()
        gateway = default_gateway(subnet)
        allocator = AddressAllocator(subnet, gateway)
        links.ensure_bridge(bridge, IPv4Interface(f"{gateway}/24"), mtu)
        ends = {}
        for n, name in ((1, "b1"), (2, "b2")):
            ends[name] = allocator.allocate()
            links.connect(
                ns[name],
                bridge=bridge,
                host_ifname=f"cbv{uid}{n}",
                address=IPv4Interface(f"{ends[name]}/24"),
                gateway=gateway,
                mtu=mtu,
            )
        v1, v2 = veth_subnet.network_address + 1, veth_subnet.network_address + 2
        _run(f"ip link add {pair} mtu {mtu} type veth peer name eth1 mtu {mtu} netns {ns['v2']}")
        _run(f"ip link set {pair} netns {ns['v1']} name eth1")
        for name, address in (("v1", v1), ("v2", v2)):
            _run(f"ip -n {ns[name]} addr add {address}/24 dev eth1")
            _run(f"ip -n {ns[name]} link set eth1 up")
            _run(f"ip -n {ns[name]} link set lo up")

        allow = PolicyRule(sources=frozenset({ends["b2"]}), destinations=frozenset({ends["b1"]}))
        rules = Ruleset(
            table=table,
            networks=(NetworkRules(bridge=bridge, subnet=subnet, policies=(allow,)),),
        )
        results: dict[str, list[float]] = {"veth": [], "bridge": [], "rules": []}
        enable_bridge_netfilter()
        order = list(results)
        for round_number in range(args.rounds):
            # Rotate the order each round so drifting machine load hits every set-up alike.
            shift = round_number % len(order)
            for setup in order[shift:] + order[:shift]:
                if setup == "veth":
                    gbits = iperf_gbits(ns["v1"], ns["v2"], str(v1), args.seconds)
                else:
                    if setup == "rules":
                        nft.apply(rules)
                    gbits = iperf_gbits(ns["b1"], ns["b2"], str(ends["b1"]), args.seconds)
                    nft.delete(table)
                results[setup].append(gbits)
    finally:
        nft.delete(table)
        for n in (1, 2):
            links.delete_link(f"cbv{uid}{n}")
        links.delete_link(bridge)
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False)
        links.close()

    floor = statistics.median(results["veth"])
    for name, samples in results.items():
        median = statistics.median(samples)
        print(
            f"{name:<7} median {median:7.2f} Gbit/s   {median / floor:5.2f}x veth   "
            f"samples {', '.join(f'{s:.2f}' for s in samples)}"
        )
    print(f"MTU {mtu}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
