"""The volumes handler: local named volumes under ROOT/volumes/<name>/_data.

Records live at ``volumes/<name>`` in the state store. `in_use_by` comes from the
containers handler (`ListContainerUsage`): a volume used by any container, running or not,
cannot be removed without force, as in Docker.

Containers write into volumes as root, so what they leave there must give nothing to other
users of the host: ROOT/volumes is 0701 (made so with the root, carte.daemon_lock), each
volume's directory 0700, and while the handler runs ROOT/volumes is mounted on itself
nosuid,nodev (private propagation): a setuid file or a device node there does nothing when
used through the host's path. Containers' own binds of a volume inherit those flags.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec
import trio

from carte.api.containers import ANONYMOUS_VOLUME, PruneResult, Volume
from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.api.events import (
    CreateVolume,
    InspectVolume,
    ListContainerUsage,
    ListVolumes,
    PruneVolumes,
    RemoveVolume,
    VolumeCreated,
    VolumeRemoved,
)
from carte.api.timestamps import now_rfc3339
from carte.engine import Handler, HandlerContext, on

PREFIX = "volumes/"
_decoder = msgspec.json.Decoder(Volume)


def check_volume_name(name: str) -> str:
    """Docker's volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]+; `InvalidArgument` otherwise."""
    valid = (
        len(name) >= 2
        and name.isascii()
        and name[0].isalnum()
        and all(c.isalnum() or c in "_.-" for c in name)
    )
    if not valid:
        raise InvalidArgument(
            f'volume name "{name}" is invalid; use at least 2 of letters, digits, "_", "." '
            'and "-", starting with a letter or digit'
        )
    return name


