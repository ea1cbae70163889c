"""Per-container runtime state on disk, and the OCI state of a container.

Layout: `<state_dir>/<id>/state.json` (what `create` recorded) and `<state_dir>/<id>/exec.fifo`
(present from create until start). The status is computed, never stored: the recorded pid is
checked against /proc (with its start time, so a reused pid is not mistaken for the container).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from carte.api.errors import InvalidArgument, NotFound
from carte.runtime.spec import OCI_VERSION, Hooks

__all__ = [
    "ContainerRecord",
    "OCIState",
    "container_dir",
    "list_records",
    "load_record",
    "process_start_time",
    "remove_container_dir",
    "status_of",
    "validate_id",
    "write_record",
]

EXEC_FIFO = "exec.fifo"
STATE_FILE = "state.json"
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ContainerRecord(msgspec.Struct, kw_only=True):
    """What create wrote about a container; `start_time` guards against pid reuse. `hooks`
    keeps the spec's poststart and poststop hooks: later edits of config.json must not matter."""

    id: str
    pid: int
    start_time: int
    bundle: str
    rootfs: str
    cgroups_path: str
    created: str
    annotations: dict[str, str] = {}
    init: bool = False
    hooks: Hooks | None = None


class OCIState(msgspec.Struct, kw_only=True, rename="camel"):
    """The runtime-spec state document (`carte runtime state ID` prints it; hooks get it on
    stdin). `status` is creating, created, running or stopped."""

    oci_version: str
    id: str
    status: str
    pid: int
    bundle: str
    annotations: dict[str, str] = {}
    created: str = ""


_record_decoder = msgspec.json.Decoder(ContainerRecord)
_encoder = msgspec.json.Encoder()


def validate_id(container_id: str) -> None:
    """Raise `InvalidArgument` unless `container_id` is safe as a directory name."""
    if not _VALID_ID.match(container_id):
        raise InvalidArgument(
            f'container id "{container_id}" is invalid; use letters, digits, "_", "." and "-" '
            "(up to 128, not starting with a symbol)"
        )


def container_dir(state_dir: Path, container_id: str) -> Path:
    """The state directory of one container (validates the id)."""
    validate_id(container_id)
    return state_dir / container_id


def write_record(directory: Path, record: ContainerRecord) -> None:
    """Atomically write `record` into `directory`."""
    temporary = directory / (STATE_FILE + ".tmp")
    temporary.write_bytes(_encoder.encode(record))
    os.replace(temporary, directory / STATE_FILE)


def load_record(state_dir: Path, container_id: str) -> ContainerRecord:
    """The record of `container_id`. Raises `NotFound` with the spec's wording if unknown."""
    path = container_dir(state_dir, container_id) / STATE_FILE
    try:
        return _record_decoder.decode(path.read_bytes())
    except (FileNotFoundError, msgspec.DecodeError):
        raise NotFound(
            f'container "{container_id}" does not exist; list containers with `carte runtime list`'
        ) from None


def list_records(state_dir: Path) -> list[ContainerRecord]:
    """Every container recorded under `state_dir`, by id."""
    records = []
    if state_dir.is_dir():
        for entry in sorted(state_dir.iterdir()):
            try:
                records.append(load_record(state_dir, entry.name))
            except (NotFound, InvalidArgument):
                continue
    return records


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, or None if the process is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def status_of(state_dir: Path, record: ContainerRecord) -> str:
    """created, running or stopped, as the runtime spec defines them."""
    if record.pid <= 0 or process_start_time(record.pid) != record.start_time:
        return "stopped"
    if (state_dir / record.id / EXEC_FIFO).exists():
        return "created"
    return "running"


def oci_state(state_dir: Path, record: ContainerRecord) -> OCIState:
    """The spec's state document for `record`."""
    status = status_of(state_dir, record)
    return OCIState(
        oci_version=OCI_VERSION,
        id=record.id,
        status=status,
        pid=record.pid if status != "stopped" else 0,
        bundle=record.bundle,
        annotations=record.annotations,
        created=record.created,
    )


def remove_container_dir(state_dir: Path, container_id: str) -> None:
    """Remove the container's state directory (flat: state.json, exec.fifo, sockets and such
    written by the shim); a missing one is fine. Raises `OSError` if it cannot be removed."""
    directory = container_dir(state_dir, container_id)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(directory)


def _remove_tree(path: str) -> None:
    # shutil.rmtree would import bz2, lzma and zlib on this hot path.
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
        else:
            os.unlink(entry.path)
    os.rmdir(path)
