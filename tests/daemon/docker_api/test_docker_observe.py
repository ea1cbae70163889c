"""`docker stats --no-stream`, `docker top`, `docker update`, `docker events` (since/until/
filter), `docker system df`, `ps -s` and the prunes, `docker system prune -f` included, against
Carte's Docker socket."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest
from support.containers import wait_for

DockerCli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


def test_stats_top_and_update(docker: DockerCli) -> None:
    started = docker("run", "-d", "--name", "busy", "--memory", "64m", "busybox",
                     "sh", "-c", "while :; do :; done")  # fmt: skip
    assert started.returncode == 0, started.stderr
    shown = docker("stats", "--no-stream", "--format", "{{json .}}", "busy", timeout=30)
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)
    assert row["Name"] == "busy"
    assert row["MemUsage"].endswith("/ 64MiB"), row
    assert float(row["CPUPerc"].rstrip("%")) > 1, row  # a busy loop (the machine is shared)
    assert int(row["PIDs"]) >= 1
    top = docker("top", "busy")
    assert top.returncode == 0, top.stderr
    header, *processes = top.stdout.splitlines()
    assert header.split()[:3] == ["UID", "PID", "PPID"]
    assert any("while :" in line for line in processes), top.stdout
    updated = docker("update", "--memory", "96m", "--memory-swap", "192m", "--restart", "always",
                     "busy")  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    limits = docker("inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
                    "busy")  # fmt: skip
    assert limits.stdout.split() == [str(96 << 20), "always"], limits.stderr
    shown = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", "busy", timeout=30)
    assert shown.stdout.strip().endswith("/ 96MiB"), shown.stderr
    refused = docker("update", "--blkio-weight", "300", "busy")
    assert refused.returncode != 0 and "BlkioWeight" in refused.stderr
    assert docker("rm", "-f", "busy").returncode == 0
    gone = docker("stats", "--no-stream", "busy")
    assert gone.returncode != 0 and "busy" in gone.stderr


def test_events_since_until_and_filters(docker: DockerCli, docker_env: dict[str, str]) -> None:
    since = time.time() - 0.5
    ran = docker("run", "--name", "evented", "busybox", "true")
    assert ran.returncode == 0, ran.stderr
    assert docker("rm", "evented").returncode == 0
    assert docker("network", "create", "evnet").returncode == 0
    assert docker("network", "rm", "evnet").returncode == 0
    until = time.time() + 0.5
    window = ("--since", f"{since:.3f}", "--until", f"{until:.3f}")
    shown = docker("events", *window, "--filter", "container=evented",
                   "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "container create evented", "container start evented", "container die evented",
        "container destroy evented",
    ]  # fmt: skip
    networks = docker("events", *window, "--filter", "type=network", "--filter", "event=destroy",
                      "--format", "{{.Action}} {{.Actor.Attributes.name}}")  # fmt: skip
    assert networks.stdout.splitlines() == ["destroy evnet"], networks.stderr
    refused = docker("events", *window, "--filter", "scope=swarm")
    assert refused.returncode != 0 and "scope" in refused.stderr
    watch = [
        "docker",
        "events",
        "--filter",
        "event=start",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]
    with subprocess.Popen(watch, stdout=subprocess.PIPE, text=True, env=docker_env) as live:
        try:
            time.sleep(0.5)
            assert docker("run", "--rm", "--name", "live", "busybox", "true").returncode == 0
            assert live.stdout is not None and live.stdout.readline() == "live\n"
        finally:
            live.kill()


def test_prunes(docker: DockerCli) -> None:
    assert docker("run", "--name", "done1", "busybox", "true").returncode == 0
    assert docker("run", "-d", "--name", "alive", "busybox", "sleep", "300").returncode == 0
    assert docker("network", "create", "unused").returncode == 0
    assert docker("volume", "create", "spare").returncode == 0
    pruned = docker("container", "prune", "-f")
    assert pruned.returncode == 0, pruned.stderr
    assert "Deleted Containers:" in pruned.stdout
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert "done1" not in names and "alive" in names
    assert "spare" in docker("volume", "prune", "-f").stdout
    assert "spare" not in docker("volume", "ls", "-q").stdout.split()
    assert docker("run", "--name", "done2", "busybox", "true").returncode == 0
    assert docker("network", "create", "unused2").returncode == 0
    system = docker("system", "prune", "-f")
    assert system.returncode == 0, system.stderr
    assert "unused" in system.stdout and "unused2" in system.stdout
    networks = docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert "unused" not in networks and "bridge" in networks
    names = docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert names == ["alive"]
    assert docker("image", "inspect", "busybox").returncode == 0  # in use, and tagged
    assert docker("rm", "-f", "alive").returncode == 0


def test_system_df(docker: DockerCli) -> None:
    assert docker("volume", "create", "dfvol").returncode == 0
    script = "dd if=/dev/zero of=/big bs=1M count=3 && cp /big /data/ && sleep 300"
    started = docker("run", "-d", "--name", "writer", "-v", "dfvol:/data", "busybox",
                     "sh", "-c", script)  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_for(lambda: docker("exec", "writer", "test", "-s", "/data/big").returncode == 0,
             what="the writes")  # fmt: skip
    shown = docker("system", "df", "--format", "{{json .}}")
    assert shown.returncode == 0, shown.stderr
    rows = {row["Type"]: row for row in map(json.loads, shown.stdout.splitlines())}
    images = docker("images", "-q").stdout.split()
    assert (rows["Images"]["TotalCount"], rows["Images"]["Active"]) == (str(len(images)), "1")
    assert (rows["Containers"]["TotalCount"], rows["Containers"]["Active"]) == ("1", "1")
    assert rows["Containers"]["Size"].endswith("MB") and float(rows["Containers"]["Size"][:-2]) >= 3
    assert rows["Local Volumes"]["TotalCount"] == "1" and rows["Local Volumes"]["Active"] == "1"
    assert float(rows["Local Volumes"]["Size"][:-2]) >= 3, rows["Local Volumes"]
    sized = docker("ps", "-s", "--filter", "name=writer", "--format", "{{.Size}}").stdout
    assert sized.endswith("B)\n") and float(sized.split("MB")[0]) >= 3, sized
    rw = docker("inspect", "-s", "-f", "{{.SizeRw}} {{.SizeRootFs}}", "writer").stdout.split()
    assert 3 << 20 <= int(rw[0]) < int(rw[1]), rw
    assert docker("rm", "-f", "writer").returncode == 0
    assert docker("volume", "rm", "dfvol").returncode == 0
