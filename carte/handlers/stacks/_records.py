"""The stacks handler's desired state in the store.

`stacks/<stack>` holds a `StackRecord`; `stacks/<stack>/services/<service>` a `ServiceRecord`
with the current spec, its revision, the kept revisions and the latest rollout. Only the
stacks handler writes these keys.
"""

from __future__ import annotations

import logging

import msgspec

from carte.api.errors import Conflict
from carte.api.stacks import Rollout
from carte.engine import Entry, Store
from carte.stack.model import Service

KEPT_REVISIONS = 10


class Revision(msgspec.Struct, kw_only=True):
    revision: int
    created: str
    spec: Service
    change: str = ""


class ServiceRecord(msgspec.Struct, kw_only=True):
    stack: str
    name: str
    revision: int
    replicas: int
    spec: Service
    project_dir: str = ""
    env_files: dict[str, str] = {}
    revisions: list[Revision] = []
    rollout: Rollout | None = None
    networks: dict[str, str] = {}
    """The manifest's network names -> the daemon's (external ones and `name:` kept as is)."""
    volumes: dict[str, str] = {}
    """The manifest's volume names -> the daemon's."""
    compose_restart: bool = False
    """Whether the spec's `restart` is Compose's (set by every apply since Carte reads it)."""
    random_ports: dict[str, int] = {}
    """"PORT/PROTO" of a port listed without a host side -> the host port picked for it."""
    files: dict[str, bytes] = {}
    """"secrets/NAME" and "configs/NAME" -> content, for the service's file mounts. Never
    shown by inspect."""

    def revision_spec(self, number: int) -> Service | None:
        for kept in self.revisions:
            if kept.revision == number:
                return kept.spec
        return None


class StackRecord(msgspec.Struct, kw_only=True):
    name: str
    file_name: str
    project_dir: str = ""
    services: list[str] = []
    networks: list[str] = []
    volumes: list[str] = []
    updated: str = ""


def stack_key(stack: str) -> str:
    return f"stacks/{stack}"


def service_key(stack: str, service: str) -> str:
    return f"stacks/{stack}/services/{service}"


async def load_stacks(store: Store) -> list[StackRecord]:
    return [
        entry.decode(StackRecord)
        for entry in await store.list("stacks/")
        if entry.key.count("/") == 1
    ]


async def load_services(store: Store, stack: str = "") -> list[ServiceRecord]:
    """The readable service records (of `stack`, or all); one that cannot be decoded is
    refused with one logged line (once per key) and left out, so it never stops the rest."""
    prefix = f"stacks/{stack}/services/" if stack else "stacks/"
    records = []
    for entry in await store.list(prefix):
        if "/services/" not in entry.key:
            continue
        try:
            records.append(_decode(entry))
        except Conflict as error:
            if entry.key not in _refused:
                _refused.add(entry.key)
                _log.error("refused: %s", error.message)
    return records


async def load_service(store: Store, stack: str, service: str) -> ServiceRecord | None:
    """The service's record; `Conflict` when the stored one cannot be decoded."""
    entry = await store.get(service_key(stack, service))
    return _decode(entry) if entry is not None else None


_log = logging.getLogger("carte.handler.stacks")
_refused: set[str] = set()
"""Keys of unreadable records already logged."""


def _decode(entry: Entry) -> ServiceRecord:
    try:
        return entry.decode(ServiceRecord)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        stack = entry.key.split("/")[1]
        raise Conflict(
            f"stored record {entry.key} cannot be read ({error}); apply the stack's file again "
            f"or remove the stack (carte stack rm {stack})"
        ) from None
