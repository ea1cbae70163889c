"""Volumes (handler "volumes")."""

from typing import ClassVar

from carte.api.containers import PruneResult, Volume
from carte.api.events.base import Command, Fact

# --- volumes (handler "volumes") ----------------------------------------------------------


class CreateVolume(Command[Volume], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.create"
    name: str = ""
    labels: dict[str, str] = {}
    options: dict[str, str] = {}
    """Docker's local driver options: type=none with o=bind and device=DIR (a host directory),
    or type=tmpfs with o=size=...,mode=... (memory)."""


class ListVolumes(Command[list[Volume]], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.list"
    filters: dict[str, list[str]] = {}


class InspectVolume(Command[Volume], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.inspect"
    name: str


class RemoveVolume(Command[None], frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.remove"
    name: str
    force: bool = False


class PruneVolumes(Command[PruneResult], frozen=True, kw_only=True):
    """Remove the anonymous volumes no container uses (`all`: named ones too), as Docker 23+."""

    topic: ClassVar[str] = "volume.prune"
    all: bool = False


class VolumeCreated(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.created"


class VolumeRemoved(Fact, frozen=True, kw_only=True):
    topic: ClassVar[str] = "volume.removed"
