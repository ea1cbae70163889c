"""The "archives" handler: images to and from tarballs, and what the image store holds.

Blocking functions the handler's streaming routes (`_routes`) run in worker threads:
`save_images` (OCI archive or docker-archive), `load_images` (either, hostile-safe: a bad
archive records no image), `export_container` (a container's merged filesystem as a tar,
volumes not included). Commands: `CommitContainer`, `ShowImageHistory`, `PruneImages`,
`GetDiskUsage`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import msgspec
import trio

from carte.api.containers import ContainerDetails, ContainerLocation
from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.api.events import (
    CommitContainer,
    GetDiskUsage,
    ImageCommitted,
    ImageRemoved,
    ImageUntagged,
    InspectContainer,
    ListContainerUsage,
    PauseContainer,
    PruneImages,
    ResolveContainer,
    ShowImageHistory,
    UnpauseContainer,
)
from carte.api.images import (
    CommitResult,
    DiskUsageRow,
    HistoryEntry,
    ImagePruneResult,
    LoadedImage,
    RemovedImage,
)
from carte.engine import Handler, HandlerContext, on
from carte.handlers.images._once import once_per_daemon
from carte.handlers.images._routes import ARCHIVE_ROUTES
from carte.image import (
    ImageNotFound,
    ImageStore,
    StoredImage,
    collect_garbage,
    diff_from_upper,
    load,
    oci,
    parse_reference,
    save,
    store_layer,
)
from carte.image.archive import ArchiveFormat
from carte.image.digest import chain_ids, digest_hex
from carte.image.gc import build_records
from carte.image.importer import creation_time

MAX_PARALLEL_TRANSFERS = 4


# -- save, load, export (blocking; called from worker threads) ---------------------------------


def save_images(store: ImageStore, names: list[str], fmt: str, out: BinaryIO) -> None:
    """Write the images to `out`; raises `ImageNotFound` before writing anything."""
    if fmt not in ("oci", "docker"):
        raise InvalidArgument(f'archive format "{fmt}" is unknown; use oci or docker')
    chosen: ArchiveFormat = "oci" if fmt == "oci" else "docker"
    save(store, names, out, chosen)


def load_images(store: ImageStore, path: Path) -> list[LoadedImage]:
    """Store every image in the archive; raises `InvalidImage`, `DigestMismatch` or
    `UnsafeLayer` (no image recorded then)."""
    return [LoadedImage(id=image.id, names=list(image.names)) for image in load(store, path)]


@contextmanager
def merged_root(location: ContainerLocation, scratch: Path) -> Iterator[Path]:
    """The container's filesystem (its upper dir over its image layers) mounted read-only.

    The upper dir is mounted as the topmost lower layer, so whiteouts hide what the container
    deleted; the container's own mounts and volumes are not part of it. Unmounted on leaving
    the block, whatever happened.
    """
    from carte.runtime.syscalls import MNT_DETACH, MS_RDONLY, mount, umount2

    if not location.upper_dir:
        raise NotFound(f'container "{location.name}" has no filesystem on this host')
    layers = [location.upper_dir, *location.lower_dirs]
    scratch.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix=f"export-{location.id[:12]}-", dir=scratch))
    empty = target.with_name(target.name + ".empty")
    try:
        if len(layers) < 2:  # overlay needs two lower layers when it has no upper one
            empty.mkdir()
            layers.append(str(empty))
        mount("overlay", str(target), "overlay", MS_RDONLY, "lowerdir=" + ":".join(layers))
        try:
            yield target
        finally:
            umount2(str(target), MNT_DETACH)
    finally:
        target.rmdir()
        if empty.exists():
            empty.rmdir()


def write_tree(root: Path, out: BinaryIO) -> None:
    """Write the tree under `root` as a tar (numeric owners, entries sorted, no `./` prefix)."""

    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            relative = os.path.relpath(directory, root)
            for name in sorted(subdirs + files):
                path = os.path.join(directory, name)
                arcname = name if relative == "." else f"{relative}/{name}"
                archive.add(path, arcname=arcname, recursive=False, filter=numeric)


def export_container(location: ContainerLocation, scratch: Path, out: BinaryIO) -> None:
    """`carte export`: the container's flattened filesystem as a tar written to `out`."""
    with merged_root(location, scratch) as root:
        write_tree(root, out)


# -- commit ----------------------------------------------------------------------------------


