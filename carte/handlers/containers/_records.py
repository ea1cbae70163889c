"""Container records in the state store: what a container is, by id, and its unique name.

Keys: ``containers/<id>`` holds a `ContainerRecord`; ``container-names/<name>`` holds the id,
so a name is claimed atomically with the record (one transaction, "absent" expected).
References (`resolve`) are a full id, a unique id prefix, or a name, as in Docker.

Reads come from memory: `Records` loads both prefixes once and keeps them in step with its own
writes (the containers handler is the only writer of these keys), so `ps`, `inspect` and the
health probes' lookups never queue behind the store's commits (one fsync each, one at a time:
with hundreds of health checks every 2 s, a read waiting its turn took seconds).
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import trio

from carte.api.containers import (
    ContainerConfig,
    ContainerDetails,
    ContainerIdentity,
    ContainerState,
    ContainerSummary,
    Endpoint,
)
from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.api.timestamps import human_duration, parse_rfc3339
from carte.engine import Delete, Put, Store
from carte.engine.store import encode_value

V = TypeVar("V")

RECORDS = "containers/"
NAMES = "container-names/"


class ConnectedNetwork(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """A network joined with `network connect` (`--alias`, `--ip` as asked): joined again at
    every start, as Docker does, until `network disconnect`."""

    aliases: list[str] = []
    ip: str = ""


class ContainerRecord(ContainerIdentity, kw_only=True, forbid_unknown_fields=False):
    """Everything the daemon keeps about one container; `config` is already merged with the
    image's defaults (Cmd, Env, WorkingDir...), as `docker inspect` shows it."""

    state: ContainerState = msgspec.field(default_factory=ContainerState)
    restart_count: int = 0
    endpoints: list[Endpoint] = []
    connected: dict[str, ConnectedNetwork] = {}
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
    """The container records of one store, read from memory (see the module docstring).

    Each write goes to the store first, then to memory; a write that fails or is interrupted
    drops the memory copy, which is loaded again by the next read.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._values: dict[str, bytes] | None = None
        """Encoded record by id (decoded on each read, so callers may change what they get)."""
        self._names: dict[str, str] = {}
        self._writes = 0
        self._loading = trio.Lock()

    async def _loaded(self) -> dict[str, bytes]:
        async with self._loading:
            while self._values is None:
                writes = self._writes
                records = await self.store.list(RECORDS)
                names = await self.store.list(NAMES)
                if writes == self._writes:  # else a write landed meanwhile: read again
                    self._names = {e.key[len(NAMES) :]: e.value.decode() for e in names}
                    self._values = {e.key[len(RECORDS) :]: e.value for e in records}
            return self._values

    async def _write(
        self, operations: list[Put | Delete], expect: dict[str, int] | None = None
    ) -> None:
        """Write to the store, then apply the same operations to the memory copy."""
        encoded = [
            Put(op.key, encode_value(op.value)) if isinstance(op, Put) else op for op in operations
        ]
        self._writes += 1
        try:
            await self.store.txn(encoded, expect or {})
        except BaseException:
            self._values = None
            raise
        if self._values is not None:
            for operation in encoded:
                _apply(operation, RECORDS, self._values, bytes)
                _apply(operation, NAMES, self._names, bytes.decode)

    async def all(self) -> list[ContainerRecord]:
        """Every record, oldest first."""
        values = await self._loaded()
        records = [decode_record(value) for value in values.values()]
        return sorted(records, key=lambda record: record.created)

    async def get(self, container_id: str) -> ContainerRecord | None:
        value = (await self._loaded()).get(container_id)
        return None if value is None else decode_record(value)

    async def resolve(self, ref: str) -> ContainerRecord:
        """The record named by a full id, a unique id prefix or a name.

        Raises `NotFound` naming the reference, `Conflict` for an ambiguous id prefix.
        """
        bare = ref.removeprefix("/")
        if bare:
            values = await self._loaded()
            found = values.get(bare) or values.get(self._names.get(bare, ""))
            if found is not None:
                return decode_record(found)
            if all(c in "0123456789abcdef" for c in bare):
                matches = [key for key in values if key.startswith(bare)]
                if len(matches) == 1:
                    return decode_record(values[matches[0]])
                if len(matches) > 1:
                    raise Conflict(
                        f'container id prefix "{ref}" matches {len(matches)} containers; '
                        "give more digits or the name"
                    )
        raise NotFound(f'no such container: "{ref}"; see carte ps -a')

    async def add(self, record: ContainerRecord) -> None:
        """Store a new record and claim its name; `Conflict` (409) if the name is taken."""
        try:
            await self._write(
                [Put(RECORDS + record.id, record), Put(NAMES + record.name, record.id.encode())],
                expect={NAMES + record.name: 0},
            )
        except Conflict:
            raise _name_taken(record.name) from None

    async def save(self, record: ContainerRecord) -> None:
        """Write a changed record (last writer wins; the handler serializes per container)."""
        await self._write([Put(RECORDS + record.id, record)])

    async def rename(self, record: ContainerRecord, new_name: str) -> None:
        """Move the record to `new_name`; `Conflict` if another container holds it."""
        old_name = record.name
        record.name = new_name
        try:
            await self._write(
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
        await self._write([Delete(RECORDS + record.id), Delete(NAMES + record.name)])


def _apply(
    operation: Put | Delete, prefix: str, copy: dict[str, V], convert: Callable[[bytes], V]
) -> None:
    """Apply a written operation to the memory copy of the keys under `prefix`."""
    if not operation.key.startswith(prefix):
        return
    key = operation.key[len(prefix) :]
    if isinstance(operation, Put):
        copy[key] = convert(operation.value)
    else:
        copy.pop(key, None)


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f'container name "{name}" is already in use; remove that container (carte rm {name}) '
        "or choose another --name"
    )


# --- how records are shown ---------------------------------------------------------------


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
