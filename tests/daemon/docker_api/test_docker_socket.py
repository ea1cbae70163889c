"""The Docker endpoint is off by default and `carte daemon --docker-socket PATH` turns it on."""

from __future__ import annotations

import shutil
import stat

import pytest
from support.daemon import Daemon, DaemonFactory, make_workdir, request_over

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


class _FlagDaemon(Daemon):
    def argv(self) -> list[str]:
        return [*super().argv(), "--docker-socket", str(self.workdir / "d.sock")]


def test_off_by_default(daemons: DaemonFactory) -> None:
    daemon = daemons()
    handlers = {row["name"]: row for row in daemon.request("GET", "/v1/info").json()["handlers"]}
    assert handlers["docker"]["state"] == "skipped"
    assert "--docker-socket" in handlers["docker"]["reason"]
    assert not list(daemon.workdir.rglob("docker*.sock"))


def test_the_flag_opens_the_socket_with_carte_permissions() -> None:
    daemon = _FlagDaemon(make_workdir())
    try:
        daemon.start()
        path = daemon.workdir / "d.sock"
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(daemon.socket.stat().st_mode)
        answer = request_over(path, "GET", "/v1.41/version")
        assert answer.status == 200 and answer.json()["ApiVersion"] == "1.41"
        assert daemon.stop() == 0
        assert not path.exists()
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.stop()
        shutil.rmtree(daemon.workdir, ignore_errors=True)
