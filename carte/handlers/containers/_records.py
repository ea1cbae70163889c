"""Container records in the state store: what a container is, by id, and its unique name.

Keys: ``containers/<id>`` holds a `ContainerRecord`; ``container-names/<name>`` holds the id,
so a name is claimed atomically with the record (one transaction, "absent" expected).
References (`resolve`) are a full id, a unique id prefix, or a name, as in Docker.
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path

import msgspec

from carte.api.containers import (
    ContainerConfig,
    ContainerDetails,
    ContainerIdentity,
    ContainerState,
    ContainerSummary,
    Endpoint,
)
from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.api.timestamps import parse_rfc3339
from carte.engine import Delete, Put, Store

RECORDS = "containers/"
NAMES = "container-names/"


class ContainerRecord(ContainerIdentity, kw_only=True, forbid_unknown_fields=False):
    """Everything the daemon keeps about one container; `config` is already merged with the
    image's defaults (Cmd, Env, WorkingDir...), as `docker inspect` shows it."""

    state: ContainerState = msgspec.field(default_factory=ContainerState)
    restart_count: int = 0
    endpoints: list[Endpoint] = []
    stop_requested: bool = False
    """Set while a user or the daemon stops the container, so its exit is `requested`."""

    @property
    def short_id(self) -> str:
        return self.id[:12]


_decoder = msgspec.json.Decoder(ContainerRecord)


def new_container_id() -> str:
    return secrets.token_hex(32)


_ADJECTIVES = (
    "agile bold brave bright calm clever cosmic daring eager fancy gentle happy jolly keen "
    "lively lucid merry nimble noble proud quick quiet serene sharp shiny steady swift tender "
    "upbeat vivid wise witty zealous"
).split()
_NOUNS = (
    "atlas bohr curie darwin euler faraday fermi galois gauss hopper hypatia kepler lamarr "
    "lovelace maxwell mendel newton noether pascal planck ritchie sagan shannon tesla thompson "
    "turing volta wozniak yalow"
).split()


def random_name() -> str:
    return f"{random.choice(_ADJECTIVES)}_{random.choice(_NOUNS)}"


def check_name(name: str) -> str:
    """A user-given container name without Docker's optional leading slash.

    Raises `InvalidArgument` for names Docker refuses ([a-zA-Z0-9][a-zA-Z0-9_.-]*).
    """
    bare = name.removeprefix("/")
    allowed = bare[:1].isalnum() and all(c.isalnum() or c in "_.-" for c in bare)
    if not bare or not allowed or not bare.isascii():
        raise InvalidArgument(
            f'container name "{name}" is invalid; use letters, digits, "_", "." and "-", '
            "starting with a letter or digit"
        )
    return bare


def decode_record(entry_value: bytes) -> ContainerRecord:
    return _decoder.decode(entry_value)


