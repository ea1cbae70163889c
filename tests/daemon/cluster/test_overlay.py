"""Overlay networks across real nodes: a lab of 3 network-namespace nodes (a control plane
with a real etcd, two workers), every handler running, busybox imported on each node. A
network created on the control plane and on the workers is one VXLAN overlay (one VNI, one
subnet, a slice of it per node): containers on different nodes talk over it, a container
on another network is not reached, a policy added on the control plane holds on every node
(its label selectors pick containers of every node), a removed node's entries go from every
node, and bad input (a subnet too small for the nodes, no VNI left, encryption on a kernel
without WireGuard) is refused in one line.

One lab for the module; tests run in file order (the last one removes node3).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import LabNode, WorkloadLab

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.peers]

VNIS = "5000-5003"
SERVE = (
    "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"
)


@pytest.fixture(scope="module")
def lab(busybox_tar: Path) -> Iterator[WorkloadLab]:
    extra = f'overlay: {{vnis: "{VNIS}"}}\n'
    lab = WorkloadLab(3, pool="10.71.0.0/16:24", node_ttl=5, leader_ttl=5, extra=extra)
    with lab.formed(busybox_tar):
        yield lab


def inspect(lab: WorkloadLab, node: LabNode, network: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(lab.carte(node, "network", "inspect", network).stdout)
    return found[0] if isinstance(found, list) else found


def serve(lab: WorkloadLab, node: LabNode, name: str, network: str) -> str:
    """A detached httpd on ``network`` at ``node``; its overlay address."""
    lab.carte(node, "run", "-d", "--name", name, "--hostname", name, "--network", network,
              "busybox:latest", "sh", "-c", SERVE)  # fmt: skip
    members = inspect(lab, node, network)["containers"]
    return str(next(m["ip_address"] for m in members if m["name"] == name))


def fetch(
    lab: WorkloadLab, node: LabNode, network: str, address: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """GET / from ``address`` in a fresh container on ``network`` at ``node`` (busybox nc:
    its wget crashes in this rootfs)."""
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 80"
    result = lab.carte(node, "run", "--rm", "--network", network, *options, "busybox:latest",
                       "sh", "-c", get, check=False)  # fmt: skip
    if "served-by-" not in result.stdout:
        result.returncode = result.returncode or 1
    return result


def fdb(node: LabNode) -> str:
    """Every VXLAN FDB entry in the node's namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", node.namespace, "bridge", "fdb", "show"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_containers_on_two_nodes_talk_over_the_overlay(lab: WorkloadLab) -> None:
    node1, node2, node3 = lab.nodes
    for node in lab.nodes:
        lab.carte(node, "network", "create", "front")
    seen = [inspect(lab, node, "front") for node in lab.nodes]
    assert len({n["subnet"] for n in seen}) == 1, "one subnet for the whole cluster"
    assert {n["driver"] for n in seen} == {"overlay"}
    listed = lab.carte(node1, "network", "ls", "-f", "driver=overlay", "--format",
                       "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split("\n")  # fmt: skip
    assert "front overlay swarm" in listed, listed
    assert "front" not in lab.carte(node1, "network", "ls", "-f", "driver=bridge").stdout
    web = serve(lab, node2, "web2", "front")
    web3 = serve(lab, node3, "web3", "front")
    assert web != web3, "each node hands out addresses from its own slice"

    def answered() -> str:
        result = fetch(lab, node1, "front", web)
        return result.stdout if result.returncode == 0 else ""

    assert "served-by-web2" in lab.wait("node1 reaches web2 on node2", answered, 20)
    assert "served-by-web3" in fetch(lab, node2, "front", web3).stdout
    mtu = lab.carte(node1, "run", "--rm", "--network", "front", "busybox:latest",
                    "cat", "/sys/class/net/eth0/mtu").stdout  # fmt: skip
    assert mtu.strip() == "1450", "underlay MTU 1500 minus VXLAN's 50"
    entries = fdb(node1)
    assert f"dst {node2.address}" in entries and f"dst {node3.address}" in entries
    assert "00:00:00:00:00:00" not in entries, "no flooding entry: no broadcast leaves a node"


def test_a_container_on_another_network_is_not_reached(lab: WorkloadLab) -> None:
    node1, _, node3 = lab.nodes
    lab.carte(node1, "network", "create", "back")
    lab.carte(node3, "network", "create", "back")
    other = serve(lab, node3, "other3", "back")
    lab.wait(
        "back reachable on its own network",
        lambda: fetch(lab, node1, "back", other).returncode == 0,
        20,
    )
    assert fetch(lab, node1, "front", other).returncode != 0, "front must not reach back"


def test_bad_input_is_refused_in_one_line(lab: WorkloadLab) -> None:
    node1, node2, _ = lab.nodes
    lab.carte(node1, "network", "create", "--subnet", "10.72.0.0/30", "tiny")
    refused = lab.carte(node2, "network", "create", "tiny", check=False)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "10.72.0.0/30 has room for 1 node slice(s) of /30" in refused.stderr
    assert "tiny" not in lab.carte(node2, "network", "ls").stdout, "nothing half-created"
    # front, back and tiny hold 3 of the 4 VNIs
    lab.carte(node1, "network", "create", "fourth")
    refused = lab.carte(node1, "network", "create", "fifth", check=False)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"no free VNI in overlay.vnis {VNIS}" in refused.stderr
    lab.carte(node1, "network", "rm", "fourth")
    lab.carte(node1, "network", "create", "fifth")  # the VNI came back
    lab.carte(node1, "network", "rm", "fifth", "tiny")


def test_a_vni_stays_taken_while_any_node_has_the_network(lab: WorkloadLab) -> None:
    node1, node2, _ = lab.nodes
    for node in (node1, node2):
        lab.carte(node, "network", "create", "held")
    lab.carte(node1, "network", "rm", "held")  # node2 still sends over its VNI
    lab.carte(node1, "network", "create", "third")  # front, back, held, third: all 4 VNIs
    refused = lab.carte(node1, "network", "create", "fourth", check=False)
    assert f"no free VNI in overlay.vnis {VNIS}" in refused.stderr
    lab.carte(node2, "network", "rm", "held")  # the last node gives it back
    lab.carte(node1, "network", "create", "fourth")
    lab.carte(node1, "network", "rm", "third", "fourth")


def test_an_encrypted_network_is_refused_on_a_kernel_without_wireguard(
    lab: WorkloadLab, tmp_path: Path
) -> None:
    """This machine's kernel has no wireguard module (the VM test of carte/net/wireguard.py
    covers a kernel that has): an encrypted network is refused, never made in clear."""
    node1 = lab.nodes[0]
    for option in ("encrypted=true", "encrypted"):
        refused = lab.carte(node1, "network", "create", "-o", option, "secret", check=False)
        assert refused.returncode != 0
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert 'network "secret" asks for encryption' in refused.stderr
        assert "wireguard module" in refused.stderr
    rotated = lab.carte(node1, "network", "rotate-keys", "--timeout", "5")
    assert "no node has a WireGuard key" in rotated.stdout, rotated.stdout
    refused = lab.carte(node1, "network", "create", "--opt", "mtu=9000", "secret", check=False)
    assert 'option "mtu" is unknown' in refused.stderr
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  web:\n    image: busybox:latest\n    networks: [secret]\n"
        'networks:\n  secret:\n    driver_opts: {encrypted: "true"}\n'
    )
    refused = lab.carte(node1, "apply", "-f", str(compose), "-n", "enc", check=False)
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert 'network "enc_secret" asks for encryption' in refused.stderr
    assert "secret" not in lab.carte(node1, "network", "ls").stdout, "never made in clear"
    # enc_default, made before the apply reached enc_secret, went with the refusal
    assert "enc_" not in lab.carte(node1, "network", "ls").stdout
    assert "enc" not in lab.carte(node1, "stack", "ls").stdout.split()


