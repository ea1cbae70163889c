"""Example plugin: POST selected facts as JSON to a webhook URL.

Written only against `carte.plugins.api` (plus the standard library and msgspec), as the
example for plugin authors. Configure it in carte.yaml::

    handlers:
      options:
        webhook:
          url: http://127.0.0.1:9000/hook
          events: [ContainerExited, daemon]   # names, topics or topic prefixes; empty = all
          timeout: 5

Without a url the handler skips itself ("no url configured"); a wrong type or an unknown key
stops the daemon with carte.yaml's file and line. Each matching fact is POSTed as
``{"event": name, "topic": topic, "fact": {...}}``. Facts are queued (up to `queue_size`) so a
slow webhook never slows the daemon's bus; when the queue is full the fact is dropped and a
warning logged. A failed POST is logged and not retried. Facts published while the daemon
started (before this plugin was ready) are posted too, and ``DaemonStopping`` is posted
before the daemon stops it.
"""

import json
import urllib.error
import urllib.request
from typing import Annotated, Any

import msgspec
import trio

from carte.plugins.api import (
    DaemonStopping,
    Fact,
    Handler,
    HandlerContext,
    HandlerOptions,
    event_name,
    on,
)


class WebhookOptions(HandlerOptions, frozen=True, kw_only=True):
    url: str = ""
    events: list[str] = []
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 1000


class WebhookHandler(Handler):
    """Forwards facts to `handlers.options.webhook.url`."""

    name = "webhook"
    Options = WebhookOptions

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        size = self.options.queue_size
        self._send, self._receive = trio.open_memory_channel[Fact](size)
        self.queued = 0
        self.delivered = 0
        self.failed = 0
        self._progress = trio.Event()

    @property
    def options(self) -> WebhookOptions:
        options: WebhookOptions = self.ctx.options
        return options

    async def check(self) -> str | None:
        if not self.options.url:
            return "no url configured (set handlers.options.webhook.url in carte.yaml)"
        if not self.options.url.startswith(("http://", "https://")):
            return f'url "{self.options.url}" is not http(s); use e.g. http://host:port/path'
        return None

    def wants(self, fact: Fact) -> bool:
        """Whether `fact` matches the configured events (all facts when none are listed)."""
        if not self.options.events:
            return True
        name, topic = event_name(fact), fact.topic
        return any(
            wanted in (name, topic) or topic.startswith(wanted + ".")
            for wanted in self.options.events
        )

    @on(Fact)
    async def enqueue(self, fact: Fact) -> None:
        """Queue a matching fact; on `DaemonStopping`, also wait until everything queued was
        posted (the daemon bounds that wait before it stops the plugin)."""
        if self.wants(fact):
            try:
                self._send.send_nowait(fact)
                self.queued += 1
            except trio.WouldBlock:
                self.ctx.log.warning(
                    "webhook queue full; fact dropped",
                    extra={"event": event_name(fact), "queue_size": self.options.queue_size},
                )
        if isinstance(fact, DaemonStopping):
            while self.delivered + self.failed < self.queued:
                await self._progress.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """POST queued facts one at a time, in order, until cancelled."""
        task_status.started()
        async for fact in self._receive:
            body = json.dumps(
                {"event": event_name(fact), "topic": fact.topic, "fact": msgspec.to_builtins(fact)}
            ).encode()
            try:
                await trio.to_thread.run_sync(self._post, body, abandon_on_cancel=True)
                self.delivered += 1
            except (OSError, urllib.error.URLError) as error:
                self.failed += 1
                self.ctx.log.warning(
                    "webhook POST failed",
                    extra={"url": self.options.url, "event": event_name(fact), "error": error},
                )
            self._progress.set()
            self._progress = trio.Event()

    def _post(self, body: bytes) -> Any:
        request = urllib.request.Request(
            self.options.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "carte-webhook"},
        )
        with urllib.request.urlopen(request, timeout=self.options.timeout) as response:
            return response.status
