"""A cluster lab on one machine: N network namespaces on a "LAN" bridge, each running its own
`carte daemon`, and a real etcd on the LAN for the control planes.

    with ClusterLab(3) as lab:
        cp = lab.start(lab.nodes[0], control=True)   # etcd store, listen on its LAN address
        lab.init(cp)             # carte cluster init (admin certificates in lab.certs)
        worker = lab.start(lab.nodes[2])
        lab.join(worker)                              # carte node join with a fresh token
        lab.carte(worker, "node", "ls", host=lab.server)   # the CLI inside that node's netns

Each node is a namespace ``<lab>-<i>`` with a veth on the bridge and address 10.X.Y.(10+i);
its daemon runs inside it (``ip netns exec``) with its own root, run root, socket and config
(so its own nftables table and bridge names, which derive from the root). Short lease TTLs
(`node_ttl`, `leader_ttl`) keep failure tests fast. `close` stops every daemon, etcd, and
deletes the namespaces and the bridge.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from support.containers import wait_until
from support.daemon import Daemon, DaemonFactory
from support.etcd import EtcdServer
from support.leftovers import remove_leftovers
from support.processes import SLOWDOWN

API_PORT = 2376


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class LanEtcd(EtcdServer):
    """etcd with its client URL on the lab's bridge address (peers stay on loopback)."""

    def __init__(self, workdir: Path, host: str) -> None:
        super().__init__(workdir)
        self.endpoint = f"http://{host}:{self.client_port}"


@dataclass
class LabNode:
    index: int
    namespace: str
    address: str
    name: str
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def daemon(self) -> Daemon:
        """The node's latest daemon."""
        return self.daemons[-1]

    @property
    def listen(self) -> str:
        return f"tcp://{self.address}:{API_PORT}"