class VolumesHandler(Handler):
    """Local volumes: create, ls, inspect, rm, prune."""

    name = "volumes"
    requires = ("containers",)  # which containers use a volume: ListContainerUsage

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.volumes_dir = ctx.root / "volumes"
        self._lock = trio.Lock()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Mount ROOT/volumes nosuid,nodev (a mount a killed daemon left is taken over) and
        unmount it when the handler stops, whether cancelled or failing."""
        await trio.to_thread.run_sync(_mount_nosuid, self.volumes_dir)
        try:
            for entry in await self.ctx.store.list(PREFIX):
                volume = _decoder.decode(entry.value)
                if volume.options:  # the self-bind above hides what an earlier run mounted
                    data = Path(volume.mountpoint)
                    try:
                        await trio.to_thread.run_sync(mount_options, data, volume.options)
                    except OSError as error:
                        self.ctx.log.warning(
                            "volume %s: cannot mount %s: %s",
                            volume.name,
                            _described(volume.options),
                            error.strerror,
                        )
            task_status.started()
            await trio.sleep_forever()
        finally:
            _unmount(self.volumes_dir)  # one quick syscall: safe under cancellation

    async def _get(self, name: str) -> Volume | None:
        entry = await self.ctx.store.get(PREFIX + name)
        return None if entry is None else _decoder.decode(entry.value)

    async def _users(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for container in await self.ctx.bus.request(ListContainerUsage()):
            for volume in container.volumes:
                users.setdefault(volume, []).append(container.id)
        return users

    def _with_users(self, volume: Volume, users: dict[str, list[str]]) -> Volume:
        return msgspec.structs.replace(volume, in_use_by=users.get(volume.name, []))

    @on(CreateVolume)
    async def create(self, command: CreateVolume) -> Volume:
        """Create a volume; an existing one of that name is returned as it is (Docker). With
        options, what they name is mounted on it now (and again at each daemon start)."""
        import secrets

        name = check_volume_name(command.name) if command.name else secrets.token_hex(32)
        options = dict(command.options)
        await trio.to_thread.run_sync(check_volume_options, options)  # stats a host path
        async with self._lock:
            existing = await self._get(name)
            if existing is not None:
                return existing
            data = self.volumes_dir / name / "_data"
            await trio.to_thread.run_sync(_make_volume_dir, data)
            try:
                if options:
                    await trio.to_thread.run_sync(mount_options, data, options)
            except OSError as error:
                await trio.to_thread.run_sync(_remove_volume_dir, data.parent)
                raise InvalidArgument(
                    f'volume "{name}": cannot mount {_described(options)}: {error.strerror}; '
                    "check -o type, o and device"
                ) from None
            volume = Volume(
                name=name,
                mountpoint=str(data),
                created=now_rfc3339(),
                labels=dict(command.labels),
                options=options,
            )
            await self.ctx.store.put(PREFIX + name, volume)
        await self.ctx.bus.publish(VolumeCreated(id=name))
        return volume

    @on(ListVolumes)
    async def list(self, command: ListVolumes) -> list[Volume]:
        users = await self._users()
        volumes = [
            self._with_users(_decoder.decode(e.value), users)
            for e in await self.ctx.store.list(PREFIX)
        ]
        for key, values in command.filters.items():
            if key == "dangling":
                wanted = values[-1].lower() in ("true", "1") if values else True
                volumes = [v for v in volumes if (not v.in_use_by) == wanted]
            elif key == "name":
                volumes = [v for v in volumes if any(x in v.name for x in values)]
            elif key == "label":
                volumes = [v for v in volumes if any(_has_label(v, x) for x in values)]
            else:
                raise InvalidArgument(
                    f'filter "{key}" is not supported; use dangling, name or label'
                )
        return volumes

    @on(InspectVolume)
    async def inspect(self, command: InspectVolume) -> Volume:
        volume = await self._get(command.name)
        if volume is None:
            raise NotFound(f'no such volume: "{command.name}"; see carte volume ls')
        return self._with_users(volume, await self._users())

    @on(RemoveVolume)
    async def remove(self, command: RemoveVolume) -> None:
        async with self._lock:
            volume = await self._get(command.name)
            if volume is None:
                raise NotFound(f'no such volume: "{command.name}"; see carte volume ls')
            users = (await self._users()).get(volume.name, [])
            if users and not command.force:
                raise Conflict(
                    f'volume "{volume.name}" is in use by container {users[0][:12]}; '
                    "remove that container first (carte rm -v)"
                )
            directory = self.volumes_dir / volume.name
            try:
                await trio.to_thread.run_sync(_remove_volume_dir, directory, bool(volume.options))
            except OSError as error:
                raise Conflict(
                    f'volume "{volume.name}": cannot unmount {_described(volume.options)}: '
                    f"{error.strerror}; nothing was removed"
                ) from None
            await self.ctx.store.delete(PREFIX + volume.name)
        await self.ctx.bus.publish(VolumeRemoved(id=volume.name))

    @on(PruneVolumes)
    async def prune(self, command: PruneVolumes) -> PruneResult:
        """Remove the anonymous volumes no container uses; with `all` named ones too (Docker's
        `volume prune` and `volume prune -a` since 23.0: a named volume holds data someone
        chose to keep)."""
        deleted: list[str] = []
        reclaimed = 0
        users = await self._users()
        for entry in await self.ctx.store.list(PREFIX):
            volume = _decoder.decode(entry.value)
            if users.get(volume.name) or not (command.all or ANONYMOUS_VOLUME in volume.labels):
                continue
            directory = self.volumes_dir / volume.name
            if not volume.options:  # what a bind or tmpfs volume holds is not on this disk
                reclaimed += await trio.to_thread.run_sync(_disk_usage, directory)
            await self.remove(RemoveVolume(name=volume.name))
            deleted.append(volume.name)
        return PruneResult(deleted=deleted, space_reclaimed=reclaimed)


def _has_label(volume: Volume, wanted: str) -> bool:
    key, sep, value = wanted.partition("=")
    return key in volume.labels and (not sep or volume.labels[key] == value)


_TMPFS_OPTIONS = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "noexec", "nosuid")


def check_volume_options(options: dict[str, str]) -> None:
    """Docker's local driver options Carte mounts: `type=none,o=bind,device=DIR` (DIR an
    existing host directory) and `type=tmpfs[,o=size=..,mode=..]`; `InvalidArgument` names the
    option otherwise."""
    if not options:
        return
    unknown = sorted(set(options) - {"type", "o", "device"})
    if unknown:
        raise InvalidArgument(
            f'volume option "{unknown[0]}" is unknown; the local driver takes type, o and device'
        )
    kind = options.get("type", "")
    words = [w for w in options.get("o", "").split(",") if w]
    if kind == "none" or "bind" in words or "rbind" in words:
        device = options.get("device", "")
        if not {"bind", "rbind"} & set(words) or any(
            w not in ("bind", "rbind", "ro", "rw") for w in words
        ):
            raise InvalidArgument(
                f'volume option o="{options.get("o", "")}": a bind volume takes o=bind '
                "(and ro); e.g. -o type=none -o o=bind -o device=/srv/data"
            )
        if not device.startswith("/") or not os.path.isdir(device):
            raise InvalidArgument(
                f'volume option device="{device}" is not an existing host directory; '
                f"create it first (mkdir -p {device or 'DIR'})"
            )
    elif kind == "tmpfs":
        for word in words:
            if word.partition("=")[0] not in _TMPFS_OPTIONS:
                raise InvalidArgument(
                    f'volume option o="{options["o"]}": "{word}" is not a tmpfs option; use '
                    "size=, mode=, uid=, gid= or nr_inodes="
                )
    else:
        raise InvalidArgument(
            f'volume option type="{kind}" is not supported; use type=none with o=bind and '
            "device=DIR, or type=tmpfs"
        )


def mount_options(data: Path, options: dict[str, str]) -> None:
    """Mount what `options` name on the volume's `data` directory unless it is mounted there
    already. Raises `OSError`."""
    from carte.runtime.syscalls import (
        MS_BIND,
        MS_NODEV,
        MS_NOSUID,
        MS_RDONLY,
        MS_REC,
        MS_REMOUNT,
        mount,
    )

    if _mounted_here(data):
        return
    words = [w for w in options.get("o", "").split(",") if w]
    if options.get("type") == "tmpfs":
        mount("tmpfs", str(data), "tmpfs", MS_NOSUID | MS_NODEV, ",".join(words))
        return
    recursive = MS_REC if "rbind" in words else 0
    mount(options["device"], str(data), None, MS_BIND | recursive)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if "ro" in words else 0)
    mount(None, str(data), None, flags)


def _remove_volume_dir(directory: Path, mounted: bool = True) -> None:
    """Delete a volume's directory; what is mounted on its _data (`mounted`: the volume has
    options) is unmounted first and never deleted through: `OSError` if it stays mounted, or
    if _data still holds files once unmounted (they can only be the mount's)."""
    from carte.runtime.syscalls import MNT_DETACH, umount2

    data = directory / "_data"
    while _mounted_here(data):
        umount2(str(data), MNT_DETACH)
    if _mounted_here(data) or os.path.ismount(data):
        raise OSError(16, "still mounted")
    if mounted and data.is_dir() and any(data.iterdir()):
        raise OSError(16, "still mounted (its directory is not empty)")
    shutil.rmtree(directory, ignore_errors=True)


def _described(options: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(options.items()))


def _make_volume_dir(data: Path) -> None:
    data.parent.mkdir(mode=0o700, exist_ok=True)
    os.chmod(data.parent, 0o700)  # only root (and containers, through their binds) get in
    data.mkdir(exist_ok=True)


def _mounted_here(path: Path) -> bool:
    target = str(path)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].encode().decode("unicode_escape") == target:
            return True
    return False


def _mount_nosuid(directory: Path) -> None:
    from carte.runtime.syscalls import (
        MS_BIND,
        MS_NODEV,
        MS_NOSUID,
        MS_PRIVATE,
        MS_REMOUNT,
        mount,
    )

    directory.mkdir(mode=0o701, exist_ok=True)
    if not _mounted_here(directory):
        mount(str(directory), str(directory), None, MS_BIND)
    mount(None, str(directory), None, MS_PRIVATE)
    mount(None, str(directory), None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)


def _unmount(directory: Path) -> None:
    from carte.runtime.syscalls import MNT_DETACH, umount2

    while _mounted_here(directory):
        umount2(str(directory), MNT_DETACH)


def _disk_usage(directory: Path) -> int:
    import os

    total = 0
    for base, _, files in os.walk(str(directory)):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                continue
    return total
