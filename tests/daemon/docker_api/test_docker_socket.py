"""The Docker endpoint is off by default and `carte daemon --docker-socket PATH` turns it on."""

from __future__ import annotations

import json
import shutil
import stat

import pytest
from support.daemon import Daemon, DaemonFactory, UnixHTTPConnection, make_workdir

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
        connection = UnixHTTPConnection(path)
        try:
            connection.request("GET", "/v1.41/version")
            answer = connection.getresponse()
            version = json.loads(answer.read())
        finally:
            connection.close()
        assert answer.status == 200 and version["ApiVersion"] == "1.41"
        assert daemon.stop() == 0
        assert not path.exists()
    finally:
        if daemon.process and daemon.process.poll() is None:
            daemon.stop()
        shutil.rmtree(daemon.workdir, ignore_errors=True)
