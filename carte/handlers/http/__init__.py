"""The HTTP API on the daemon's unix socket: the quart-trio app, generic command routes,
the event stream and the OpenAPI document.
"""

from carte.handlers.http._app import log_unexpected
from carte.handlers.http._audit import (
    AuditEntry,
    RequestRecorder,
    connect_relaying,
    open_audit_log,
)
from carte.handlers.http._handler import ApiHandler, group_id, hypercorn_config
from carte.handlers.http._peer import PEER_HEADER, Headers, PeerHeaderGuard

__all__ = [
    "PEER_HEADER",
    "ApiHandler",
    "AuditEntry",
    "Headers",
    "PeerHeaderGuard",
    "RequestRecorder",
    "connect_relaying",
    "group_id",
    "hypercorn_config",
    "log_unexpected",
    "open_audit_log",
]
