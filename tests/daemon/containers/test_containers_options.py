"""Run flags turned into the container: limits that bite, read-only root, volumes, binds, env,
user, workdir, hostname, capabilities; and bad input answered in one line with nothing left."""

from __future__ import annotations

import json
from pathlib import Path

from support.containers import inspect, memory_cgroup, ok, run_detached
from support.daemon import Daemon
from support.leftovers import container_leftovers


def test_memory_limit_ooms_and_inspect_says_so(carte: Daemon) -> None:
    grow = 'BEGIN { s = "xxxxxxxxxxxxxxxx"; while (1) s = s s }'
    result = carte.client("run", "--name", "oom", "-m", "32m", "busybox", "awk", grow)
    assert result.returncode == 137
    state = inspect(carte, "oom")["state"]
    assert state["oom_killed"] is True and state["exit_code"] == 137


def test_read_only_root(carte: Daemon) -> None:
    result = carte.client("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert result.returncode == 1
    assert "Read-only file system" in result.stderr
    assert ok(carte.client("run", "--rm", "busybox", "touch", "/x")) == ""


def test_named_volume_persists_across_containers(carte: Daemon) -> None:
    ok(
        carte.client(
            "run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"
        )
    )
    assert (
        ok(carte.client("run", "--rm", "-v", "data:/data", "busybox", "cat", "/data/f")) == "kept\n"
    )
    assert "data" in ok(carte.client("volume", "ls", "-q")).split()
    mountpoint = Path(json.loads(ok(carte.client("volume", "inspect", "data")))[0]["mountpoint"])
    assert (mountpoint / "f").read_text() == "kept\n"


def test_volume_commands(carte: Daemon) -> None:
    assert ok(carte.client("volume", "create", "v1")).strip() == "v1"
    ok(carte.client("create", "--name", "user", "-v", "v1:/v", "busybox", "true"))
    busy = carte.client("volume", "rm", "v1")
    assert busy.returncode == 1 and "in use by container" in busy.stderr
    ok(carte.client("volume", "create", "v2"))
    ok(carte.client("create", "--name", "anon", "-v", "/scratch", "busybox", "true"))
    anonymous = ok(carte.client("volume", "ls", "-q", "-f", "label=carte.anonymous")).split()
    assert len(anonymous) == 1
    ok(carte.client("rm", "anon"))  # without -v: its anonymous volume stays, unused
    pruned = ok(carte.client("volume", "prune", "-f"))  # Docker 23+: anonymous volumes only
    assert anonymous[0] in pruned and "v2" not in pruned and "v1" not in pruned
    assert "v2" in ok(carte.client("volume", "ls", "-q")).split()
    pruned = ok(carte.client("volume", "prune", "-f", "-a"))  # named ones too
    assert "v2" in pruned and "v1" not in pruned
    ok(carte.client("rm", "user"))
    ok(carte.client("volume", "rm", "v1"))
    assert ok(carte.client("volume", "ls", "-q")) == ""
    missing = carte.client("volume", "inspect", "nope")
    assert missing.returncode == 1 and "no such volume" in missing.stderr


def test_anonymous_volume_removed_with_rm_v(carte: Daemon) -> None:
    ok(carte.client("create", "--name", "anon", "-v", "/scratch", "busybox", "true"))
    assert len(ok(carte.client("volume", "ls", "-q")).split()) == 1
    ok(carte.client("rm", "-v", "anon"))
    assert ok(carte.client("volume", "ls", "-q")) == ""


def test_bind_mount_read_only(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    bind = f"{tmp_path}:/mnt:ro"
    assert (
        ok(carte.client("run", "--rm", "-v", bind, "busybox", "cat", "/mnt/in.txt"))
        == "from host\n"
    )
    refused = carte.client("run", "--rm", "-v", bind, "busybox", "touch", "/mnt/new")
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr
    ok(
        carte.client(
            "run",
            "--rm",
            "--mount",
            f"type=bind,source={tmp_path},target=/w",
            "busybox",
            "sh",
            "-c",
            "echo back > /w/out.txt",
        )
    )
    assert (tmp_path / "out.txt").read_text() == "back\n"


def test_env_env_file_user_workdir_hostname(carte: Daemon, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("# a comment\nFROM_FILE=yes\nBOTH=file\n")
    script = "echo $FROM_FILE $BOTH $ONLY; id -u; id -g; pwd; hostname"
    out = ok(
        carte.client(
            "run",
            "--rm",
            "--env-file",
            str(env_file),
            "-e",
            "BOTH=flag",
            "-e",
            "ONLY=1",
            "-u",
            "1000:1000",
            "-w",
            "/tmp",
            "-h",
            "box",
            "busybox",
            "sh",
            "-c",
            script,
        )
    )
    assert out.splitlines() == ["yes flag 1", "1000", "1000", "/tmp", "box"]


def test_user_by_name_from_the_image(carte: Daemon) -> None:
    assert ok(carte.client("run", "--rm", "-u", "nobody", "busybox", "id", "-un")) == "nobody\n"
    unknown = carte.client("run", "--rm", "-u", "ghost", "busybox", "true")
    assert unknown.returncode == 125 and 'no user "ghost"' in unknown.stderr


def test_cap_drop_and_security_options(carte: Daemon) -> None:
    dropped = carte.client("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "1", "/tmp")
    assert dropped.returncode == 1
    ok(carte.client("run", "--rm", "busybox", "chown", "1", "/tmp"))
    ok(carte.client("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "true"))
    bad = carte.client("run", "--rm", "--security-opt", "bogus", "busybox", "true")
    assert bad.returncode == 125 and len(bad.stderr.strip().splitlines()) == 1


def test_limits_reach_the_cgroup(carte: Daemon) -> None:
    container_id = run_detached(
        carte,
        "-m",
        "64m",
        "--pids-limit",
        "50",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "busybox",
        "sleep",
        "100",
    )
    memory = memory_cgroup(container_id)
    assert int((memory / "memory.limit_in_bytes").read_text()) == 64 * 1024 * 1024
    assert (
        Path("/sys/fs/cgroup/pids/carte") / container_id / "pids.max"
    ).read_text().strip() == "50"
    cpu = Path("/sys/fs/cgroup/cpu,cpuacct/carte") / container_id
    if not cpu.exists():
        cpu = Path("/sys/fs/cgroup/cpu/carte") / container_id
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (cpu / "cpu.shares").read_text().strip() == "512"
    ulimit = ok(
        carte.client(
            "run", "--rm", "--ulimit", "nofile=256:512", "busybox", "sh", "-c", "ulimit -n"
        )
    )
    assert ulimit.strip() == "256"


def test_bad_input_is_one_line_and_leaves_nothing(carte: Daemon, tmp_path: Path) -> None:
    cases = [
        (["-m", "12q"], "--memory", 125),
        (["--cpus", "lots"], "--cpus", 125),
        (["-v", f"{tmp_path}/missing:/m"], "does not exist", 125),
        (["--restart", "sometimes"], "--restart", 125),
        (["--stop-signal", "SIGNOPE"], "--stop-signal", 125),
    ]
    for flags, needle, code in cases:
        result = carte.client("run", "--rm", *flags, "busybox", "true")
        assert result.returncode == code, (flags, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert [line for line in lines if not line.startswith("WARNING")] == [
            line for line in lines if needle in line
        ], (flags, result.stderr)
        assert "Traceback" not in result.stderr
    # --pull never: the image is not here, and nothing is fetched.
    unknown = carte.client("run", "--pull", "never", "nosuchimage")
    assert unknown.returncode == 125
    assert unknown.stderr.strip() == (
        'carte: Unable to find image "nosuchimage:latest" locally; import it '
        "(carte import TAR nosuchimage) or pull it (carte pull nosuchimage)"
    )
    # (The default, --pull missing, asks the image's registry first, as Docker does: tested
    # against a loopback registry in tests/daemon/cli/test_cli_docker_shape_pull.py.)
    assert ok(carte.client("ps", "-aq")) == ""
    assert list((carte.root / "containers").iterdir()) == []


def test_command_not_found_is_127_and_not_executable_126(carte: Daemon) -> None:
    missing = carte.client("run", "--name", "nf", "busybox", "no-such-command")
    assert missing.returncode == 127
    not_executable = carte.client("run", "--rm", "busybox", "/etc/passwd")
    assert not_executable.returncode == 126
    details = inspect(carte, "nf")
    assert details["state"]["exit_code"] == 127
    ok(carte.client("rm", "nf"))
    assert container_leftovers(carte, details["id"]) == []


def test_network_none_has_loopback_up_and_host_shares_the_host(carte: Daemon) -> None:
    addresses = ok(carte.client("run", "--rm", "--network", "none", "busybox", "ip", "addr"))
    assert "127.0.0.1/8" in addresses and "UP" in addresses.splitlines()[0]
    assert "eth0" not in addresses
    hostname = ok(carte.client("run", "--rm", "--network", "host", "busybox", "hostname"))
    assert hostname.strip() == __import__("socket").gethostname()


def test_unknown_network_is_refused_at_create(carte: Daemon) -> None:
    refused = carte.client("run", "--rm", "--network", "nosuchnet", "busybox", "true")
    assert refused.returncode == 125
    assert "nosuchnet" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert ok(carte.client("ps", "-aq")) == ""
    assert list((carte.root / "containers").iterdir()) == []


def test_etc_hosts_names_the_container_address(carte: Daemon) -> None:
    script = "hostname -i 2>/dev/null || true; cat /etc/hosts"
    out = ok(carte.client("run", "--rm", "-h", "named", "busybox", "sh", "-c", script))
    named = [line.split() for line in out.splitlines() if line.endswith("named")]
    assert named and named[0][0] not in ("127.0.1.1", "")


def test_a_new_volume_starts_with_the_image_content(carte: Daemon) -> None:
    listing = ok(carte.client("run", "--rm", "-v", "etcdata:/etc", "busybox", "cat", "/etc/passwd"))
    assert "root:" in listing
    volume = json.loads(ok(carte.client("volume", "inspect", "etcdata")))[0]
    assert (Path(volume["mountpoint"]) / "group").is_file()
