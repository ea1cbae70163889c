"""The "build" handler: `BuildImage` and `PruneBuildCache`, the upload routes
`POST /v1/build` and `/v1/build/context` (`_build_routes`), and `BuildHandler.run_build`,
which both paths share, so they build the same way.

The builder library is synchronous; a build runs in a worker thread (at most
`MAX_PARALLEL_BUILDS` at once per handler instance) and its RUN steps in `carte runtime run`
child processes.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from carte.api.containers import Endpoint
from carte.api.errors import CarteError, InvalidArgument
from carte.api.events import (
    AttachContainerNetwork,
    BuildImage,
    DetachContainerNetwork,
    ImageBuilt,
    PruneBuildCache,
)
from carte.api.images import BuildCachePruned, BuildRequest, BuildResult
from carte.engine import Handler, HandlerContext, on
from carte.handlers.containers import resolve_user
from carte.handlers.images._build_routes import BUILD_ROUTES
from carte.handlers.images._once import once_per_daemon
from carte.image import ImageStore, Registry, StoredImage, collect_garbage, parse_reference
from carte.image.gc import forget_build_records

if TYPE_CHECKING:
    from carte.build import Attached, BuildInputs, BuildOptions
from carte.runtime.shim.client import interpreter_command

MAX_PARALLEL_BUILDS = 2


def build_options(request: BuildRequest, inputs: BuildInputs | None = None) -> BuildOptions:
    """The library's options from the wire request; raises `InvalidArgument` for bad values."""
    from carte.build import BuildOptions

    if request.network not in ("none", "host", "default"):
        raise InvalidArgument(
            f'--network "{request.network}" is unknown; use none, host or default'
        )
    for tag in request.tags:
        parse_reference(tag)
    return BuildOptions(
        tags=tuple(request.tags),
        dockerfile_name=Path(request.dockerfile).name or "Dockerfile",
        build_args=dict(request.build_args),
        target=request.target,
        no_cache=request.no_cache,
        pull=request.pull,
        labels=dict(request.labels),
        network=request.network,
        source_date_epoch=request.source_date_epoch,
        secrets=dict(inputs.secrets) if inputs else {},
        ssh=dict(inputs.ssh) if inputs else {},
    )


def _pull(store: ImageStore, ref: str) -> StoredImage:
    reference = parse_reference(ref)
    return Registry(reference.domain).pull(store, reference)


def read_dockerfile(context: Path, name: str) -> str:
    """The Dockerfile `name` (relative to the context); raises `InvalidArgument` if unreadable."""
    path = context / name
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgument(
            f"cannot read the Dockerfile {name} in the build context: {error}; "
            "give its path with -f"
        ) from None


