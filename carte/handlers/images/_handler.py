"""The images handler (minimal): import a rootfs tarball, list, inspect, tag and remove images.

Works on the content store at the daemon root (carte.image.ImageStore), in worker threads.
Pull, push, save, load and build live in other handlers over the same store.
"""

from __future__ import annotations

from pathlib import Path

import trio

from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.api.events import (
    ImageImported,
    ImageRemoved,
    ImageTagged,
    ImageUntagged,
    ImportImage,
    InspectImage,
    ListContainerUsage,
    ListImages,
    RemoveImage,
    ResolveContainer,
    TagImage,
)
from carte.api.images import ImageDetails, ImageSummary, RemovedImage
from carte.engine import Handler, HandlerContext, on
from carte.handlers.images._routes import IMAGE_ROUTES
from carte.image import (
    ImageStore,
    StoredImage,
    collect_garbage,
    import_rootfs,
    parse_reference,
)
from carte.image.gc import forget_records_of
from carte.image.layers import compressed_size, unpacked_size


def _rows(store: ImageStore, image: StoredImage) -> list[ImageSummary]:
    """`carte images` rows of one image (one per tag); reads the store: call in a thread."""
    created = image.config.created or ""
    common = {
        "id": image.id,
        "digest": image.manifest_digest,
        "created": created,
        "size": unpacked_size(store, image),
    }
    if not image.names:
        return [ImageSummary(repository="<none>", tag="<none>", **common)]  # type: ignore[arg-type]
    rows = []
    for name in image.names:
        repository, _, tag = (
            name.rpartition(":")
            if ":" in name.rsplit("/", 1)[-1]
            else (
                name,
                "",
                "latest",
            )
        )
        rows.append(ImageSummary(repository=repository, tag=tag, **common))  # type: ignore[arg-type]
    return rows


def _details(store: ImageStore, image: StoredImage) -> ImageDetails:
    config = image.config.config
    return ImageDetails(
        id=image.id,
        repo_tags=list(image.names),
        manifest_digest=image.manifest_digest,
        created=image.config.created or "",
        architecture=image.config.architecture,
        os=image.config.os,
        size=unpacked_size(store, image),
        compressed_size=compressed_size(image),
        layers=list(image.diff_ids),
        cmd=list(config.cmd) if config and config.cmd else None,
        entrypoint=list(config.entrypoint) if config and config.entrypoint else None,
        env=list(config.env or []) if config else [],
        working_dir=(config.working_dir or "") if config else "",
        user=(config.user or "") if config else "",
        labels=dict(config.labels or {}) if config else {},
        stop_signal=(config.stop_signal or "") if config else "",
        exposed_ports=sorted((config.exposed_ports or {}).keys()) if config else [],
        volumes=sorted((config.volumes or {}).keys()) if config else [],
    )


