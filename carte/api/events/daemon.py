"""Facts about the daemon and its handlers, and the engine's own commands."""

from typing import ClassVar

from carte.api.events.base import Command, Fact

# --- engine facts -------------------------------------------------------------------------


class DaemonStarting(Fact, frozen=True, kw_only=True):
    """The daemon is about to start `handlers`, in this order (published by the daemon)."""

    topic: ClassVar[str] = "daemon.starting"
    pid: int
    handlers: list[str] = []


class DaemonStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.started"
    pid: int
    version: str


class DaemonStopping(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.stopping"
    reason: str


class ConfigReloaded(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "daemon.config_reloaded"
    applied: list[str] = []
    not_reloadable: list[str] = []


class HandlerStarted(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.started"


class HandlerSkipped(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.skipped"
    reason: str


class HandlerDisabled(Fact, frozen=True, kw_only=True):
    """A handler is installed but not run: carte.yaml disables it (published by the daemon)."""

    topic: ClassVar[str] = "handler.disabled"
    reason: str


class HandlerCrashed(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "handler.crashed"
    error: str
    restart_in: float


# --- engine commands ----------------------------------------------------------------------


class Ping(Command[str], frozen=True, kw_only=True):
    """Round trip through the bus; the engine answers "pong"."""

    topic: ClassVar[str] = "engine.ping"