class BuildHandler(Handler):
    """Owns image builds and the build cache."""

    name = "build"
    routes = BUILD_ROUTES

    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.builds = trio.CapacityLimiter(MAX_PARALLEL_BUILDS)
        self.sessions: dict[str, trio.Lock] = {}
        """Kept context copies by session id: one build per copy at a time."""

    async def run_build(
        self,
        request: BuildRequest,
        context: Path,
        dockerfile_text: str,
        progress: Callable[[str], None],
        cancelled: threading.Event,
        inputs: BuildInputs | None = None,
    ) -> BuildResult:
        """Build in a worker thread and publish `ImageBuilt`.

        `progress` is called from the worker thread. On cancellation of the calling task,
        `cancelled` is set; the build stops at its next step (a running RUN step is killed) and
        the task waits for the thread to finish cleaning up. Raises the build's `CarteError`.
        """
        # The builder is imported on first use: an idle daemon does not pay for it.
        from carte.build import BuildEnvironment, build

        options = build_options(request, inputs)
        store = ImageStore(self.ctx.root)
        environment = BuildEnvironment(
            store=store,
            state_dir=self.ctx.run_root / "build-runtime",
            progress=progress,
            resolve_user=resolve_user,
            pull=lambda ref: _pull(store, ref),
            cancelled=cancelled.is_set,
            attach=self._attach_step,
            detach=self._detach_step,
        )

        def work() -> StoredImage:
            return build(environment, options, context, dockerfile_text)

        try:
            image = await trio.to_thread.run_sync(work, limiter=self.builds)
        except trio.Cancelled:
            cancelled.set()
            raise
        result = BuildResult(
            id=image.id, manifest_digest=image.manifest_digest, names=list(image.names)
        )
        await self.ctx.bus.publish(ImageBuilt(id=image.id, names=list(image.names)))
        return result

    def _attach_step(self, step_id: str, netns_path: str) -> Attached:
        """Plug a RUN step's namespace into the default network (from the build thread)."""
        from carte.build import Attached

        command = AttachContainerNetwork(
            container_id=step_id,
            container_name=step_id,
            hostname=step_id,
            netns_path=netns_path,
            network="bridge",
        )

        async def attach() -> Endpoint:
            # Shielded, so a cancelled build never leaves an endpoint nobody detaches; the
            # build notices the cancellation at the step itself.
            with trio.CancelScope(shield=True):
                endpoint = await self.ctx.bus.request(command)
            return endpoint

        endpoint = trio.from_thread.run(attach)
        return Attached(ip=endpoint.ip_address, dns_servers=list(endpoint.dns_servers))

    def _detach_step(self, step_id: str) -> None:
        """Remove a step's endpoint, also when the build was cancelled (shielded: calls from
        the build thread carry the cancellation of the task that waits for it)."""

        async def detach() -> None:
            with trio.CancelScope(shield=True):
                try:
                    await self.ctx.bus.request(DetachContainerNetwork(container_id=step_id))
                except CarteError as error:
                    self.ctx.log.warning("build: cannot detach step %s: %s", step_id, error.message)

        trio.from_thread.run(detach)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Remove what builds of a previous daemon left (scratch dirs, uploads, RUN
        containers); a restart of this handler inside the same daemon removes nothing."""
        await trio.to_thread.run_sync(self._clean_after_previous_daemon)
        task_status.started()

    def _clean_after_previous_daemon(self) -> None:
        once_per_daemon(self.ctx.root / "build-owner", self._remove_leftovers)

    def _remove_leftovers(self) -> None:
        scratch = self.ctx.root / "build-scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        for upload in (self.ctx.root / "build-contexts").glob("upload-*"):
            shutil.rmtree(upload, ignore_errors=True)
        state = self.ctx.run_root / "build-runtime"
        if state.is_dir():
            for container in state.iterdir():
                subprocess.run(
                    [
                        *interpreter_command(),
                        "runtime",
                        "--root",
                        str(state),
                        "delete",
                        "--force",
                        container.name,
                    ],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    check=False,
                )

    @on(BuildImage)
    async def build_image(self, command: BuildImage) -> BuildResult:
        from carte.build import BuildInputs

        context = Path(command.context)
        if not await trio.to_thread.run_sync(context.is_dir):
            raise InvalidArgument(
                f"build context {context} is not a directory on the daemon's host; "
                "use carte build, which uploads it"
            )
        text = await trio.to_thread.run_sync(read_dockerfile, context, command.options.dockerfile)
        log = self.ctx.log
        return await self.run_build(
            command.options,
            context,
            text,
            lambda line: log.info("build: %s", line),
            threading.Event(),
            BuildInputs(secrets=dict(command.secrets)),
        )

    @on(PruneBuildCache)
    async def prune(self, command: PruneBuildCache) -> BuildCachePruned:
        store = ImageStore(self.ctx.root)

        from carte.build import BuildCache

        def work() -> BuildCachePruned:
            if command.until:  # only what is older; layers no image keeps go with it
                records = forget_build_records(store, written_before=command.until)
                collected = collect_garbage(store)
                return BuildCachePruned(
                    records=records,
                    blobs=len(collected.blobs),
                    bytes_freed=collected.bytes_freed,
                )
            records = BuildCache(store).prune()
            mounts = self.ctx.root / "build-mounts"
            if mounts.is_dir():
                records += sum(1 for _ in (mounts / "cache").glob("*") if _.is_dir())
                shutil.rmtree(mounts, ignore_errors=True)
            for kept in (self.ctx.root / "build-contexts").glob("session-*"):
                if kept.is_dir():
                    shutil.rmtree(kept, ignore_errors=True)
                else:
                    kept.unlink(missing_ok=True)
            collected = collect_garbage(store)
            return BuildCachePruned(
                records=records, blobs=len(collected.blobs), bytes_freed=collected.bytes_freed
            )

        return await trio.to_thread.run_sync(work, limiter=self.builds)
