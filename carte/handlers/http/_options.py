"""The http handler's options: ``handlers.options.api`` in carte.yaml, e.g.
``handlers: {options: {api: {max_command_body: 1048576, response_timeout: 60}}}``.
Sizes are bytes, times seconds; see `ApiOptions` for each key and its default.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from carte.engine.config import HandlerOptions

MiB = 1 << 20
GiB = 1 << 30


class ApiOptions(HandlerOptions, frozen=True, kw_only=True):
    max_command_body: Annotated[int, msgspec.Meta(ge=1024)] = 1 * MiB
    """Largest body a route that is not an upload accepts; larger ones get 413 at once."""
    max_upload_body: Annotated[int, msgspec.Meta(ge=1024)] = 16 * GiB
    """Largest upload (image archive, build context, cp tar); it is streamed to disk."""
    response_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """Seconds to send an answer that is not a stream; streams live until the client leaves."""
    backlog: Annotated[int, msgspec.Meta(ge=1)] = 4096
    """Connections the kernel queues before the daemon accepts them (net.core.somaxconn caps)."""
    audit_log: str = ""
    """The audit log of state-changing API calls (JSON lines, root-only); empty:
    ROOT/audit/audit.log (``--audit-log PATH``)."""
    audit_max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 10 * MiB
    """Size past which the audit log is rotated (audit.log.1 is the newest old file)."""
    audit_keep: Annotated[int, msgspec.Meta(ge=1)] = 5
    """Rotated audit files kept; the oldest beyond this is deleted."""
