"""`--format` templates as Docker users copy them from Docker's docs and scripts, against a
real daemon: Go's functions and pipelines, values printed as Go prints them, compact `json`,
and list commands (`ps`, `images`, `network ls`, `volume ls`, `stats`) that take a template
or `table TEMPLATE` (headers as Docker names them)."""

from __future__ import annotations

import json

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.232.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'

compat_daemon, carte = daemon_fixtures(
    "compat_daemon", config=CONFIG, stacks=False, networks=True, volumes=True
)


def test_inspect_templates_from_docker_docs(carte: Daemon) -> None:
    ok(carte.client(
        "run", "-d", "--name", "site", "-p", "127.0.0.1:18231:80", "-l", "app=web",
        "-e", "MODE=blue", "busybox", "httpd", "-f", "-p", "80",
    ))  # fmt: skip

    def shape(template: str) -> str:
        return ok(carte.client("inspect", "-f", template, "site")).rstrip("\n")

    # values print as Go prints them, json is compact
    assert shape("{{.Config.Cmd}}") == "[httpd -f -p 80]"
    assert shape("{{.Config.Labels}}") == "map[app:web]"
    assert shape("{{json .Config.Labels}}") == '{"app":"web"}'
    assert shape("{{json .NetworkSettings.Ports}}") == (
        '{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":"18231"}]}'
    )
    # the idioms of Docker's docs and of scripts
    assert shape("{{range .Config.Env}}{{println .}}{{end}}").endswith("\nMODE=blue")
    assert shape('{{join .Args " "}}') == "-f -p 80"
    assert shape("{{len .Mounts}}") == "0"
    assert shape('{{(index (index .HostConfig.PortBindings "80/tcp") 0).HostPort}}') == "18231"
    assert shape('{{.Name | printf "%s!"}}') == "/site!"
    assert shape('{{printf "%-6s|%d" .State.Status .State.ExitCode}}') == "running|0"
    assert shape('{{if eq .State.Status "running"}}up{{else}}down{{end}}') == "up"
    assert shape("{{if not .State.Paused}}free{{end}}") == "free"
    assert shape("{{.State.Status | upper}}") == "RUNNING"
    # an unknown function or an unclosed parenthesis: one line, exit 1, no traceback
    for bad in ("{{nope .Name}}", "{{(.Name}}", '{{join .Args "}}'):
        shown = carte.client("inspect", "-f", bad, "site")
        assert shown.returncode == 1 and len(shown.stderr.splitlines()) == 1, shown.stderr
        assert "template parsing error" in shown.stderr and "Traceback" not in shown.stderr
    ids = json.loads(ok(carte.client("inspect", "site")))[0]["Id"]
    assert shape("{{.Id}}") == ids


def test_list_commands_take_docker_templates(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "first", "-l", "tier=db", "busybox", "sleep", "600"))
    ok(carte.client("run", "-d", "--name", "second", "busybox", "sleep", "600"))
    ok(carte.client("network", "create", "backnet"))
    ok(carte.client("volume", "create", "keep"))

    def lines(*args: str) -> list[str]:
        return ok(carte.client(*args)).splitlines()

    # ps: a template per container, `table` adds Docker's headers, the newest first
    assert lines("ps", "--format", "{{.Names}} {{.Labels}}") == ["second ", "first tier=db"]
    table = lines("ps", "--format", "table {{.ID}}\t{{.Names}}\t{{.Status}}")
    assert table[0].split() == ["CONTAINER", "ID", "NAMES", "STATUS"]
    assert [row.split()[1] for row in table[1:]] == ["second", "first"]
    assert table[1].index("second") == table[0].index("NAMES")  # aligned columns
    assert json.loads(lines("ps", "--format", "json")[0])["Names"] == "second"
    # -n / -l: the last created, in any state
    ok(carte.client("run", "--name", "gone", "busybox", "true"))
    assert lines("ps", "-l", "--format", "{{.Names}} {{.State}}") == ["gone exited"]
    assert lines("ps", "-n", "2", "--format", "{{.Names}}") == ["gone", "second"]
    # images, network ls, volume ls, stats
    assert lines("images", "--format", "{{.Repository}}:{{.Tag}}") == ["busybox:latest"]
    assert lines("images", "--format", "table {{.Repository}}\t{{.ID}}")[0].split() == [
        "REPOSITORY", "IMAGE", "ID",
    ]  # fmt: skip
    assert "backnet bridge" in lines("network", "ls", "--format", "{{.Name}} {{.Driver}}")
    assert lines("volume", "ls", "--format", "table {{.Name}}\t{{.Driver}}") == [
        "VOLUME NAME   DRIVER", "keep          local",
    ]  # fmt: skip
    stats = lines("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "first")
    assert stats == ["first 1"]
    shown = json.loads(ok(carte.client("stats", "--no-stream", "--format", "{{json .}}", "first")))
    assert shown["Name"] == "first" and shown["MemUsage"].count(" / ") == 1
    # a template it cannot read: one line, exit 1
    bad = carte.client("ps", "--format", "{{nope .Names}}")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert "Traceback" not in bad.stderr