def _changed_config(
    base: oci.ContainerConfig, details: ContainerDetails, changes: list[str]
) -> oci.ContainerConfig:
    """The image defaults of a committed container: its run config, then `--change` lines."""
    run = details.config
    config = msgspec.structs.replace(
        base,
        cmd=tuple(run.cmd) if run.cmd is not None else base.cmd,
        entrypoint=tuple(run.entrypoint) if run.entrypoint is not None else base.entrypoint,
        env=tuple(run.env) or base.env,
        working_dir=run.workdir or base.working_dir,
        user=run.user or base.user,
        labels={**(base.labels or {}), **run.labels} or None,
    )
    for change in changes:
        config = _apply_change(config, change)
    return config


def _command_words(value: str) -> tuple[str, ...]:
    if value.startswith("["):
        try:
            words = json.loads(value)
        except ValueError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return tuple(words)
    return ("/bin/sh", "-c", value)


def _pairs(value: str) -> dict[str, str]:
    if "=" not in value.split(" ", 1)[0]:
        key, _, rest = value.partition(" ")
        return {key: rest.strip()}
    return dict(word.partition("=")[::2] for word in shlex.split(value))


def _apply_change(config: oci.ContainerConfig, change: str) -> oci.ContainerConfig:
    """One Dockerfile-style line of `carte commit --change`; raises `InvalidArgument`."""
    keyword, _, value = change.strip().partition(" ")
    keyword, value = keyword.upper(), value.strip()
    replace = msgspec.structs.replace
    if not value:
        raise InvalidArgument(f'--change "{change}" has no value; e.g. --change "CMD [\\"sh\\"]"')
    if keyword == "CMD":
        return replace(config, cmd=_command_words(value))
    if keyword == "ENTRYPOINT":
        return replace(config, entrypoint=_command_words(value))
    if keyword == "WORKDIR":
        return replace(config, working_dir=value)
    if keyword == "USER":
        return replace(config, user=value)
    if keyword == "STOPSIGNAL":
        return replace(config, stop_signal=value)
    if keyword == "ENV":
        env = {e.partition("=")[0]: e for e in config.env or ()}
        env.update({k: f"{k}={v}" for k, v in _pairs(value).items()})
        return replace(config, env=tuple(env.values()))
    if keyword == "LABEL":
        return replace(config, labels={**(config.labels or {}), **_pairs(value)})
    if keyword == "EXPOSE":
        ports = dict(config.exposed_ports or {})
        for port in value.split():
            ports[port if "/" in port else f"{port}/tcp"] = {}
        return replace(config, exposed_ports=ports)
    raise InvalidArgument(
        f'--change "{change}": {keyword} cannot be changed by commit; use CMD, ENTRYPOINT, '
        "ENV, EXPOSE, LABEL, STOPSIGNAL, USER or WORKDIR"
    )


def commit_upper(
    store: ImageStore, details: ContainerDetails, upper: Path, command: CommitContainer
) -> StoredImage:
    """Store the upper dir as a layer on the container's image and record the new image."""
    try:
        parent = store.get(details.image_id)
    except ImageNotFound:
        raise NotFound(
            f'the image of container "{details.name}" ({details.image_id[:19]}) was removed; '
            "it cannot be committed"
        ) from None
    names = (parse_reference(command.reference).familiar,) if command.reference else ()
    with store.writing():
        layer = store_layer(store, lambda out: diff_from_upper(upper, out))
        created = creation_time()
        base = parent.config
        history = (
            *(base.history or ()),
            oci.History(
                created=created,
                created_by=f"carte commit {details.name}",
                author=command.author or None,
                comment=command.message or None,
            ),
        )
        config = msgspec.structs.replace(
            base,
            created=created,
            author=command.author or base.author,
            config=_changed_config(base.config or oci.ContainerConfig(), details, command.changes),
            rootfs=oci.RootFS(diff_ids=(*base.rootfs.diff_ids, layer.diff_id)),
            history=history,
        )
        manifest = oci.Manifest(
            schema_version=2,
            media_type=oci.OCI_MANIFEST,
            config=store.put_blob(oci.encode(config), oci.OCI_CONFIG),
            layers=(*parent.manifest.layers, layer.descriptor),
            annotations={oci.CREATED: created},
        )
        descriptor = store.put_blob(oci.encode(manifest), oci.OCI_MANIFEST)
        return store.add_image(descriptor, names)