def test_a_policy_of_the_control_plane_holds_on_every_node(lab: WorkloadLab) -> None:
    node1, node2, _ = lab.nodes
    for node in (node1, node2):
        lab.carte(node, "network", "create", "pol")
    web = serve(lab, node2, "polweb", "pol")
    lab.carte(node1, "network", "policy", "add", "pol",
              "--from", "app=client", "--to", "name=polweb", "--port", "80/tcp")  # fmt: skip
    client = ("--label", "app=client")
    lab.wait(
        "the labelled client on node1 reaches polweb on node2",
        lambda: fetch(lab, node1, "pol", web, *client).returncode == 0,
        20,
    )
    assert fetch(lab, node1, "pol", web).returncode != 0, "default-deny on node1"
    assert fetch(lab, node2, "pol", web).returncode != 0, "the policy holds on node2 too"
    assert fetch(lab, node2, "pol", web, *client).returncode == 0
    lab.carte(node2, "rm", "-f", "polweb")
    for node in (node1, node2):
        lab.carte(node, "network", "rm", "pol")


def test_a_removed_node_loses_its_entries_everywhere(lab: WorkloadLab) -> None:
    node1, node2, node3 = lab.nodes
    assert f"dst {node3.address}" in fdb(node2)
    node3.daemon.stop()
    lab.carte(node1, "node", "rm", "--force", "node3")
    for node in (node1, node2):
        lab.wait(
            f"{node.name} forgets node3's containers",
            lambda node=node: f"dst {node3.address}" not in fdb(node),  # type: ignore[misc]
            10,
        )
    web = inspect(lab, node2, "front")["containers"][0]["ip_address"]
    assert fetch(lab, node1, "front", web).returncode == 0, "node2 still reached"