class ImagesHandler(Handler):
    """import, images, image inspect, tag, rmi."""

    name = "images"
    requires = ("containers",)  # which containers use an image: ListContainerUsage
    routes = IMAGE_ROUTES  # POST /v1/images/import (the rootfs upload)

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self._store: ImageStore | None = None

    async def store(self) -> ImageStore:
        if self._store is None:
            root = self.ctx.root
            self._store = await trio.to_thread.run_sync(lambda: ImageStore(root))
        return self._store

    @on(ImportImage)
    async def import_image(self, command: ImportImage) -> ImageSummary:
        """Import the tarball at `source` (a path on the daemon's host). A hostile or broken
        tar is refused with one line and no image is recorded."""
        source = Path(command.source)
        if not source.is_absolute():
            raise InvalidArgument(f'import source "{source}" must be an absolute path')
        if not await trio.Path(source).is_file():
            raise InvalidArgument(f'cannot import "{source}": no such file; give a tar file')
        store = await self.store()
        image = await trio.to_thread.run_sync(
            lambda: import_rootfs(store, source, command.name or None)
        )
        name = command.name and parse_reference(command.name).familiar
        await self.ctx.bus.publish(ImageImported(id=image.id, name=name or ""))
        rows = await trio.to_thread.run_sync(lambda: _rows(store, image))
        if name:
            rows = [r for r in rows if f"{r.repository}:{r.tag}" == name] or rows
        return rows[0]

    @on(ListImages)
    async def list_images(self, command: ListImages) -> list[ImageSummary]:
        store = await self.store()
        rows = await trio.to_thread.run_sync(
            lambda: [row for image in store.images() for row in _rows(store, image)]
        )
        for key, values in command.filters.items():
            if key == "reference":
                rows = [r for r in rows if any(_reference_matches(r, v) for v in values)]
            elif key == "dangling":
                wanted = values[-1].lower() in ("true", "1") if values else True
                rows = [r for r in rows if (r.repository == "<none>") == wanted]
            else:
                raise InvalidArgument(f'filter "{key}" is not supported; use reference or dangling')
        return sorted(rows, key=lambda r: r.created, reverse=True)

    @on(InspectImage)
    async def inspect(self, command: InspectImage) -> ImageDetails:
        store = await self.store()
        return await trio.to_thread.run_sync(lambda: _details(store, store.get(command.ref)))

    @on(TagImage)
    async def tag(self, command: TagImage) -> None:
        store = await self.store()
        target = parse_reference(command.target).familiar
        image = await trio.to_thread.run_sync(lambda: store.get(command.source))
        await trio.to_thread.run_sync(lambda: store.tag(image, target))
        await self.ctx.bus.publish(ImageTagged(id=image.id, name=target))

    async def _layers_in_use(self) -> list[str]:
        """The chain ids of every layer a container has mounted (its image may be gone)."""
        chains: list[str] = []
        for record in await self.ctx.bus.request(ListContainerUsage()):
            try:
                location = await self.ctx.bus.request(ResolveContainer(ref=record.id))
            except NotFound:
                continue
            chains.extend("sha256:" + Path(d).parent.name for d in location.lower_dirs)
        return chains

    @on(RemoveImage)
    async def remove(self, command: RemoveImage) -> list[RemovedImage]:
        """Untag `ref` (a name), or remove the image (an id, or its last tag). Refused (409)
        while a container uses the image, unless `force`."""
        store = await self.store()
        image = await trio.to_thread.run_sync(lambda: store.get(command.ref))
        usage = await self.ctx.bus.request(ListContainerUsage())
        users = [container for container in usage if container.image_id == image.id]
        by_name = command.ref in image.names or _familiar(command.ref) in image.names
        removed: list[RemovedImage] = []
        if by_name and len(image.names) > 1:
            name = _familiar(command.ref)
            await trio.to_thread.run_sync(lambda: store.untag(name))
            await self.ctx.bus.publish(ImageUntagged(id=image.id, name=name))
            return [RemovedImage(untagged=name)]
        if users and not command.force:
            raise Conflict(
                f'image "{command.ref}" is used by container {users[0].id[:12]} '
                f"({users[0].name}); remove it first (carte rm {users[0].name}) or use -f"
            )
        for name in image.names:
            removed.append(RemovedImage(untagged=name))
        keep = await self._layers_in_use()

        def remove_and_collect() -> None:
            # Docker's rmi deletes the image's layers no other image uses; so does this (the
            # blobs, the unpacked layers and the build cache's records of them), keeping what
            # containers still have mounted. While a build, pull or load writes to the store,
            # rm does not wait for it: the next rm, prune or builder prune frees them.
            store.remove(image)
            forget_records_of(store, image)
            collect_garbage(store, keep, wait=False)

        await trio.to_thread.run_sync(remove_and_collect)
        removed.append(RemovedImage(deleted=image.id))
        await self.ctx.bus.publish(ImageRemoved(id=image.id))
        return removed


def _familiar(ref: str) -> str:
    try:
        return parse_reference(ref).familiar
    except InvalidArgument:
        return ref


def _reference_matches(row: ImageSummary, pattern: str) -> bool:
    import fnmatch

    name = f"{row.repository}:{row.tag}"
    return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(row.repository, pattern)
