"""Ceilings a container's own flags meet, and an upload the daemon cuts (issue 11).

- `-p` ranges and `--ulimit` values are bounded by `containers.max_ports` and
  `containers.max_ulimit` in carte.yaml: over them, one line names the flag, the ceiling and
  the key, and nothing is created.
- An upload over the API's `max_upload_body` is answered 413 while the client still sends;
  the client shows that answer (it reported a broken pipe, or nothing at all).
"""

from __future__ import annotations

from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = """\
containers:
  max_ports: 8
  max_ulimit: 65536
handlers:
  options:
    api:
      max_upload_body: 8388608
"""


limited, carte = daemon_fixtures("limited", config=CONFIG)


def refused(carte: Daemon, *argv: str) -> str:
    """The one line a refused client command printed; nothing was created."""
    result = carte.client(*argv)
    assert result.returncode != 0, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert ok(carte.client("ps", "-aq")) == ""
    return result.stderr


def test_published_ports_over_the_ceiling_are_refused_before_create(carte: Daemon) -> None:
    line = refused(carte, "create", "-p", "9000-9008:9000-9008", "busybox", "true")
    assert "-p publishes 9 ports" in line
    assert "ceiling of 8" in line and "containers.max_ports" in line
    ok(carte.client("create", "--name", "eight", "-p", "9000-9007:9000-9007", "busybox", "true"))


def test_ulimits_over_the_ceiling_are_refused_before_create(carte: Daemon) -> None:
    line = refused(carte, "create", "--ulimit", "nofile=1024:70000", "busybox", "true")
    assert "--ulimit nofile=1024:70000" in line
    assert "65536" in line and "containers.max_ulimit" in line
    made = ok(carte.client("create", "--ulimit", "nofile=512:1024", "busybox", "true"))
    assert ok(carte.client("start", "-a", made.strip())) == ""


def test_an_upload_over_the_limit_shows_the_daemons_413_line(carte: Daemon, tmp_path: Path) -> None:
    big = tmp_path / "big.tar"
    big.write_bytes(b"\0" * (32 << 20))  # 4 x max_upload_body
    for argv in (["import", "-", "big"], ["load"]):  # the whole body, then a streamed one
        with big.open("rb") as stdin:
            result = carte.client(*argv, stdin=stdin, timeout=60)
        assert result.returncode == 1, (argv, result)
        line = result.stderr.strip().splitlines()[-1]  # load says "Loading (SIZE)" first
        assert line.startswith("carte: request body of POST"), (argv, result.stderr)
        assert "8 MiB" in line and "max_upload_body" in line, result.stderr
        assert "Traceback" not in result.stderr
    assert "big" not in ok(carte.client("images"))
