"""The client where Docker users reach for Docker's shapes, against a real daemon: `inspect`
templates written for `docker inspect`, `--format` after the command, `system prune`,
`carte logs SERVICE`, and the one-line refusals (`-p 99999:80`)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.92.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


shape_daemon, carte = daemon_fixtures(
    "shape_daemon", config=CONFIG, stacks=True, networks=True, volumes=True
)


def test_inspect_templates_written_for_docker(carte: Daemon) -> None:
    ok(carte.client("network", "create", "back"))
    run = carte.client(
        "run", "-d", "--name", "shaped", "--network", "back", "-e", "MODE=blue", "-m", "64m",
        "-v", "data:/data", "-l", "tier.name=db", "busybox", "sleep", "600",
    )  # fmt: skip
    container_id = ok(run).strip()

    def shape(template: str) -> str:
        return ok(carte.client("inspect", "-f", template, "shaped")).rstrip("\n")

    assert shape("{{.Id}} {{.Name}} {{.State.Status}}") == f"{container_id} /shaped running"
    ip = shape("{{.NetworkSettings.IPAddress}}")
    assert ip.startswith("10.92.")
    assert shape("{{.NetworkSettings.Networks.back.IPAddress}}") == ip
    assert shape("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}") == ip
    assert shape("{{range $name, $net := .NetworkSettings.Networks}}{{$name}}{{end}}") == "back"
    inside = ok(carte.client("exec", "shaped", "ip", "-4", "-o", "addr", "show", "eth0"))
    assert f" {ip}/" in inside  # the address the template gives is the container's own
    assert "MODE=blue" in json.loads(shape("{{json .Config.Env}}"))
    assert shape("{{.HostConfig.Memory}}") == str(64 * 1024 * 1024)
    assert shape('{{index .Config.Labels "tier.name"}}') == "db"
    mounts = json.loads(shape("{{json .Mounts}}"))
    assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == [
        ("volume", "data", "/data")
    ]
    assert shape("{{if .State.Running}}up{{else}}down{{end}}") == "up"
    # the whole document has Docker's keys beside Carte's own
    document = json.loads(ok(carte.client("inspect", "shaped")))[0]
    assert document["State"]["Pid"] == document["state"]["pid"] > 0
    bad = carte.client("inspect", "-f", "{{range .Mounts}}", "shaped")
    assert bad.returncode == 1 and len(bad.stderr.splitlines()) == 1
    assert "template parsing error" in bad.stderr and "Traceback" not in bad.stderr


def test_format_after_the_command(carte: Daemon) -> None:
    info = json.loads(ok(carte.client("info", "--format", "{{json .}}")))
    assert info["socket"] == str(carte.socket)
    assert ok(carte.client("info", "--format", "{{.Version}}")).strip() == info["version"]
    assert json.loads(ok(carte.client("info", "--format", "json")))["pid"] == info["pid"]
    version = ok(carte.client("version", "--format", "{{.Server.ApiVersion}}")).strip()
    assert version == "1"
    ok(carte.client("run", "-d", "--name", "listed", "busybox", "sleep", "600"))
    lines = ok(carte.client("ps", "--format", "json")).splitlines()  # one object a line
    assert [json.loads(line)["name"] for line in lines] == ["listed"]


def test_system_prune(carte: Daemon) -> None:
    ok(carte.client("run", "--name", "done", "busybox", "true"))
    ok(carte.client("run", "-d", "--name", "alive", "busybox", "sleep", "600"))
    ok(carte.client("network", "create", "unused"))
    ok(carte.client("volume", "create", "spare"))
    refused = subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", "system", "prune"],
        input="n\n", capture_output=True, text=True, timeout=30, env=carte.env,
    )  # fmt: skip
    assert refused.returncode == 0 and "Are you sure you want to continue? [y/N]" in refused.stderr
    assert "done" in ok(carte.client("ps", "-a", "--format", "{{.Names}}"))
    pruned = ok(carte.client("system", "prune", "-f"))
    assert "Deleted Containers:" in pruned and "Deleted Networks:" in pruned
    assert "unused" in pruned and "Total reclaimed space:" in pruned
    assert ok(carte.client("ps", "-a", "--format", "{{.Names}}")).split() == ["alive"]
    assert "unused" not in ok(carte.client("network", "ls", "--format", "{{.Name}}")).split()
    assert "spare" in ok(carte.client("volume", "ls", "-q")).split()  # without --volumes
    ok(carte.client("create", "--name", "anon", "-v", "/scratch", "busybox", "true"))
    ok(carte.client("rm", "anon"))
    assert len(ok(carte.client("volume", "ls", "-q")).split()) == 2
    ok(carte.client("system", "prune", "-f", "--volumes"))  # anonymous volumes only
    assert ok(carte.client("volume", "ls", "-q")).split() == ["spare"]


def test_logs_of_a_service_by_its_name(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  talker:\n    image: busybox\n"
        '    command: ["sh", "-c", "echo said $$HOSTNAME; exec sleep 600"]\n'
        "    deploy:\n      replicas: 2\n"
    )
    ok(carte.client("apply", "-f", str(tmp_path / "compose.yaml"), "-n", "chat", timeout=90))

    def both() -> bool:
        return ok(carte.client("logs", "talker")).count("said ") == 2

    wait_for(both, 60, "both replicas' lines")
    lines = ok(carte.client("logs", "talker")).splitlines()
    assert all(line.startswith("chat_talker_") and " | said " in line for line in lines)
    missing = carte.client("logs", "nobody")
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1


def test_port_out_of_range_is_one_line(carte: Daemon) -> None:
    started = time.monotonic()
    refused = carte.client("run", "-p", "99999:80", "busybox", "true")
    assert refused.returncode == 125
    assert refused.stderr == 'carte: invalid -p "99999:80": port 99999 is out of range (1-65535)\n'
    assert ok(carte.client("ps", "-aq")) == ""  # nothing was created
    assert time.monotonic() - started < 10


def test_add_host_and_privileged(carte: Daemon) -> None:
    hosts = ok(carte.client("run", "--rm", "--add-host", "db:10.1.2.3", "busybox", "cat",
                            "/etc/hosts"))  # fmt: skip
    assert any(line.split() == ["10.1.2.3", "db"] for line in hosts.splitlines()), hosts
    bad = carte.client("run", "--rm", "--add-host", "db", "busybox", "true")
    assert bad.returncode == 125 and bad.stderr.startswith('carte: invalid --add-host "db"')
    status = ok(carte.client("run", "--rm", "--privileged", "busybox", "cat", "/proc/self/status"))
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    plain = ok(carte.client("run", "--rm", "busybox", "cat", "/proc/self/status"))
    plain_fields = dict(line.split(":\t", 1) for line in plain.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) > int(plain_fields["CapEff"], 16)
    assert fields["Seccomp"].strip() == "0" and plain_fields["Seccomp"].strip() == "2"
    ok(carte.client("run", "-d", "--name", "priv", "--privileged", "busybox", "sleep", "60"))
    assert ok(carte.client("inspect", "-f", "{{.HostConfig.Privileged}}", "priv")) == "true\n"


def test_stats_net_and_block_io(carte: Daemon) -> None:
    ok(carte.client("run", "-d", "--name", "io", "busybox", "sleep", "600"))
    # writes and traffic on the container's interface
    ok(carte.client("exec", "io", "dd", "if=/dev/zero", "of=/written", "bs=1M", "count=3",
                    "oflag=direct"))  # fmt: skip
    gateway = "$(ip route | awk '/default/ {print $3}')"
    carte.client("exec", "io", "sh", "-c", f"timeout 3 wget -q -O- http://{gateway}:9/")
    reading = json.loads(ok(carte.client("--format", "json", "stats", "--no-stream", "io")))[0]
    assert reading["net_rx_bytes"] > 0 and reading["net_tx_bytes"] > 0
    # the container's own cgroup is read (cgroup v1 blkio counts direct I/O only, so the
    # amount is the kernel's to say; never the host's totals)
    assert reading["block_read_bytes"] >= 0 and reading["block_write_bytes"] >= 0
    lines = ok(carte.client("stats", "--no-stream", "io")).splitlines()
    columns = [c.strip() for c in lines[1].split("   ") if c.strip()]
    assert columns[5].count(" / ") == 1 and columns[5] != "--"
    assert columns[6].count(" / ") == 1 and columns[6] != "--"


def test_network_ls_quiet_ids_no_trunc_and_filters(carte: Daemon) -> None:
    made = ok(carte.client("network", "create", "-l", "tier=front", "shape-front")).strip()
    ok(carte.client("network", "create", "shape-back"))
    try:
        quiet = ok(carte.client("network", "ls", "-q")).split()
        assert made[:12] in quiet and all(len(i) == 12 for i in quiet), quiet  # ids, as Docker
        assert made in ok(carte.client("network", "ls", "-q", "--no-trunc")).split()

        def names(*filters: str) -> list[str]:
            given = [a for f in filters for a in ("-f", f)]
            listed = ok(carte.client("network", "ls", *given, "--format", "{{.Name}}"))
            return sorted(listed.split())

        assert names("name=shape-") == ["shape-back", "shape-front"]
        assert names("label=tier=front") == ["shape-front"]
        assert names("label=tier") == ["shape-front"]
        assert names(f"id={made[:6]}") == ["shape-front"]
        assert names("name=shape-", "label=tier=back") == []
        assert names("name=front", "name=back") == ["shape-back", "shape-front"]
        assert "bridge" in names("type=builtin") and "shape-back" not in names("type=builtin")
        assert "shape-back" in names("type=custom", "dangling=true")
        bad = carte.client("network", "ls", "-f", "colour=red")
        assert bad.returncode == 1 and 'invalid filter "colour=red"' in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        carte.client("network", "rm", "shape-front", "shape-back")