class ClusterLab:
    def __init__(
        self,
        size: int = 3,
        *,
        handlers: tuple[str, ...] | None = ("api", "membership"),
        node_ttl: int = 3,
        leader_ttl: int = 3,
    ) -> None:
        tag = secrets.token_hex(2)
        self.name = f"clab{tag}"
        self.bridge = f"clab{tag}"
        self.prefix = f"10.{100 + secrets.randbelow(150)}.{secrets.randbelow(250)}"
        self.gateway = f"{self.prefix}.1"
        self.handlers = handlers
        self.node_ttl = node_ttl
        self.leader_ttl = leader_ttl
        self.nodes = [
            LabNode(i, f"{self.name}-{i}", f"{self.prefix}.{10 + i}", f"node{i}")
            for i in range(1, size + 1)
        ]
        self.factory = DaemonFactory()
        self.certs = Path(tempfile.mkdtemp(prefix="carte-lab-certs-", dir="/tmp"))
        self.etcd: LanEtcd | None = None
        self.server = ""
        self.token = ""

    # --- the LAN --------------------------------------------------------------------------

    def __enter__(self) -> ClusterLab:
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for node in self.nodes:
                host_end, node_end = f"{self.name}h{node.index}", f"{self.name}n{node.index}"
                ip("netns", "add", node.namespace)
                ip("link", "add", host_end, "type", "veth", "peer", "name", node_end)
                ip("link", "set", host_end, "master", self.bridge, "up")
                ip("link", "set", node_end, "netns", node.namespace)
                inside = ("-n", node.namespace)
                ip(*inside, "link", "set", "lo", "up")
                ip(*inside, "link", "set", node_end, "name", "eth0")
                ip(*inside, "addr", "add", f"{node.address}/24", "dev", "eth0")
                ip(*inside, "link", "set", "eth0", "up")
            workdir = Path(tempfile.mkdtemp(prefix="carte-lab-etcd-", dir="/tmp"))
            self.etcd = LanEtcd(workdir, self.gateway).start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.factory.cleanup()
        finally:
            if self.etcd is not None:
                self.etcd.close()
            self._remove_lan()

    def _remove_lan(self) -> None:
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", node.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        subprocess.run(["rm", "-rf", str(self.certs)], capture_output=True)

    # --- daemons --------------------------------------------------------------------------

    def config(self, node: LabNode, *, control: bool) -> str:
        lines = []
        if self.handlers is not None:
            lines.append(f"handlers: {{enabled: [{', '.join(self.handlers)}]}}")
        cluster = f"name: {node.name}, node_ttl: {self.node_ttl}, leader_ttl: {self.leader_ttl}"
        if control:
            assert self.etcd is not None
            lines.append(f'store: {{backend: etcd, endpoints: ["{self.etcd.endpoint}"]}}')
            cluster += f", listen: {node.listen}"
        lines.append(f"cluster: {{{cluster}}}")
        return "\n".join(lines) + "\n"

    def command(self, node: LabNode) -> list[str]:
        return ["ip", "netns", "exec", node.namespace, sys.executable, "-m", "carte"]

    def start(self, node: LabNode, *, control: bool = False, fresh: bool = False) -> Daemon:
        """Start a daemon in ``node``: its daemon, restarted in the same directory, or with
        ``fresh`` a spare daemon of its own beside it (not ``node.daemon``)."""
        workdir = None if fresh or not node.daemons else node.daemon.workdir
        daemon = self.factory(
            config=self.config(node, control=control),
            command=self.command(node),
            workdir=workdir,
        )
        if not fresh:
            node.daemons.append(daemon)
        return daemon

    # --- the CLI --------------------------------------------------------------------------

    def carte(
        self,
        node: LabNode,
        *args: str,
        daemon: Daemon | None = None,
        host: str = "",
        certs: Path | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the client inside ``node``'s namespace, against its daemon's socket or ``host``
        (tcp://...) with the certificates in ``certs`` (default: the lab's admin bundle)."""
        env = dict(os.environ, CARTE_CERT_PATH=str(certs or self.certs))
        target = host or f"unix://{(daemon or node.daemon).socket}"
        result = subprocess.run(
            [*self.command(node), "-H", target, *args],
            capture_output=True,
            text=True,
            timeout=60 * SLOWDOWN,
            env=env,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def init(self, node: LabNode) -> str:
        """`carte cluster init` on ``node``; returns the join token ('' for a second control
        plane) and remembers the server address."""
        result = self.carte(node, "--format", "json", "cluster", "init")
        import json

        answer: dict[str, Any] = json.loads(result.stdout)
        if not self.server:
            self.server = answer["server"]
            self.token = answer["token"]
        return str(answer["token"])

    def join(self, node: LabNode, *extra: str, daemon: Daemon | None = None) -> None:
        self.carte(
            node,
            "node",
            "join",
            "--token",
            self.token,
            "--server",
            self.server,
            *extra,
            daemon=daemon,
        )

    def wait(self, what: str, predicate: Any, timeout: float) -> Any:
        """Poll ``predicate()`` until it returns something true; AssertionError after
        ``timeout`` seconds naming ``what``."""
        return wait_until(predicate, timeout, what)

    def empty_and_stop(self) -> None:
        """Remove every container of every running daemon, stop the daemons, and remove what
        each left on the host (for a lab whose nodes ran containers)."""
        for node in self.nodes:
            for daemon in node.daemons:
                if daemon.process is not None and daemon.process.poll() is None:
                    for container in daemon.client("ps", "-aq", "--no-trunc").stdout.split():
                        daemon.client("rm", "-f", container, timeout=60)
                    daemon.stop()
                remove_leftovers(daemon)


SLEEPERS = """\
services:
  web:
    image: busybox:latest
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    deploy:
      replicas: {replicas}
{extra}"""
"""A Compose file for a `WorkloadLab`: service ``web``, ``{replicas}`` busybox replicas that
sleep; ``{extra}`` is more of ``deploy`` (indented six spaces) or "". Format both."""


class WorkloadLab(ClusterLab):
    """A lab whose nodes run containers: every handler, container networks from `pool`
    ("10.X.0.0/16:24", one the other labs and areas do not use). Daemons enter only the node's
    network namespace (nsenter): ``ip netns exec`` would remount /sys and hide the cgroup
    hierarchy the containers need."""

    def __init__(
        self, size: int = 3, *, pool: str, node_ttl: int, leader_ttl: int, extra: str = ""
    ) -> None:
        super().__init__(size, handlers=None, node_ttl=node_ttl, leader_ttl=leader_ttl)
        self.pool = pool
        self.extra = extra
        """More carte.yaml for every node (e.g. an ``overlay:`` section)."""

    def form(self) -> None:
        """Start the first node as the control plane (cluster init) and join the others."""
        control, *workers = self.nodes
        self.start(control, control=True)
        self.init(control)
        for worker in workers:
            self.start(worker)
            self.join(worker)

    @contextlib.contextmanager
    def formed(self, image_tar: Path) -> Iterator[Self]:
        """The LAN up, the lab formed (`form`) and ``image_tar`` imported as busybox:latest on
        every node; at the end every container goes, the daemons stop and the LAN goes."""
        with self:
            try:
                self.form()
                for node in self.nodes:
                    self.carte(node, "import", str(image_tar), "busybox:latest")
                yield self
            finally:
                self.empty_and_stop()

    def command(self, node: LabNode) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{node.namespace}", sys.executable, "-m", "carte"]

    def config(self, node: LabNode, *, control: bool) -> str:
        return (
            super().config(node, control=control)
            + f'network: {{pools: ["{self.pool}"], dns_upstreams: ["127.0.0.1:9"]}}\n'
            + self.extra
        )
