"""Example plugin: POST selected facts as JSON to a webhook URL.

Written only against `carte.plugins.api` (plus the standard library and msgspec), as the
example for plugin authors. Configure it in carte.yaml::

    handlers:
      options:
        webhook:
          url: http://127.0.0.1:9000/hook
          events: [ContainerExited, daemon]   # names, topics or topic prefixes; empty = all
          timeout: 5

Without a url the handler skips itself ("no url configured"). Each matching fact is POSTed
as ``{"event": name, "topic": topic, "fact": {...}}``. Facts are queued (up to
`queue_size`) so a slow webhook never slows the daemon's bus; when the queue is full the fact
is dropped and a warning logged. A failed POST is logged and not retried.
"""

import json
import urllib.error
import urllib.request
from typing import Any

import msgspec
import trio

from carte.plugins.api import Fact, Handler, HandlerContext, event_name, on


class WebhookOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = ""
    events: list[str] = []
    timeout: float = 5.0
    queue_size: int = 1000


class WebhookHandler(Handler):
    """Forwards facts to `handlers.options.webhook.url`."""

    name = "webhook"

    def __init__(self, ctx: HandlerContext) -> None:
        super().__init__(ctx)
        self.options = WebhookOptions()
        self._options_error = ""
        try:
            self.options = msgspec.convert(dict(ctx.options), WebhookOptions)
        except msgspec.ValidationError as error:
            self._options_error = f"handlers.options.webhook: {error}; fix carte.yaml"
        self._send, self._receive = trio.open_memory_channel[Fact](max(self.options.queue_size, 1))
        self.delivered = 0
        self.failed = 0

    async def check(self) -> str | None:
        if self._options_error:
            return self._options_error
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
        if not self.wants(fact):
            return
        try:
            self._send.send_nowait(fact)
        except trio.WouldBlock:
            self.ctx.log.warning(
                "webhook queue full; fact dropped",
                extra={"event": event_name(fact), "queue_size": self.options.queue_size},
            )

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

    def _post(self, body: bytes) -> Any:
        request = urllib.request.Request(
            self.options.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "carte-webhook"},
        )
        with urllib.request.urlopen(request, timeout=self.options.timeout) as response:
            return response.status
