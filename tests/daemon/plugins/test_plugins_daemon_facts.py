"""Issue 11 item 18, with a real daemon and the webhook plugin posting to a real HTTP server on
loopback: a container that exits while the daemon is down has its `ContainerExited` delivered
once the daemon is back (the containers handler publishes it before the plugin has started),
and every graceful stop delivers `DaemonStopping` before the daemon exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.containers import ok, wait_for
from support.daemon import DaemonFactory, make_workdir


def test_webhook_gets_exits_from_while_the_daemon_was_down_and_every_daemon_stopping(
    daemons: DaemonFactory, busybox_tar: Path, hook_url: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = hook_url
    config = (
        f"handlers:\n  options:\n    webhook:\n      url: {url}\n"
        "      events: [ContainerExited, DaemonStopping]\n"
    )
    workdir = make_workdir()
    daemons.workdirs.append(workdir)

    def seen(event: str) -> list[dict[str, Any]]:
        return [r["fact"] for r in received if r["event"] == event]

    daemon = daemons(config=config, workdir=workdir)
    ok(daemon.client("import", str(busybox_tar), "busybox"))
    argv = ("run", "-d", "--network", "none", "busybox", "sh", "-c", "sleep 1; exit 7")
    container = ok(daemon.client(*argv)).strip()
    assert daemon.stop() == 0
    assert len(seen("DaemonStopping")) == 1, received  # posted before the daemon exited
    exit_file = daemon.run_root / "runtime" / container / "exit.json"
    wait_for(exit_file.exists, what="the container to exit while the daemon is down")
    assert seen("ContainerExited") == []

    again = daemons(config=config, workdir=workdir)
    wait_for(lambda: seen("ContainerExited"), timeout=10, what="ContainerExited at the webhook")
    [exited] = seen("ContainerExited")
    assert (exited["id"], exited["exit_code"], exited["requested"]) == (container, 7, False)
    ok(again.client("rm", container))
    assert again.stop() == 0
    assert len(seen("DaemonStopping")) == 2, received

    third = daemons(config=config, workdir=workdir)
    assert third.stop() == 0
    assert len(seen("DaemonStopping")) == 3, received
    assert len(seen("ContainerExited")) == 1
