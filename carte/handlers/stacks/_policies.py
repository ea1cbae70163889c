"""`x-carte.policies` of a stack's services as network policies on the stack's default
network: "traffic from services X to this service on these ports". The first policy makes the
network default-deny (the network handler's rule). Policies are matched by the replicas'
`com.carte.service` label, so they follow replicas as they come and go."""

from __future__ import annotations

from carte.api.events import AddNetworkPolicy, ListNetworkPolicies, RemoveNetworkPolicy
from carte.api.networks import NetworkPolicy
from carte.api.stacks import SERVICE_LABEL
from carte.engine import Bus
from carte.stack.model import Manifest


def wanted_policies(manifest: Manifest) -> list[NetworkPolicy]:
    out: list[NetworkPolicy] = []
    for name, service in manifest.services.items():
        for policy in service.x_carte.policies:
            ports: list[tuple[int, str]] = []
            for port in policy.ports or [0]:
                text, _, proto = str(port).partition("/")
                ports.append((int(text), proto or "tcp"))
            for source in policy.from_:
                for number, proto in ports:
                    out.append(
                        NetworkPolicy(
                            from_label=f"{SERVICE_LABEL}={source}",
                            to_label=f"{SERVICE_LABEL}={name}",
                            port=number,
                            protocol="udp" if proto == "udp" else "tcp",
                        )
                    )
    return out


def _key(policy: NetworkPolicy) -> tuple[str, str, int, str]:
    return (policy.from_label, policy.to_label, policy.port, policy.protocol)


async def sync_policies(bus: Bus, network: str, manifest: Manifest) -> None:
    """Make `network`'s policies exactly the manifest's: add missing ones, remove others.
    A `CarteError` from the network handler propagates (the apply reports it)."""
    existing = await bus.request(ListNetworkPolicies(network=network))
    wanted = {_key(p): p for p in wanted_policies(manifest)}
    have = {_key(p): p for p in existing}
    for key, policy in wanted.items():
        if key not in have:
            await bus.request(AddNetworkPolicy(network=network, policy=policy))
    for key, policy in have.items():
        if key not in wanted:
            await bus.request(RemoveNetworkPolicy(network=network, id=policy.id))