# -- history, prune, df ----------------------------------------------------------------------


def image_history(image: StoredImage) -> list[HistoryEntry]:
    """Docker's `history`: newest first, each layer's stored size on its history entry."""
    sizes = [layer.size for layer in image.manifest.layers]
    entries = list(image.config.history or ())
    if not entries:
        entries = [oci.History() for _ in sizes]
    rows = []
    for entry in entries:
        empty = bool(entry.empty_layer)
        size = 0 if empty or not sizes else sizes.pop(0)
        rows.append(
            HistoryEntry(
                created=entry.created or "",
                created_by=entry.created_by or "",
                comment=entry.comment or "",
                size=size,
                empty_layer=empty,
            )
        )
    rows.reverse()
    if rows:
        rows[0] = msgspec.structs.replace(rows[0], id=image.id)
    return rows


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _subdirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


def disk_usage(
    store: ImageStore,
    used_ids: set[str],
    uppers: list[tuple[str, bool]],
    mounted_chains: Iterable[str] = (),
) -> list[DiskUsageRow]:
    """Rows for images (their blobs and unpacked layers), the build cache (what only its step
    records keep: blobs and unpacked layers no image uses) and containers (their upper dirs).

    RECLAIMABLE is what removing the unused images (`image prune -a`), the build cache
    (`builder prune`) or the stopped containers would free; layers a container has mounted
    are never counted reclaimable.
    """
    images = store.images()
    image_blobs: dict[str, int] = {}
    used_blobs: set[str] = set()
    image_chains: dict[str, bool] = {}  # chain hex -> used by a container's image
    mounted = {digest_hex(c) for c in mounted_chains}
    for image in images:
        in_use = image.id in used_ids
        for descriptor in (*image.manifest.layers, image.manifest.config):
            image_blobs[descriptor.digest] = descriptor.size
            if in_use:
                used_blobs.add(descriptor.digest)
        for chain in chain_ids(image.diff_ids) if image.diff_ids else []:
            key = digest_hex(chain)
            image_chains[key] = image_chains.get(key, False) or in_use or key in mounted
    layer_sizes = {
        path.name: _tree_size(path)
        for path in store.layers_dir.iterdir()
        if not path.name.startswith(".")
    }
    image_layers = sum(size for name, size in layer_sizes.items() if name in image_chains)
    image_layers_free = sum(
        size
        for name, size in layer_sizes.items()
        if name in image_chains and not image_chains[name]
    )
    # The build cache: records, and the blobs and unpacked layers only they keep.
    records = build_records(store)
    cache_blobs: dict[str, int] = {}
    for _, digest in records:
        if digest and digest not in image_blobs and store.has_blob(digest):
            cache_blobs[digest] = store.blob_path(digest).stat().st_size
    orphan_layers = {n: size for n, size in layer_sizes.items() if n not in image_chains}
    cache_size = sum(cache_blobs.values()) + sum(orphan_layers.values())
    cache_free = sum(cache_blobs.values()) + sum(
        size for name, size in orphan_layers.items() if name not in mounted
    )
    image_bytes = sum(image_blobs.values()) + image_layers
    sizes = [(_tree_size(Path(upper)), running) for upper, running in uppers]
    return [
        DiskUsageRow(
            type="Images",
            total=len(images),
            active=sum(1 for i in images if i.id in used_ids),
            size=image_bytes,
            reclaimable=sum(image_blobs.values())
            - sum(image_blobs[d] for d in used_blobs)
            + image_layers_free,
        ),
        DiskUsageRow(
            type="Build cache",
            total=len(records),
            active=0,
            size=cache_size,
            reclaimable=cache_free,
        ),
        DiskUsageRow(
            type="Containers",
            total=len(sizes),
            active=sum(1 for _, running in sizes if running),
            size=sum(size for size, _ in sizes),
            reclaimable=sum(size for size, running in sizes if not running),
        ),
    ]


