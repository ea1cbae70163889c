"""What a replica takes from outside its own spec: the secret and config files it mounts, and
the volumes `volumes_from` shares with it.

Secrets and configs are read once by `carte apply` (file, client environment or inline
content) and kept in the service record; `write_files` puts them under the run root with the
mode and owner the manifest asks for, and each replica binds them read-only. Their content is
never part of a spec, an inspect or a log line.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from carte.api.containers import ContainerSummary, MountSpec
from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import InspectContainer
from carte.handlers.stacks._records import ServiceRecord
from carte.stack import ManifestError, Source
from carte.stack.model import FileRef, Manifest, Service
from carte.stack.replica import file_refs, volume_mounts

if TYPE_CHECKING:
    from carte.engine import HandlerContext


def read_files(
    project_dir: str, manifest: Manifest, source: Source, env: dict[str, str]
) -> dict[str, bytes]:
    """ "secrets/NAME" / "configs/NAME" -> content of every one a service uses. Raises
    `InvalidArgument` naming the file, line and key when one cannot be read."""
    used = {
        (kind, name)
        for service in manifest.services.values()
        for kind, name, *_ in file_refs(service)
    }
    for service in manifest.services.values():  # build.secrets: RUN --mount=type=secret
        if service.build is not None and not isinstance(service.build, str):
            for ref in service.build.secrets:
                used.add(("secrets", ref.source if isinstance(ref, FileRef) else ref))
    out: dict[str, bytes] = {}
    problems: list[str] = []
    for kind, name in sorted(used):
        decl = (manifest.secrets if kind == "secrets" else manifest.configs).get(name)
        if decl is None:
            continue
        if decl.content:
            out[f"{kind}/{name}"] = decl.content.encode()
        elif decl.environment:
            if decl.environment not in env:
                problems.append(
                    str(
                        source.error(
                            (kind, name, "environment"),
                            f'variable "{decl.environment}" is not set in the client\'s '
                            "environment; export it before carte apply",
                        )
                    )
                )
                continue
            out[f"{kind}/{name}"] = env[decl.environment].encode()
        else:
            path = os.path.join(project_dir, os.path.expanduser(decl.file))
            try:
                with open(path, "rb") as file:
                    out[f"{kind}/{name}"] = file.read(1 << 20)
            except OSError as error:
                reason = "is missing" if isinstance(error, FileNotFoundError) else error.strerror
                problems.append(
                    str(source.error((kind, name, "file"), f"{path} {reason}; check the path"))
                )
    if problems:
        raise InvalidArgument(str(ManifestError("\n".join(problems))))
    return out


def write_files(directory: Path, service: Service, files: dict[str, bytes]) -> None:
    """Write the service's secrets and configs under `directory` (0700, root's), each file
    with its mode and owner; replaced atomically so running replicas see whole files."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for kind, name, _target, mode, uid, gid in file_refs(service):
        folder = directory / kind
        folder.mkdir(mode=0o700, exist_ok=True)
        partial = folder / f".{name}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(descriptor, files.get(f"{kind}/{name}", b""))
            os.fchown(descriptor, uid, gid)
            os.fchmod(descriptor, mode)
        finally:
            os.close(descriptor)
        os.replace(partial, folder / name)


Rows = Callable[[str, str], Awaitable[list[ContainerSummary]]]


async def shared_mounts(
    ctx: HandlerContext, rows: Rows, record: ServiceRecord, spec: Service
) -> list[MountSpec]:
    """The mounts `volumes_from` gives the service: those of a running replica of the named
    service (its anonymous volumes too), else the service's declared volumes; those of a
    container named `container:NAME`. `:ro` makes them read-only. Tmpfs mounts are not shared."""
    from carte.handlers.stacks._records import load_service

    own_files = str(ctx.run_root / "stacks") + "/"
    out: list[MountSpec] = []
    for entry in spec.volumes_from:
        parts = entry.split(":")
        read_only = parts[-1] == "ro"
        mounts: list[MountSpec] = []
        if parts[0] == "container":
            try:
                details = await ctx.bus.request(InspectContainer(ref=parts[1]))
            except CarteError as error:
                raise InvalidArgument(
                    f"service {record.name}: volumes_from {entry}: {error.message}"
                ) from None
            mounts = list(details.config.mounts)
        else:
            other = parts[1] if parts[0] == "service" else parts[0]
            running = [r for r in await rows(record.stack, other) if r.state == "running"]
            if running:
                details = await ctx.bus.request(InspectContainer(ref=running[0].id))
                mounts = list(details.config.mounts)
            else:
                other_record = await load_service(ctx.store, record.stack, other)
                if other_record is not None:
                    mounts = volume_mounts(
                        record.stack, other_record.spec, other_record.project_dir, record.volumes
                    )
        for mount in mounts:
            if mount.type == "tmpfs" or mount.source.startswith(own_files):
                continue  # tmpfs is per container; secret files are the other service's own
            out.append(msgspec.structs.replace(mount, read_only=mount.read_only or read_only))
    return out
