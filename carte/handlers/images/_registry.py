"""The "registry" handler: pull, push and login against OCI distribution registries.

`RegistryHandler.pull_image` and `push_image` serve both the commands (no progress) and the
handler's streaming routes `POST /v1/images/pull|push` (`_routes`, with a progress callback).
The registry client is synchronous and runs in a worker thread (its own threads fetch layers
in parallel), at most `MAX_PARALLEL_TRANSFERS` per handler instance.

Credentials: the daemon keeps none. The client reads ~/.config/carte/auth.json (0600) and sends
the login for the registry host with each request, as Docker's client does. Plain HTTP is used
for loopback hosts, hosts in `images.insecure_registries` and a request's `insecure` flag.

Cancellation: a pull or push already in its worker thread runs to its end (the store never
holds a partial blob either way); the caller's cancellation is seen once the thread returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from carte.api.errors import InvalidArgument
from carte.api.events import (
    CheckRegistryLogin,
    ImagePulled,
    ImagePushed,
    PullImage,
    PushImage,
)
from carte.api.images import PullResult, PushResult, RegistryLogin
from carte.engine import Handler, HandlerContext, on
from carte.handlers.images._options import RegistryOptions
from carte.handlers.images._routes import REGISTRY_ROUTES
from carte.image import ImageStore, Progress, Registry, parse_reference
from carte.image.auth import Credentials, SuppliedCredentials

ProgressCallback = Callable[[Progress], None]
# Progress lines per blob are at most this often (the last one always goes).
PROGRESS_INTERVAL = 0.1
MAX_PARALLEL_TRANSFERS = 4
# Blobs fetched or sent at once per pull or push (skopeo's default is 6 as well).
PARALLEL_BLOBS = 6


def _ignore(_: Progress) -> None:
    return None


def registry_client(
    ctx: HandlerContext, host: str, login: RegistryLogin | None, insecure: bool
) -> Registry:
    """A client for `host` with the request's login and the daemon's insecure-registry list."""
    credentials = Credentials(username=login.username, password=login.password) if login else None
    insecure_hosts = [*ctx.options.insecure_registries, *([host] if insecure else [])]
    return Registry(
        host,
        credentials=SuppliedCredentials(host, credentials),
        insecure=insecure_hosts,
        parallel=PARALLEL_BLOBS,
    )


def throttled(progress: ProgressCallback) -> ProgressCallback:
    """`progress`, called at most every PROGRESS_INTERVAL per blob, plus every final report."""
    last: dict[str, float] = {}

    def report(event: Progress) -> None:
        now = time.monotonic()
        if event.done >= event.total or now - last.get(event.digest, 0.0) >= PROGRESS_INTERVAL:
            last[event.digest] = now
            progress(event)

    return report


class RegistryHandler(Handler):
    """pull, push, login (checking credentials; the client keeps them)."""

    name = "registry"
    Options = RegistryOptions
    section = "images"
    routes = REGISTRY_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.transfers = trio.CapacityLimiter(MAX_PARALLEL_TRANSFERS)

    @on(PullImage)
    async def pull(self, command: PullImage) -> PullResult:
        return await self.pull_image(command)

    @on(PushImage)
    async def push(self, command: PushImage) -> PushResult:
        return await self.push_image(command)

    async def pull_image(
        self, command: PullImage, progress: ProgressCallback = _ignore
    ) -> PullResult:
        """Pull into the daemon's store and publish `ImagePulled`; `progress` runs in a worker
        thread.

        Raises `InvalidReference`, `ImageNotFound`, `RegistryUnauthorized` ("run carte login
        HOST"), `RegistryError`, `DigestMismatch`, `UnsafeLayer` or `InvalidImage`; on any of
        them no image is recorded and no partial blob is visible.
        """
        ctx = self.ctx
        reference = parse_reference(command.reference)
        client = registry_client(ctx, reference.domain, command.login, command.insecure)
        store = ImageStore(ctx.root)
        report = throttled(progress)
        image = await trio.to_thread.run_sync(
            lambda: client.pull(store, reference, report), limiter=self.transfers
        )
        name = reference.familiar if reference.tag or not reference.digest else ""
        await ctx.bus.publish(ImagePulled(id=image.id, name=name))
        return PullResult(id=image.id, manifest_digest=image.manifest_digest, name=name)

    async def push_image(
        self, command: PushImage, progress: ProgressCallback = _ignore
    ) -> PushResult:
        """Push a local image as `target` (default: its own name) and publish `ImagePushed`.

        Blobs the registry has are not sent again. Raises `ImageNotFound` for an unknown local
        image, `InvalidArgument` for a digest target, `RegistryUnauthorized` or `RegistryError`.
        """
        ctx = self.ctx
        target = parse_reference(command.target or command.image)
        if target.digest:
            raise InvalidArgument(
                f'cannot push to "{command.target or command.image}": a digest is not a tag; '
                "push NAME:TAG"
            )
        store = ImageStore(ctx.root)
        image = await trio.to_thread.run_sync(lambda: store.get(command.image))
        client = registry_client(ctx, target.domain, command.login, command.insecure)
        report = throttled(progress)
        digest = await trio.to_thread.run_sync(
            lambda: client.push(store, image, target, report), limiter=self.transfers
        )
        await ctx.bus.publish(
            ImagePushed(id=image.id, name=target.familiar, manifest_digest=digest)
        )
        return PushResult(reference=target.familiar, manifest_digest=digest)

    @on(CheckRegistryLogin)
    async def check_login(self, command: CheckRegistryLogin) -> None:
        """Ask `host` for /v2/ with the login; raises `RegistryUnauthorized` if it refuses."""
        host = command.host.strip()
        if not host or "/" in host:
            raise InvalidArgument(
                f'registry "{command.host}" is not a host; give HOST or HOST:PORT'
            )
        client = registry_client(self.ctx, host, command.login, command.insecure)
        await trio.to_thread.run_sync(client.ping, limiter=self.transfers)
