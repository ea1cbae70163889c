"""A worker's control planes: the one it uses first, the others to fail over to.

Known from the join (the ``--server`` addresses and the control planes its answer names),
kept current by every heartbeat answer (the control planes alive now) and persisted in
ROOT/cluster/joined.json, so a restarted worker still knows them all. A request that cannot
reach the one in use goes to the next; the first that answers is used from then on.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from carte.api.errors import Unavailable
from carte.handlers.cluster import _https
from carte.handlers.cluster._settings import split_address


class ControlPlanes:
    """An ordered list of control-plane addresses (``tcp://HOST:PORT``), the one in use
    first. Not shared between tasks that must agree: each follower keeps its own."""

    def __init__(self, servers: Iterable[str]) -> None:
        self._servers: list[str] = list(dict.fromkeys(server for server in servers if server))

    @property
    def current(self) -> str:
        """The address in use ('' when none is known)."""
        return self._servers[0] if self._servers else ""

    def all(self) -> list[str]:
        return list(self._servers)

    def learn(self, servers: Iterable[str]) -> bool:
        """Add the addresses not known yet after the known ones; whether any was new."""
        new = [server for server in servers if server and server not in self._servers]
        self._servers.extend(new)
        return bool(new)

    def failed(self, server: str) -> None:
        """``server`` could not be reached: if it is the one in use, the next one is."""
        if len(self._servers) > 1 and self._servers[0] == server:
            self._servers.append(self._servers.pop(0))

    async def call(self, context: ssl.SSLContext, method: str, path: str, body: Any = None) -> Any:
        """`_https.call` on the control plane in use, else on each of the others in turn.

        Raises the last Unavailable when none can be reached (each gets
        `_https.CONNECT` seconds to accept); a refusal or an error answer is raised as it
        comes (another control plane would answer the same). On cancellation the order
        stays as it was.
        """
        error = Unavailable("this node knows no control plane; join it again")
        for server in self.all():
            host, port = split_address(server)
            try:
                return await _https.call(host, port, context, method, path, body)
            except Unavailable as unreachable:
                error = unreachable
            self.failed(server)
        raise error