class ArchivesHandler(Handler):
    """commit, history, image prune, system df (save/load/export are streaming routes)."""

    name = "archives"
    requires = ("containers",)  # ListContainerUsage, ResolveContainer
    routes = ARCHIVE_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.transfers = trio.CapacityLimiter(MAX_PARALLEL_TRANSFERS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Remove what a killed daemon's loads and exports left (uploads, export mounts); a
        restart of this handler inside the same daemon removes nothing."""
        await trio.to_thread.run_sync(self._clean_after_previous_daemon)
        task_status.started()

    def _clean_after_previous_daemon(self) -> None:
        once_per_daemon(self.ctx.run_root / "archives-owner", self._remove_leftovers)

    def _remove_leftovers(self) -> None:
        from carte.runtime.syscalls import MNT_DETACH, umount2

        for upload in (self.ctx.root / "load-uploads").glob("load-*"):
            shutil.rmtree(upload, ignore_errors=True)
        for target in (self.ctx.run_root / "export").glob("export-*"):
            try:
                umount2(str(target), MNT_DETACH)
            except OSError:
                pass  # not mounted
            try:
                target.rmdir()  # never rmtree: it could reach into a layer still mounted there
            except OSError:
                pass

    def _store(self) -> ImageStore:
        return ImageStore(self.ctx.root)

    @on(CommitContainer)
    async def commit(self, command: CommitContainer) -> CommitResult:
        """Commit a container; a running one is paused meanwhile (unless `pause` is false)."""
        location = await self.ctx.bus.request(ResolveContainer(ref=command.container))
        details = await self.ctx.bus.request(InspectContainer(ref=location.id))
        if not location.upper_dir:
            raise Conflict(f'container "{location.name}" has no filesystem to commit')
        if command.reference:
            parse_reference(command.reference)
        store = self._store()
        pause = command.pause and location.status == "running"
        if pause:
            await self.ctx.bus.request(PauseContainer(ref=location.id))
        try:
            image = await trio.to_thread.run_sync(
                lambda: commit_upper(store, details, Path(location.upper_dir), command),
                limiter=self.transfers,
            )
        finally:
            if pause:
                with trio.CancelScope(shield=True):
                    await self.ctx.bus.request(UnpauseContainer(ref=location.id))
        name = image.names[0] if image.names else ""
        await self.ctx.bus.publish(ImageCommitted(id=image.id, name=name, container=location.id))
        return CommitResult(id=image.id, name=name)

    @on(ShowImageHistory)
    async def history(self, command: ShowImageHistory) -> list[HistoryEntry]:
        store = self._store()
        image = await trio.to_thread.run_sync(lambda: store.get(command.ref))
        return image_history(image)

    async def _container_layers(self) -> tuple[set[str], list[str], list[tuple[str, bool]]]:
        """Image ids containers use, their layers' chain ids, their upper dirs and states."""
        used: set[str] = set()
        chains: list[str] = []
        uppers: list[tuple[str, bool]] = []
        for record in await self.ctx.bus.request(ListContainerUsage()):
            used.add(record.image_id)
            try:
                location = await self.ctx.bus.request(ResolveContainer(ref=record.id))
            except NotFound:
                continue
            chains.extend("sha256:" + Path(d).parent.name for d in location.lower_dirs)
            if location.upper_dir:
                uppers.append((location.upper_dir, location.status in ("running", "paused")))
        return used, chains, uppers

    @on(PruneImages)
    async def prune(self, command: PruneImages) -> ImagePruneResult:
        """Remove unused images (untagged only, unless `all`) and collect their blobs."""
        used, chains, _ = await self._container_layers()
        store = self._store()

        def work() -> tuple[list[StoredImage], int]:
            doomed = [
                image
                for image in store.images()
                if image.id not in used and (command.all or not image.names)
            ]
            for image in doomed:
                store.remove(image)
            return doomed, collect_garbage(store, chains).bytes_freed

        doomed, freed = await trio.to_thread.run_sync(work, limiter=self.transfers)
        deleted: list[RemovedImage] = []
        for image in doomed:
            for name in image.names:
                deleted.append(RemovedImage(untagged=name))
                await self.ctx.bus.publish(ImageUntagged(id=image.id, name=name))
            deleted.append(RemovedImage(deleted=image.id))
            await self.ctx.bus.publish(ImageRemoved(id=image.id))
        return ImagePruneResult(deleted=deleted, bytes_freed=freed)

    @on(GetDiskUsage)
    async def disk_usage(self, command: GetDiskUsage) -> list[DiskUsageRow]:
        used, chains, uppers = await self._container_layers()
        store = self._store()
        return await trio.to_thread.run_sync(
            lambda: disk_usage(store, used, uppers, chains), limiter=self.transfers
        )
