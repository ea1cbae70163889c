"""The network of a RUN step: `default` (a fresh namespace plugged into Carte's NAT'd default
bridge by the caller's `attach`), `host` (the host's namespace) or `none` (only loopback),
plus the /etc/resolv.conf and /etc/hosts the step sees.

A `default` step's namespace is made by a short-lived thread that unshares its network
namespace, raises `lo` and keeps an fd to it; the namespace lives as long as that fd (so a
crashed daemon leaves none behind) and is named by `/proc/<daemon pid>/fd/<fd>` for the
network handler and the runtime. The files are written into the step's scratch directory and
bind-mounted, so they never land in a layer.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import msgspec

from carte.net.netns import on_own_thread
from carte.runtime.syscalls import CLONE_NEWNET, unshare

NETWORK_MODES = ("default", "none", "host")
DEFAULT_RESOLVERS = ("8.8.8.8", "8.8.4.4")  # Docker's fallback when the host has only local ones
HOSTS_BASE = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


class Attached(msgspec.Struct, frozen=True, kw_only=True):
    """What the network handler gave a step's namespace: its address and name servers."""

    ip: str
    dns_servers: list[str] = []


# (step id, namespace path) -> the endpoint; raises CarteError when the network is unusable.
Attach = Callable[[str, str], Attached]
Detach = Callable[[str], None]


class StepNetwork:
    """A RUN step's network: the namespace path (`default` only) and its resolv.conf/hosts.

    Use as a context manager; leaving it detaches the endpoint and closes the namespace."""

    def __init__(
        self, mode: str, step_id: str, attach: Attach | None, detach: Detach | None
    ) -> None:
        self.mode = mode
        self.step_id = step_id
        self._attach = attach
        self._detach = detach
        self._fd: int | None = None
        self._attached = False
        self.netns_path = ""
        self.resolv_conf = ""
        self.hosts = ""

    def __enter__(self) -> StepNetwork:
        if self.mode == "host":
            self.resolv_conf = _read("/etc/resolv.conf")
            self.hosts = _read("/etc/hosts") or HOSTS_BASE
            return self
        if self.mode == "none":
            self.resolv_conf = ""
            self.hosts = HOSTS_BASE
            return self
        if self._attach is None:
            raise OSError("no network handler answers in this daemon")
        self._fd = _new_namespace()
        self.netns_path = f"/proc/{os.getpid()}/fd/{self._fd}"
        try:
            endpoint = self._attach(self.step_id, self.netns_path)
            self._attached = True
        except BaseException:
            self.close()
            raise
        servers = endpoint.dns_servers or host_resolvers(_read("/etc/resolv.conf"))
        self.resolv_conf = "".join(f"nameserver {server}\n" for server in servers)
        search = _search_line(_read("/etc/resolv.conf"))
        if search:
            self.resolv_conf += search + "\n"
        self.hosts = HOSTS_BASE + f"{endpoint.ip}\tcarte\n"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._attached and self._detach is not None:
            self._attached = False
            self._detach(self.step_id)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def host_resolvers(resolv_conf: str) -> list[str]:
    """The host's name servers as Docker gives a container outside a user network: loopback
    ones dropped (they mean nothing in another namespace); Google's when none is left."""
    servers = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            server = words[1]
            if not (server.startswith("127.") or server == "::1"):
                servers.append(server)
    return servers or list(DEFAULT_RESOLVERS)


def _search_line(resolv_conf: str) -> str:
    for line in resolv_conf.splitlines():
        if line.split()[:1] in (["search"], ["domain"]):
            return "search " + " ".join(line.split()[1:])
    return ""


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _new_namespace() -> int:
    """A fresh network namespace with `lo` up, held by the returned fd (O_CLOEXEC).

    Made on a throwaway thread: unshare(CLONE_NEWNET) moves only the calling thread."""

    def work() -> int:
        unshare(CLONE_NEWNET)
        fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                request = struct.pack("16sH", b"lo", 0)
                flags = struct.unpack("16sH", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
                up = struct.pack("16sH", b"lo", flags | _IFF_UP)
                fcntl.ioctl(probe, _SIOCSIFFLAGS, up)
        except OSError:
            os.close(fd)
            raise
        return fd

    return on_own_thread(work, name="carte-build-netns")
