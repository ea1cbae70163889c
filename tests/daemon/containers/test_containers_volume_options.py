"""Volumes with Docker's local driver options, against a real daemon: `volume create -o
type=none -o o=bind -o device=DIR` puts a host directory behind a named volume and
`-o type=tmpfs` memory; Compose's `driver_opts` make the same; removing such a volume never
deletes what it mounted; bad options are one line and leave nothing behind; a daemon restart
mounts them again."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.178.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'

options_daemon, carte = daemon_fixtures(
    "options_daemon", config=CONFIG, stacks=True, networks=True, volumes=True
)


def one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def volumes(carte: Daemon) -> list[str]:
    return ok(carte.client("volume", "ls", "-q")).split()


def test_a_bind_volume_writes_to_its_host_directory_and_survives_rm(
    carte: Daemon, tmp_path: Path
) -> None:
    host = tmp_path / "data"
    host.mkdir()
    (host / "before").write_text("kept\n")
    bind = ["-o", "type=none", "-o", "o=bind", "-o", f"device={host}"]
    ok(carte.client("volume", "create", *bind, "hostdata"))
    shown = json.loads(ok(carte.client("volume", "inspect", "hostdata")))[0]
    assert shown["options"] == {"type": "none", "o": "bind", "device": str(host)}
    script = "cat /data/before; echo from-container > /data/written"
    assert ok(carte.client("run", "--rm", "-v", "hostdata:/data", "busybox", "sh", "-c", script))
    assert (host / "written").read_text() == "from-container\n"
    assert carte.stop() == 0  # a restart mounts it again (the volumes directory is re-bound)
    carte.start()
    read = ok(
        carte.client("run", "--rm", "-v", "hostdata:/data", "busybox", "cat", "/data/written")
    )
    assert read == "from-container\n"
    ok(carte.client("volume", "rm", "hostdata"))
    assert (host / "before").read_text() == "kept\n" and (host / "written").exists()
    assert not (carte.root / "volumes" / "hostdata").exists()


def test_a_tmpfs_volume_has_its_size(carte: Daemon) -> None:
    ok(carte.client("volume", "create", "-o", "type=tmpfs", "-o", "o=size=8m", "scratch"))
    df = ok(carte.client("run", "--rm", "-v", "scratch:/s", "busybox", "df", "-k", "/s"))
    assert df.strip().splitlines()[-1].split()[1] == "8192"
    ok(carte.client("volume", "rm", "scratch"))


def test_bad_options_are_one_line_and_leave_nothing(carte: Daemon, tmp_path: Path) -> None:
    before = volumes(carte)
    one_line(carte.client("volume", "create", "-o", "type=nfs", "v1"), "type", "nfs")
    one_line(
        carte.client(
            "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=/no/such", "v2"
        ),
        "/no/such",
        "mkdir",
    )
    one_line(carte.client("volume", "create", "-o", "colour=red", "v3"), "colour")
    one_line(carte.client("volume", "create", "-o", "type=tmpfs", "-o", "o=exec", "v4"), "exec")
    one_line(carte.client("volume", "create", "-o", "novalue", "v5"), "novalue")
    assert volumes(carte) == before
    assert not any((carte.root / "volumes" / n).exists() for n in ("v1", "v2", "v3", "v4"))


def test_compose_driver_opts(carte: Daemon, tmp_path: Path) -> None:
    host = tmp_path / "srv"
    host.mkdir()
    (tmp_path / "compose.yaml").write_text(
        "services:\n  app:\n    image: busybox\n"
        '    command: ["sh", "-c", "echo from-stack > /data/f; exec sleep 600"]\n'
        "    volumes: [data:/data]\n"
        "volumes:\n  data:\n    driver_opts:\n"
        f"      type: none\n      o: bind\n      device: {host}\n"
    )
    up = carte.client("compose", "-f", str(tmp_path / "compose.yaml"), "-p", "opts", "up", "-d")
    assert up.returncode == 0, up.stderr
    deadline = time.monotonic() + 30
    while not (host / "f").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (host / "f").read_text() == "from-stack\n"
    down = carte.client("compose", "-f", str(tmp_path / "compose.yaml"), "-p", "opts", "down", "-v")
    assert down.returncode == 0, down.stderr
    assert "opts_data" not in volumes(carte)
    assert (host / "f").read_text() == "from-stack\n"  # the host's files stay
    (tmp_path / "bad.yaml").write_text(
        "services:\n  app:\n    image: busybox\n    volumes: [data:/data]\n"
        "volumes:\n  data:\n    driver_opts: {type: none, o: bind, device: /no/such}\n"
    )
    bad = carte.client("apply", "-f", str(tmp_path / "bad.yaml"), "-n", "badopts")
    one_line(bad, "data", "/no/such")
    assert "badopts" not in ok(carte.client("stack", "ls"))
    assert not [n for n in ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
                if n.startswith("badopts")]  # fmt: skip
