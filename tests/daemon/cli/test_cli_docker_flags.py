"""Docker flags scripts pass that the client maps onto what the daemon already does, against a
real daemon: `stats --no-trunc`, `cp -q`, `info/version -f`, `volume/network inspect -f`,
`system df --format` and `network rm -f`."""

from __future__ import annotations

import json
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.176.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


flags_daemon, carte = daemon_fixtures(
    "flags_daemon", config=CONFIG, stacks=False, networks=True, volumes=True
)


def test_stats_no_trunc(carte: Daemon) -> None:
    container_id = ok(carte.client("run", "-d", "busybox", "sleep", "600")).strip()
    template = "{{.ID}} {{.Name}}"
    short = ok(carte.client("stats", "--no-stream", "--format", template, container_id))
    assert short.split()[0] == container_id[:12]
    full = ok(
        carte.client("stats", "--no-stream", "--no-trunc", "--format", template, container_id)
    )
    assert full.split()[0] == container_id
    table = ok(carte.client("stats", "--no-stream", "--no-trunc", container_id))
    assert table.splitlines()[1].startswith(container_id + " ")


def test_info_and_version_short_format(carte: Daemon) -> None:
    info = json.loads(ok(carte.client("info", "--format", "{{json .}}")))
    assert ok(carte.client("info", "-f", "{{.Version}}")).strip() == info["version"]
    assert ok(carte.client("version", "-f", "{{.Server.ApiVersion}}")).strip() == "1"


def test_volume_and_network_inspect_format(carte: Daemon) -> None:
    ok(carte.client("volume", "create", "-l", "kind=cache", "shaped-vol"))
    ok(carte.client("network", "create", "--subnet", "10.176.50.0/24", "shaped-net"))
    volume = json.loads(ok(carte.client("volume", "inspect", "shaped-vol")))[0]
    mountpoint = ok(carte.client("volume", "inspect", "-f", "{{.Mountpoint}}", "shaped-vol"))
    assert mountpoint.strip() == volume["mountpoint"] and Path(volume["mountpoint"]).is_dir()
    assert (
        ok(carte.client("volume", "inspect", "--format", '{{index .Labels "kind"}}', "shaped-vol"))
        == "cache\n"
    )
    subnet = ok(carte.client("network", "inspect", "-f", "{{.Name}} {{.Subnet}}", "shaped-net"))
    assert subnet == "shaped-net 10.176.50.0/24\n"
    bad = carte.client("network", "inspect", "-f", "{{if .Name}}", "shaped-net")
    assert bad.returncode == 1 and "template parsing error" in bad.stderr


def test_network_rm_force_skips_missing(carte: Daemon) -> None:
    ok(carte.client("network", "create", "doomed"))
    plain = carte.client("network", "rm", "ghost-net")
    assert plain.returncode == 1 and "ghost-net" in plain.stderr
    forced = carte.client("network", "rm", "-f", "ghost-net", "doomed")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == "doomed\n" and forced.stderr == ""
    assert "doomed" not in ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()


def test_system_df_format(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "busybox", "sleep", "600"))
    table = ok(carte.client("system", "df"))
    shown = ok(carte.client("system", "df", "--format", "{{.Type}}|{{.TotalCount}}|{{.Active}}"))
    rows = [line.split("|") for line in shown.splitlines()]
    assert ["Containers", "1", "1"] in rows and ["Images", "1", "1"] in rows, shown
    assert len(rows) == len(table.splitlines()) - 1  # one line a row, no header
    headed = ok(carte.client("system", "df", "--format", "table {{.Type}}\t{{.Size}}"))
    assert headed.splitlines()[0].split() == ["TYPE", "SIZE"]


def test_cp_quiet(carte: Daemon, tmp_path: Path) -> None:
    ok(carte.client("run", "-d", "--name", "copied", "busybox", "sleep", "600"))
    source = tmp_path / "note"
    source.write_text("hello\n")
    into = carte.client("cp", "-q", str(source), "copied:/tmp/note")
    assert (into.returncode, into.stdout, into.stderr) == (0, "", "")
    assert ok(carte.client("exec", "copied", "cat", "/tmp/note")) == "hello\n"
    out = carte.client("cp", "--quiet", "copied:/tmp/note", str(tmp_path / "back"))
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert (tmp_path / "back").read_text() == "hello\n"