class Records:
    """The container records of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def all(self) -> list[ContainerRecord]:
        """Every record, oldest first."""
        entries = await self.store.list(RECORDS)
        records = [decode_record(entry.value) for entry in entries]
        return sorted(records, key=lambda record: record.created)

    async def get(self, container_id: str) -> ContainerRecord | None:
        entry = await self.store.get(RECORDS + container_id)
        return None if entry is None else decode_record(entry.value)

    async def resolve(self, ref: str) -> ContainerRecord:
        """The record named by a full id, a unique id prefix or a name.

        Raises `NotFound` naming the reference, `Conflict` for an ambiguous id prefix.
        """
        bare = ref.removeprefix("/")
        if bare:
            by_id = await self.get(bare)
            if by_id is not None:
                return by_id
            name_entry = await self.store.get(NAMES + bare)
            if name_entry is not None:
                by_name = await self.get(name_entry.value.decode())
                if by_name is not None:
                    return by_name
            if all(c in "0123456789abcdef" for c in bare):
                matches = [r for r in await self.all() if r.id.startswith(bare)]
                if len(matches) == 1:
                    return matches[0]
                if len(matches) > 1:
                    raise Conflict(
                        f'container id prefix "{ref}" matches {len(matches)} containers; '
                        "give more digits or the name"
                    )
        raise NotFound(f'no such container: "{ref}"; see carte ps -a')

    async def add(self, record: ContainerRecord) -> None:
        """Store a new record and claim its name; `Conflict` (409) if the name is taken."""
        try:
            await self.store.txn(
                [Put(RECORDS + record.id, record), Put(NAMES + record.name, record.id.encode())],
                expect={NAMES + record.name: 0},
            )
        except Conflict:
            raise _name_taken(record.name) from None

    async def save(self, record: ContainerRecord) -> None:
        """Write a changed record (last writer wins; the handler serializes per container)."""
        await self.store.put(RECORDS + record.id, record)

    async def rename(self, record: ContainerRecord, new_name: str) -> None:
        """Move the record to `new_name`; `Conflict` if another container holds it."""
        old_name = record.name
        record.name = new_name
        try:
            await self.store.txn(
                [
                    Put(RECORDS + record.id, record),
                    Delete(NAMES + old_name),
                    Put(NAMES + new_name, record.id.encode()),
                ],
                expect={NAMES + new_name: 0},
            )
        except Conflict:
            record.name = old_name
            raise _name_taken(new_name) from None

    async def remove(self, record: ContainerRecord) -> None:
        await self.store.txn([Delete(RECORDS + record.id), Delete(NAMES + record.name)])


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f'container name "{name}" is already in use; remove that container (carte rm {name}) '
        "or choose another --name"
    )


# --- how records are shown ---------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Docker's wording: "Less than a second", "3 seconds", "About a minute", "2 hours"..."""
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{int(seconds)} seconds" if int(seconds) != 1 else "1 second"
    minutes = seconds / 60
    if minutes < 1.5:
        return "About a minute"
    if minutes < 60:
        return f"{round(minutes)} minutes"
    hours = minutes / 60
    if hours < 1.5:
        return "About an hour"
    if hours < 48:
        return f"{round(hours)} hours"
    days = hours / 24
    if days < 14:
        return f"{round(days)} days"
    if days < 60:
        return f"{round(days / 7)} weeks"
    if days < 730:
        return f"{round(days / 30)} months"
    return f"{round(days / 365)} years"


def status_text(state: ContainerState, now: float | None = None) -> str:
    """`ps`'s STATUS column: "Up 3 seconds (healthy)", "Exited (0) 2 seconds ago", "Created"."""
    now = time.time() if now is None else now
    if state.status in ("running", "paused"):
        text = "Up " + human_duration(now - parse_rfc3339(state.started_at))
        if state.status == "paused":
            text += " (Paused)"
        elif state.health is not None and state.health.status != "none":
            health = state.health.status
            text += " (health: starting)" if health == "starting" else f" ({health})"
        return text
    if state.status == "restarting":
        ago = human_duration(now - parse_rfc3339(state.finished_at))
        return f"Restarting ({state.exit_code}) {ago} ago"
    if state.status == "exited":
        ago = human_duration(now - parse_rfc3339(state.finished_at))
        return f"Exited ({state.exit_code}) {ago} ago"
    if state.status == "removing":
        return "Removal In Progress"
    if state.status == "dead":
        return "Dead"
    return "Created"


def command_text(config: ContainerConfig) -> str:
    words = [*(config.entrypoint or []), *(config.cmd or [])]
    return " ".join(words)


def summary(record: ContainerRecord) -> ContainerSummary:
    ports = [port for endpoint in record.endpoints for port in endpoint.ports]
    health = record.state.health.status if record.state.health is not None else "none"
    return ContainerSummary(
        id=record.id,
        name=record.name,
        image=record.image,
        command=command_text(record.config),
        created=record.created,
        state=record.state.status,
        status=status_text(record.state),
        ports=ports or list(record.config.ports),
        labels=dict(record.config.labels),
        health=health,
    )


def details(record: ContainerRecord, log_path: Path) -> ContainerDetails:
    return ContainerDetails(
        id=record.id,
        name=record.name,
        created=record.created,
        image=record.image,
        image_id=record.image_id,
        config=record.config,
        state=record.state,
        restart_count=record.restart_count,
        log_path=str(log_path),
        endpoints=list(record.endpoints),
    )
