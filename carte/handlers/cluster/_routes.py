"""The control plane's cluster routes (TCP, see carte/handlers/http/_tls.py for who may call).

``GET /v1/cluster/ca`` and ``POST /v1/cluster/join`` are open to clients without a
certificate (the joining node pins the CA by its token's hash; the token proves the node);
``POST /v1/cluster/heartbeat`` and ``/v1/cluster/leave`` need the node's own certificate
(``x-carte-peer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from quart import Response, request

from carte.api.cluster import Heartbeat, HeartbeatReply, JoinRequest, Leave
from carte.api.errors import InvalidArgument
from carte.cluster.pki import Refused
from carte.engine.handler import Route

if TYPE_CHECKING:
    from carte.handlers.cluster._membership import MembershipHandler

_encoder = msgspec.json.Encoder()


def _reply(value: Any) -> Response:
    return Response(_encoder.encode(value), content_type="application/json")


async def _body(kind: type[Any]) -> Any:
    data: bytes = await request.get_data(as_text=False)  # type: ignore[assignment]
    try:
        return msgspec.json.decode(data or b"{}", type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidArgument(f"body of {request.path}: {error}") from None


async def serve_ca(handler: MembershipHandler) -> Response:
    """The cluster CA certificate (a joining node checks it against its token)."""
    ca = await handler.control().ca()
    return _reply({"ca": ca.cert_pem.decode()})


async def serve_join(handler: MembershipHandler) -> Response:
    """Join a node: the token proves it, its CSR is signed (its key never leaves it)."""
    joining: JoinRequest = await _body(JoinRequest)
    return _reply(await handler.admit(joining))


async def serve_heartbeat(handler: MembershipHandler) -> Response:
    """Keep a node alive for another lease TTL."""
    beat: Heartbeat = await _body(Heartbeat)
    peer = request.headers.get("x-carte-peer", "")
    if peer != f"node/{beat.name}" and not peer.startswith("control-plane/"):
        raise Refused(
            f'a heartbeat for node "{beat.name}" needs that node\'s certificate'
            f"{f' (this is {peer})' if peer else ''}"
        )
    control = handler.control()
    ttl = await control.heartbeat(beat.name, beat.capacity, beat.addresses, beat.load)
    return _reply(HeartbeatReply(ttl=ttl, servers=await control.servers()))


async def serve_leave(handler: MembershipHandler) -> Response:
    """A node leaves: drained first (its replicas moved), then removed and revoked."""
    leaving: Leave = await _body(Leave)
    peer = request.headers.get("x-carte-peer", "")
    if peer != f"node/{leaving.name}":
        raise Refused(f'node "{leaving.name}" may leave only with its own certificate')
    moved = await handler.release(leaving.name, leaving.drain_timeout)
    return _reply({"drained": moved})


CLUSTER_ROUTES = (
    Route("GET", "/v1/cluster/ca", serve_ca),
    Route("POST", "/v1/cluster/join", serve_join),
    Route("POST", "/v1/cluster/heartbeat", serve_heartbeat),
    Route("POST", "/v1/cluster/leave", serve_leave),
)
