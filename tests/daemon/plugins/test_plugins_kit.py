"""Plugins tested in-process with `carte.plugins.testing`: the example plugin written only
against `carte.plugins.api`, the webhook plugin against a real HTTP server on loopback, and
the facts a plugin gets at start and at stop (issue 11 item 18) under the real supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from exit_counter import ExitCounter

from carte.api.containers import ContainerConfig, ContainerDetails, ContainerState
from carte.engine import Bus, Config, ConfigError, HandlerContext, Roster, Supervisor
from carte.plugins.api import (
    ContainerExited,
    DaemonStarted,
    DaemonStopping,
    Handler,
    InspectContainer,
    NotFound,
)
from carte.plugins.testing import plugin_context, run_plugin
from carte.plugins.webhook import WebhookHandler


def exited(container_id: str, code: int) -> ContainerExited:
    return ContainerExited(id=container_id, name=f"c-{container_id}", exit_code=code)


async def inspect(command: InspectContainer) -> ContainerDetails:
    if command.ref == "gone":
        raise NotFound('no such container: "gone"')
    return ContainerDetails(
        id=command.ref,
        name=f"c-{command.ref}",
        created="",
        image="web:1",
        image_id="sha256:1",
        config=ContainerConfig(image="web:1"),
        state=ContainerState(status="exited"),
    )


async def test_the_example_plugin_counts_typed_container_exits() -> None:
    async with run_plugin(ExitCounter) as plugin:
        plugin.respond(InspectContainer, inspect)
        await plugin.publish(exited("a", 0))
        await plugin.publish(exited("b", 3))
        await plugin.publish(exited("gone", 1))
        assert plugin.handler.by_image == {"web:1": 2, "(removed)": 1}
        assert plugin.status.state == "running"


async def test_the_example_plugin_gets_its_typed_options() -> None:
    async with run_plugin(ExitCounter, options={"only_failures": True}) as plugin:
        plugin.respond(InspectContainer, inspect)
        await plugin.publish(exited("a", 0))
        await plugin.publish(exited("b", 3))
        assert plugin.handler.by_image == {"web:1": 1}


async def test_bad_plugin_options_are_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r'"handlers\.options\.exit-counter\.only_failures" must'):
        async with run_plugin(ExitCounter, options={"only_failures": "sometimes"}):
            pass
    with pytest.raises(
        ConfigError, match=r'unknown key "only_failure" in "handlers\.options\.exit'
    ):
        async with run_plugin(ExitCounter, options={"only_failure": True}):
            pass


async def test_a_hand_made_context_decodes_the_options(tmp_path: Path) -> None:
    from carte.engine import open_sqlite_store

    async with open_sqlite_store(":memory:") as store:
        ctx = plugin_context(
            ExitCounter, store=store, options={"only_failures": True}, root=tmp_path
        )
        assert ExitCounter(ctx).ctx.options.only_failures is True


class Announcer(Handler):
    """Stands for the containers handler: publishes an exit it found while starting."""

    name = "announcer"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.ctx.bus.publish(exited("found-at-start", 137))
        task_status.started()
        await trio.sleep_forever()


async def test_a_plugin_starting_late_receives_the_facts_published_before_it(
    tmp_path: Path,
) -> None:
    """Item 18: facts published while the daemon starts reach a plugin that starts later."""
    from carte.engine import open_sqlite_store

    async with open_sqlite_store(":memory:") as store:
        bus = Bus()
        ctx = HandlerContext(
            bus=bus, store=store, config=Config(), root=tmp_path, run_root=tmp_path / "run"
        )
        bus.attach("test", {InspectContainer: inspect})
        supervisor = Supervisor(Roster([Announcer, ExitCounter]).plan(), ctx)
        await bus.publish(DaemonStarted(id="daemon", pid=1, version="t"))
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            with trio.fail_after(5):
                await supervisor.announce(DaemonStopping(id="daemon", reason="SIGTERM"))
            nursery.cancel_scope.cancel()
    counter = supervisor_instances(ExitCounter)
    assert counter.by_image == {"web:1": 1}
    assert counter.said_goodbye


def supervisor_instances(kind: type[ExitCounter]) -> ExitCounter:
    return kind.last  # type: ignore[attr-defined, no-any-return]


@pytest.fixture(autouse=True)
def remember_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ExitCounter.__init__

    def init(self: ExitCounter, ctx: HandlerContext) -> None:
        original(self, ctx)
        ExitCounter.last = self  # type: ignore[attr-defined]

    monkeypatch.setattr(ExitCounter, "__init__", init)


# --- the webhook plugin against a real HTTP server on loopback ------------------------------


async def test_webhook_posts_daemon_stopping_before_it_is_stopped(
    hook_url: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = hook_url
    options = {"url": url, "events": ["container", "DaemonStopping"]}
    async with run_plugin(WebhookHandler, options=options) as plugin:
        await plugin.publish(exited("a", 1))
        await plugin.publish(DaemonStarted(id="daemon", pid=1, version="t"))  # not selected
        with trio.fail_after(10):
            await plugin.publish(DaemonStopping(id="daemon", reason="SIGTERM"))
        # publish returned: both POSTs were answered, nothing is left in the queue
        assert [r["event"] for r in received] == ["ContainerExited", "DaemonStopping"]
        assert received[0]["fact"]["exit_code"] == 1 and received[0]["topic"] == "container.exited"
        assert plugin.handler.delivered == 2


async def test_webhook_without_url_skips_itself_and_bad_options_are_refused() -> None:
    async with run_plugin(WebhookHandler) as plugin:
        assert plugin.status.state == "skipped"
        assert "no url configured" in plugin.status.reason
    with pytest.raises(ConfigError, match=r'"handlers\.options\.webhook\.timeout" must be a'):
        async with run_plugin(WebhookHandler, options={"url": "http://x", "timeout": "soon"}):
            pass
