"""Wire schema of the system routes: /_ping, /v1/version, /v1/info and the error body.

Shared by the daemon (which encodes them) and the client (which reads them as plain JSON).
"""

from typing import Literal

import msgspec

HandlerState = Literal["starting", "running", "skipped", "disabled", "failed"]


class Version(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/version` answers."""

    version: str
    api_version: str
    python: str
    os: str
    arch: str
    kernel: str


class CgroupMount(msgspec.Struct, frozen=True, kw_only=True):
    """One cgroup filesystem mount: v1 hierarchies carry their controllers."""

    path: str
    version: Literal[1, 2]
    controllers: list[str] = []


class CgroupLayout(msgspec.Struct, frozen=True, kw_only=True):
    """The host's cgroup layout as read from /proc/mounts.

    `mode` is "v1" (only v1 hierarchies), "v2" (unified only), "hybrid" (v1 controllers plus a
    cgroup2 mount) or "none".
    """

    mode: Literal["v1", "v2", "hybrid", "none"]
    mounts: list[CgroupMount] = []


class HandlerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One handler of the daemon and why it is not running, when it is not."""

    name: str
    state: HandlerState
    reason: str = ""
    plugin: bool = False


class Info(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/info` answers."""

    version: str
    pid: int
    kernel: str
    cgroup: CgroupLayout
    root: str
    run_root: str
    socket: str
    handlers: list[HandlerInfo] = []


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: ``{"error": {"code": ..., "message": ...}}``."""

    error: ErrorDetail
