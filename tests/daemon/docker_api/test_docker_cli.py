"""The Debian `docker` CLI, unmodified, against Carte's Docker API socket."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
from support.daemon import Daemon, UnixHTTPConnection, request_over

DockerCli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


def test_the_cli_negotiates_api_1_41(docker: DockerCli) -> None:
    shown = docker("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["1.41", "1.41"]
    info = docker("info", "--format", "{{.OSType}} {{.LoggingDriver}}")
    assert info.stdout.split() == ["linux", "json-file"], info.stderr


def test_run_detached_ps_logs_inspect_stop_rm(docker: DockerCli) -> None:
    started = docker(
        "run", "-d", "--name", "web", "--label", "tier=front", "busybox",
        "sh", "-c", "echo out; echo err >&2; exec sleep 30",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    listed = docker("ps", "--filter", "label=tier=front", "--format", "{{.Names}} {{.State}}")
    assert listed.stdout.split() == ["web", "running"], listed.stderr
    deadline = time.monotonic() + 5
    while (logs := docker("logs", "web")).stdout != "out\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    shown = docker("inspect", "-f", "{{.State.Status}} {{.Name}} {{.Config.Image}} {{.Id}}", "web")
    assert shown.stdout.split() == ["running", "/web", "busybox", container], shown.stderr
    assert docker("stop", "-t", "1", "web").returncode == 0
    exited = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web")
    assert exited.stdout.split() == ["exited", "137"]
    assert docker("rm", "web").returncode == 0
    gone = docker("inspect", "web")
    assert gone.returncode != 0 and "web" in gone.stderr


def test_logs_follow_ends_when_the_container_stops(docker: DockerCli) -> None:
    started = docker("run", "-d", "busybox", "sh", "-c", "echo a; sleep 1; echo b")
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    followed = docker("logs", "-f", "-t", container, timeout=20)
    lines = followed.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b"], followed.stderr
    assert lines[0][:4].isdigit() and "T" in lines[0].split(" ")[0]
    tailed = docker("logs", "--tail", "1", container)
    assert tailed.stdout == "b\n"
    assert docker("rm", container).returncode == 0


def test_shm_size_group_add_domainname(docker: DockerCli) -> None:
    ran = docker("run", "--rm", "--shm-size", "128m", "busybox", "df", "-k", "/dev/shm")
    assert ran.stdout.splitlines()[-1].split()[1] == "131072", ran.stderr
    shown = "id -G; cat /proc/sys/kernel/domainname"
    ran = docker("run", "--rm", "--group-add", "1234", "--domainname", "example.org",
                 "busybox", "sh", "-c", shown)  # fmt: skip
    assert ran.stdout.split() == ["0", "1234", "example.org"], ran.stderr


def test_volume_driver_options(docker: DockerCli) -> None:
    made = docker("volume", "create", "-o", "type=tmpfs", "-o", "o=size=4m", "small")
    assert made.returncode == 0, made.stderr
    shown = docker("volume", "inspect", "-f", "{{.Options.type}}", "small")
    assert shown.stdout.strip() == "tmpfs", shown.stderr
    ran = docker("run", "--rm", "-v", "small:/s", "busybox", "df", "-k", "/s")
    assert ran.stdout.splitlines()[-1].split()[1] == "4096", ran.stderr
    assert docker("volume", "rm", "small").returncode == 0


def test_a_host_wide_sysctl_is_refused(docker: DockerCli) -> None:
    refused = docker("run", "--rm", "--sysctl", "kernel.hostname=x", "busybox", "true")
    assert refused.returncode != 0 and "kernel.hostname" in refused.stderr, refused.stderr
    allowed = docker("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", "busybox",
                     "cat", "/proc/sys/net/ipv4/ip_forward")  # fmt: skip
    assert allowed.stdout.strip() == "1", allowed.stderr


def test_create_carries_the_host_config(docker: DockerCli) -> None:
    created = docker(
        "create", "--name", "limited", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50",
        "--restart", "on-failure:2", "--cap-drop", "NET_RAW", "--cap-add", "SYS_TIME",
        "--read-only", "--init", "--tmpfs", "/run:size=1m", "--ulimit", "nofile=100:200",
        "-e", "A=1", "-p", "127.0.0.1:18080:80", "--health-cmd", "true", "--network", "none",
        "busybox", "sleep", "5",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    template = (
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} "
        "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}} "
        "{{.HostConfig.CapDrop}} {{.HostConfig.CapAdd}} {{.HostConfig.ReadonlyRootfs}} "
        "{{.HostConfig.Init}} {{.HostConfig.NetworkMode}} "
        '{{(index (index .HostConfig.PortBindings "80/tcp") 0).HostPort}}'
    )
    shown = docker("inspect", "-f", template, "limited")
    assert shown.stdout.split() == [
        str(64 << 20), "500000000", "50", "on-failure:2", "[CAP_NET_RAW]", "[CAP_SYS_TIME]",
        "true", "true", "none", "18080",
    ], shown.stderr  # fmt: skip
    env = docker("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", "limited")
    assert "A=1" in env.stdout.splitlines()
    assert docker("rm", "limited").returncode == 0


def test_what_carte_cannot_honour_is_refused(docker: DockerCli, carte: Daemon) -> None:
    refused = docker("create", "--device", "/dev/null", "busybox", "true")
    assert refused.returncode != 0
    assert "Carte does not support HostConfig.Devices" in refused.stderr
    assert docker("ps", "-aq", "--filter", "status=created").stdout.strip() == ""
    answer = request_over(carte.workdir / "docker.sock", "GET", "/v1.41/swarm")
    assert answer.status == 404
    assert answer.json()["message"].startswith("Carte does not support GET /swarm")


def test_images_networks_volumes(docker: DockerCli) -> None:
    assert docker("tag", "busybox", "mine/bb:1").returncode == 0
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert {"busybox:latest", "mine/bb:1"} <= set(listed.stdout.split()), listed.stderr
    shown = docker("image", "inspect", "-f", "{{.Os}} {{index .RepoTags 0}}", "mine/bb:1")
    assert shown.returncode == 0 and shown.stdout.split()[0] == "linux", shown.stderr
    removed = docker("rmi", "mine/bb:1")
    assert "Untagged: mine/bb:1" in removed.stdout, removed.stderr
    assert docker("network", "create", "--label", "k=v", "back").returncode == 0
    assert "back" in docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    inspected = docker("network", "inspect", "-f", "{{.Driver}} {{.Labels.k}}", "back")
    assert inspected.stdout.split() == ["bridge", "v"], inspected.stderr
    assert docker("network", "rm", "back").returncode == 0
    default = docker("network", "inspect", "-f", "{{.Name}} {{.Driver}}", "bridge")
    assert default.stdout.split() == ["bridge", "bridge"], default.stderr
    assert docker("volume", "create", "data").stdout.strip() == "data"
    assert "data" in docker("volume", "ls", "-q").stdout.split()
    assert docker("volume", "inspect", "-f", "{{.Driver}}", "data").stdout.strip() == "local"
    assert docker("volume", "rm", "data").returncode == 0


def test_unknown_route_reply_is_dockers_error_shape(carte: Daemon) -> None:
    connection = UnixHTTPConnection(carte.workdir / "docker.sock")
    try:
        connection.request("HEAD", "/_ping")
        pinged = connection.getresponse()
        pinged.read()
    finally:
        connection.close()
    assert pinged.getheader("Api-Version") == "1.41"
    assert pinged.getheader("Ostype") == "linux"
    assert pinged.getheader("Docker-Experimental") == "false"
    assert (pinged.getheader("Server") or "").startswith("Carte/")


def test_run_rm_attaches_and_leaves_nothing(docker: DockerCli) -> None:
    """`docker run --rm` (attach over the hijacked connection): output, exit code, and the
    container is gone afterwards."""
    before = docker("ps", "-aq").stdout.split()
    ran = docker("run", "--rm", "busybox", "sh", "-c", "echo hi; echo oops >&2; exit 4")
    assert (ran.returncode, ran.stdout, ran.stderr) == (4, "hi\n", "oops\n")
    assert docker("ps", "-aq").stdout.split() == before


def test_network_alias_connect_and_disconnect(docker: DockerCli) -> None:
    get = "printf 'GET /passwd HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {} 80 | head -1"
    assert docker("network", "create", "front").returncode == 0
    assert docker("network", "create", "back").returncode == 0
    served = docker("run", "-d", "--name", "srv", "--network", "front", "--network-alias", "api",
                    "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")  # fmt: skip
    assert served.returncode == 0, served.stderr
    asked = docker("run", "--rm", "--network", "front", "busybox", "sh", "-c", get.format("api"))
    assert asked.stdout == "HTTP/1.1 200 OK\n", asked.stderr
    assert docker("network", "connect", "--alias", "other", "back", "srv").returncode == 0
    members = docker("network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", "back")
    assert members.stdout.strip() == "srv"
    joined = "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}"
    assert docker("inspect", "-f", joined, "srv").stdout.split() == ["back", "front"]
    asked = docker("run", "--rm", "--network", "back", "busybox", "sh", "-c", get.format("other"))
    assert asked.stdout == "HTTP/1.1 200 OK\n", asked.stderr
    assert docker("network", "disconnect", "back", "srv").returncode == 0
    members = docker("network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", "back")
    assert members.stdout.strip() == ""
    assert docker("inspect", "-f", joined, "srv").stdout.split() == ["front"]
    assert docker("create", "--name", "cold", "busybox", "sleep", "600").returncode == 0
    assert docker("network", "connect", "back", "cold").returncode == 0  # joins at its start
    assert docker("start", "cold").returncode == 0
    members = docker("network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", "back")
    assert members.stdout.strip() == "cold"
    assert docker("rm", "-f", "srv", "cold").returncode == 0
    assert docker("network", "rm", "front", "back").returncode == 0
