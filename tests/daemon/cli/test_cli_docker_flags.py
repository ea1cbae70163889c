"""Docker flags scripts pass that the client maps onto what the daemon already does, against a
real daemon and registry (Debian's docker-registry on loopback): `run --dns/--dns-search/
--sysctl/--mac-address/--label-file/--cidfile/-q/--health-start-interval`, `exec --env-file`,
`stop/restart -s`, `pull -q/--platform`, `stats --no-trunc`, `cp -q`, `info/version -f`,
`volume/network inspect -f`, `system df --format` and `network rm -f`."""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.containers import ok, wait_for
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures
from support.registry import RunningRegistry, start_registry

CONFIG = 'network:\n  pools: ["10.176.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


flags_daemon, carte = daemon_fixtures(
    "flags_daemon", config=CONFIG, stacks=False, networks=True, volumes=True
)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("flags-registry") / "open", None)


def one_line_refusal(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 125 with one line on stderr naming `words`, no traceback."""
    assert result.returncode == 125, result
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_run_resolver_sysctl_and_mac_seen_inside(carte: Daemon) -> None:
    ok(carte.client("network", "create", "flagnet"))
    script = (
        "cat /etc/resolv.conf; cat /proc/sys/net/ipv4/ip_unprivileged_port_start;"
        " cat /sys/class/net/eth0/address"
    )
    run = carte.client(
        "run", "--rm", "--network", "flagnet", "--dns", "192.0.2.53", "--dns-search",
        "corp.example", "--sysctl", "net.ipv4.ip_unprivileged_port_start=99",
        "--mac-address", "02:42:AC:11:00:99", "busybox", "sh", "-c", script,
    )  # fmt: skip
    lines = ok(run).splitlines()
    assert "nameserver 192.0.2.53" in lines
    assert any(line.startswith("search") and "corp.example" in line for line in lines)
    assert lines[-2:] == ["99", "02:42:ac:11:00:99"]


def test_run_refuses_what_would_change_the_host(carte: Daemon) -> None:
    host_wide = carte.client("run", "--rm", "--sysctl", "vm.swappiness=1", "busybox", "true")
    one_line_refusal(host_wide, "vm.swappiness", "not namespaced")
    host_net = carte.client(
        "run", "--rm", "--network", "host", "--sysctl", "net.ipv4.ip_forward=0", "busybox", "true"
    )
    one_line_refusal(host_net, "--network host")
    one_line_refusal(carte.client("run", "--rm", "--dns", "ns1", "busybox", "true"), "--dns")
    bad_mac = carte.client("run", "--rm", "--mac-address", "02:42", "busybox", "true")
    one_line_refusal(bad_mac, "--mac-address")
    assert ok(carte.client("ps", "-aq")) == ""  # nothing was created


def test_run_label_file_then_label(carte: Daemon, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("# owners\ntier=db\n\nteam=blue\n")
    create = carte.client(
        "create", "--name", "labelled", "--label-file", str(labels), "-l", "team=red",
        "busybox", "true",
    )  # fmt: skip
    ok(create)
    shown = ok(carte.client("inspect", "-f", "{{json .Config.Labels}}", "labelled"))
    assert json.loads(shown) == {"tier": "db", "team": "red"}  # -l wins over the file
    missing = carte.client("create", "--label-file", str(tmp_path / "nope"), "busybox", "true")
    one_line_refusal(missing, "--label-file", "nope")


def test_run_cidfile(carte: Daemon, tmp_path: Path) -> None:
    cidfile = tmp_path / "cid"
    container_id = ok(
        carte.client("run", "-d", "--cidfile", str(cidfile), "busybox", "sleep", "600")
    ).strip()
    assert cidfile.read_text() == container_id
    again = carte.client("run", "-d", "--cidfile", str(cidfile), "busybox", "sleep", "600")
    one_line_refusal(again, str(cidfile), "exists")
    assert ok(carte.client("ps", "-q", "--no-trunc")).split() == [container_id]
    assert cidfile.read_text() == container_id  # the other container's file is left alone
    failed = tmp_path / "failed"
    refused = carte.client(
        "create", "--cidfile", str(failed), "--pull", "never", "no-such-image:1", "true"
    )
    assert refused.returncode == 125
    assert not failed.exists()  # claimed, then removed when the create failed


def test_run_quiet_pull(carte: Daemon, registry: RunningRegistry) -> None:
    name = f"{registry.host}/flags/bb:quiet"
    ok(carte.client("tag", "busybox", name))
    ok(carte.client("push", name))
    ok(carte.client("rmi", name))
    ran = carte.client("run", "--rm", "-q", name, "echo", "pulled")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "pulled\n"
    assert ran.stderr == ""  # no "Unable to find image", no progress, no digest
    ok(carte.client("image", "inspect", name))  # it was pulled all the same


def test_pull_quiet_and_platform(carte: Daemon, registry: RunningRegistry) -> None:
    name = f"{registry.host}/flags/bb:pulled"
    ok(carte.client("tag", "busybox", name))
    ok(carte.client("push", name))
    ok(carte.client("rmi", name))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    pulled = carte.client("pull", "-q", "--platform", f"linux/{arch}", name)
    assert pulled.returncode == 0, pulled.stderr
    assert (pulled.stdout, pulled.stderr) == (f"{name}\n", "")  # the name alone, for $(...)
    ok(carte.client("image", "inspect", name))
    other = "linux/s390x" if arch != "s390x" else "linux/amd64"
    refused = carte.client("pull", "--platform", other, name)
    assert refused.returncode == 125 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines() == [
        f'carte: --platform "{other}" is not this host\'s platform (linux/{arch}); Carte runs '
        "and builds for the host's platform only (no emulation): drop the flag or use a host of "
        "that kind",
        "See 'carte pull --help'.",
    ]


TRAPPER = (
    'trap "echo got USR1; exit 3" USR1; trap "echo got TERM; exit 9" TERM; echo up;'
    " while :; do sleep 0.1; done"
)


def test_stop_and_restart_with_a_signal(carte: Daemon) -> None:
    """The container's shell traps USR1 and TERM: the exit code says which one stopped it."""
    ok(carte.client("run", "-d", "--name", "trapper", "busybox", "sh", "-c", TRAPPER))
    wait_for(lambda: "up" in ok(carte.client("logs", "trapper")), what="trapper's traps")
    ok(carte.client("stop", "-s", "USR1", "-t", "20", "trapper"))
    assert ok(carte.client("inspect", "-f", "{{.State.ExitCode}}", "trapper")) == "3\n"
    assert "got USR1" in ok(carte.client("logs", "trapper"))
    ok(carte.client("start", "trapper"))
    wait_for(lambda: ok(carte.client("logs", "trapper")).count("up") == 2, what="its restart")
    ok(carte.client("restart", "--signal", "SIGUSR1", "trapper"))
    wait_for(lambda: ok(carte.client("logs", "trapper")).count("up") == 3, what="the restart")
    assert ok(carte.client("logs", "trapper")).count("got USR1") == 2
    ok(carte.client("stop", "trapper"))  # the stop signal (TERM) without -s
    assert ok(carte.client("inspect", "-f", "{{.State.ExitCode}}", "trapper")) == "9\n"
    bad = carte.client("stop", "-s", "NOPE", "trapper")
    assert bad.returncode == 1 and "NOPE" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_exec_env_file(carte: Daemon, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# settings\nMODE=blue\nLEVEL=3\n")
    ok(carte.client("run", "-d", "--name", "envy", "busybox", "sleep", "600"))
    shown = carte.client(
        "exec", "--env-file", str(env_file), "-e", "LEVEL=4", "envy", "sh", "-c",
        'echo "$MODE $LEVEL"',
    )  # fmt: skip
    assert ok(shown) == "blue 4\n"  # -e after the file wins, as in Docker
    missing = carte.client("exec", "--env-file", str(tmp_path / "nope"), "envy", "true")
    assert missing.returncode == 1 and "--env-file" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1


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


def test_run_health_start_interval(carte: Daemon) -> None:
    """With an hour between checks, only the start interval can make it healthy in seconds."""
    check = ["--health-cmd", "true", "--health-interval", "1h", "--health-start-period", "5m"]
    sleeper = ["busybox", "sleep", "600"]
    ok(carte.client("run", "-d", "--name", "patient", *check, *sleeper))
    eager = ["--name", "eager", *check, "--health-start-interval", "200ms"]
    ok(carte.client("run", "-d", *eager, *sleeper))

    def status(name: str) -> str:
        return ok(carte.client("inspect", "-f", "{{.State.Health.Status}}", name)).strip()

    wait_for(lambda: status("eager") == "healthy", timeout=15, what="eager to be healthy")
    assert status("patient") == "starting"  # its first check is an hour away
    bad = carte.client("run", "--rm", *check, "--health-start-interval", "soon", *sleeper)
    assert bad.returncode == 125 and "--health-start-interval" in bad.stderr


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


def shm_kib(output: str) -> int:
    """The size of /dev/shm in KiB from `df -k /dev/shm`."""
    return int(output.strip().splitlines()[-1].split()[1])


def test_shm_size_sizes_dev_shm(carte: Daemon) -> None:
    df = ["busybox", "df", "-k", "/dev/shm"]
    assert shm_kib(ok(carte.client("run", "--rm", *df))) == 65536  # Docker's 64 MiB
    assert shm_kib(ok(carte.client("run", "--rm", "--shm-size", "128m", *df))) == 131072
    shared = ["--shm-size", "32m", "--ipc", "shareable"]
    assert shm_kib(ok(carte.client("run", "--rm", *shared, *df))) == 32768
    one_line_refusal(carte.client("run", "--rm", "--shm-size", "lots", *df), "--shm-size")


def test_group_add_and_domainname(carte: Daemon) -> None:
    shown = "id -G; cat /proc/sys/kernel/domainname"
    ran = ok(carte.client("run", "--rm", "--group-add", "1234", "--group-add", "55",
                          "--domainname", "example.org", "busybox", "sh", "-c", shown))  # fmt: skip
    groups, domain = ran.splitlines()
    assert sorted(groups.split()) == ["0", "1234", "55"] and domain == "example.org"
    ok(carte.client("run", "-d", "--name", "grouped", "--group-add", "1234", "busybox",
                    "sleep", "600"))  # fmt: skip
    try:
        assert "1234" in ok(carte.client("exec", "grouped", "id", "-G")).split()  # exec too
    finally:
        ok(carte.client("rm", "-f", "grouped"))
    unknown = carte.client("run", "--rm", "--group-add", "nosuchgroup", "busybox", "true")
    assert unknown.returncode == 125 and "nosuchgroup" in unknown.stderr, unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_build_rm_and_force_rm_leave_no_container(carte: Daemon, tmp_path: Path) -> None:
    """Old scripts pass `docker build --rm --force-rm`: Carte always removes the RUN steps'
    containers, after a failed step too."""
    before = ok(carte.client("ps", "-aq")).split()
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo built > /f\n")
    ok(carte.client("build", "--rm", "--force-rm", "-t", "rmflags", str(tmp_path), timeout=120))
    assert ok(carte.client("run", "--rm", "rmflags", "cat", "/f")) == "built\n"
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN exit 3\n")
    failed = carte.client("build", "--force-rm", "-t", "rmfails", str(tmp_path), timeout=120)
    assert failed.returncode != 0
    assert ok(carte.client("ps", "-aq")).split() == before
    ok(carte.client("rmi", "rmflags"))


def test_an_ipc_sysctl_with_the_hosts_ipc_namespace_is_refused(carte: Daemon) -> None:
    before = ok(carte.client("ps", "-aq")).split()
    refused = carte.client(
        "run", "--rm", "--ipc", "host", "--sysctl", "kernel.shmmax=1000", "busybox", "true"
    )
    assert refused.returncode == 125 and "kernel.shmmax" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert ok(carte.client("ps", "-aq")).split() == before  # nothing half made
