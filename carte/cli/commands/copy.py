"""`carte cp`: copy files between a container and the host, both ways, as Docker does.

    carte cp CONTAINER:SRC HOST_DEST     carte cp HOST_SRC CONTAINER:DEST
    (`-` for HOST_DEST / HOST_SRC: a tar on stdout / from stdin)

A destination that is an existing directory receives the source inside it; otherwise the
source is copied as the destination (renamed), whose parent must exist. Symlinks are copied as
symlinks. On the host, the daemon's tar is unpacked with tarfile's "tar" filter, so no member
lands outside the destination even if the container's files are hostile; in the container the
daemon resolves every path inside its root.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from carte.cli.commands import Commands, Session
from carte.cli.transport import ApiError, DaemonUnreachable

TYPE_CHECKING = False  # tarfile is imported by `cp` alone: every command imports this module
if TYPE_CHECKING:
    import tarfile
    from collections.abc import Iterator


def register(commands: Commands) -> None:
    commands.add(
        "cp",
        run=copy,
        help="copy files between a container and the host (CONTAINER:PATH)",
        arguments=_arguments,
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    # Docker's -q hides a progress line it prints only on a terminal; Carte never prints one.
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress (never any)")
    parser.add_argument("source", metavar="SRC")
    parser.add_argument("destination", metavar="DEST")


def _container_path(text: str) -> tuple[str, str] | None:
    """(container, path) for CONTAINER:PATH; None for a host path (one with a / or . before
    any colon, as Docker decides)."""
    if text.startswith(("/", ".")) or ":" not in text:
        return None
    container, _, path = text.partition(":")
    if "/" in container or not container:
        return None
    return container, path or "/"


def copy(session: Session) -> int:
    import tarfile

    source, destination = session.args.source, session.args.destination
    from_container, to_container = _container_path(source), _container_path(destination)
    try:
        if from_container and not to_container:
            return _copy_out(session, *from_container, destination)
        if to_container and not from_container:
            return _copy_in(session, source, *to_container)
    except (ApiError, DaemonUnreachable) as error:
        message = error.message if isinstance(error, ApiError) else str(error)
        print(f"carte: {message.removeprefix('carte: ')}", file=sys.stderr)
        return 1
    except (OSError, tarfile.TarError) as error:
        print(f"carte: cp: {error}", file=sys.stderr)
        return 1
    print(
        "carte: cp copies between a container and the host: give exactly one CONTAINER:PATH, "
        "e.g. carte cp web:/etc/hosts ./hosts",
        file=sys.stderr,
    )
    return 1


def _archive_url(container: str, path: str) -> str:
    from urllib.parse import quote

    return f"/v1/containers/{quote(container, safe='')}/archive?path={quote(path, safe='')}"


# --- out of the container -------------------------------------------------------------------


def _copy_out(session: Session, container: str, path: str, destination: str) -> int:
    import tarfile

    response = session.client.open("GET", _archive_url(container, path))
    try:
        if destination == "-":
            for chunk in response.chunks():
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return 0
        if os.path.isdir(destination):
            target, rename = destination, None
        else:
            target = os.path.dirname(os.path.abspath(destination))
            rename = os.path.basename(destination.rstrip("/"))
            if not os.path.isdir(target):
                print(f'carte: cp: directory "{target}" does not exist; create it first',
                      file=sys.stderr)  # fmt: skip
                return 1
        with tarfile.open(fileobj=_ChunkReader(response.chunks()), mode="r|") as tar:
            for member in tar:
                member.name = _renamed(member.name, rename)
                if member.islnk():
                    member.linkname = _renamed(member.linkname, rename)
                _extract(tar, member, target)
        return 0
    finally:
        response.close()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    """Extract with tarfile's "tar" filter, or the same checks where Python lacks filters."""
    import tarfile

    if hasattr(tarfile, "tar_filter"):
        tar.extract(member, target, filter="tar", set_attrs=os.geteuid() == 0)
        return
    from carte.api.tar_members import checked_member

    tar.extract(checked_member(member, target), target, set_attrs=os.geteuid() == 0)


def _renamed(name: str, rename: str | None) -> str:
    if rename is None:
        return name
    parts = [part for part in name.split("/") if part and part != "."]
    return "/".join([rename, *parts[1:]]) if parts else rename


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


# --- into the container ---------------------------------------------------------------------


def _copy_in(session: Session, source: str, container: str, path: str) -> int:
    import tarfile

    if source == "-":
        body = sys.stdin.buffer.read()
    else:
        if not os.path.lexists(source):
            print(f'carte: cp: "{source}" does not exist on the host', file=sys.stderr)
            return 1
        buffer = io.BytesIO()
        name = os.path.basename(os.path.abspath(source)) or "."
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(source, arcname=name)
        body = buffer.getvalue()
    session.client.open("PUT", _archive_url(container, path), body).close()
    return 0
