"""Bind mounts, user namespaces, joining namespaces by path, the console socket and exec."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_harness import REPO, Bundle, Runtime
from support.terminal import read_until, shell_on_a_pty


def test_bind_mounts_read_only_and_read_write(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    readonly, writable = tmp_path / "ro", tmp_path / "rw"
    for directory in (readonly, writable):
        directory.mkdir()
        (directory / "file").write_text(directory.name + "\n")
    bundle = make_bundle(
        shell="cat /ro/file /rw/file; echo new > /rw/made; echo bad > /ro/made || echo refused"
    )
    bundle.config["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(readonly), "options": ["rbind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(writable), "options": ["rbind", "rw"]},
    ]
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ro", "rw", "refused"]
    assert (writable / "made").read_text() == "new\n"
    assert not (readonly / "made").exists()
    assert "Read-only file system" in result.stderr


@pytest.fixture
def open_bundle_dir(busybox_rootfs: Path) -> Iterator[Path]:
    """A bundle directory every uid can traverse (a user-namespaced root is not the host's
    root, so it needs "other" permissions on the way to its rootfs, as with runc)."""
    directory = Path(tempfile.mkdtemp(prefix="h3-userns-"))
    directory.chmod(0o755)
    shutil.copytree(busybox_rootfs, directory / "rootfs", symlinks=True)
    yield directory
    shutil.rmtree(directory)


def test_user_namespace_maps_root_to_an_unprivileged_host_uid(
    runtime: Runtime, make_bundle: Callable[..., Bundle], open_bundle_dir: Path
) -> None:
    bundle = make_bundle(
        shell="id -u; cat /proc/self/uid_map; sleep 0.3 & sleep 0.1; "
        "grep -E '^Uid' /proc/$!/status; touch /owned && echo touched; true"
    )
    bundle.path = open_bundle_dir
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    bundle.config["linux"]["uidMappings"] = mapping
    bundle.config["linux"]["gidMappings"] = mapping
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "200000", "65536"]
    # Host-owned image files are not the container root's: it cannot write to /.
    assert "touched" not in result.stdout


def test_init_shows_as_carte_init_in_a_user_namespace(
    runtime: Runtime, make_bundle: Callable[..., Bundle], open_bundle_dir: Path
) -> None:
    """Without privilege over the host, init still rewrites its command line in place."""
    bundle = make_bundle(
        shell="cat /proc/1/cmdline | tr '\\0' '|'; echo; grep CapEff /proc/1/status"
    )
    bundle.path = open_bundle_dir
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    bundle.config["linux"]["uidMappings"] = mapping
    bundle.config["linux"]["gidMappings"] = mapping
    bundle.config["annotations"] = {"run.carte.init": "true"}
    result = runtime.run(bundle)
    assert result.returncode == 0, result.stderr
    cmdline, capabilities = result.stdout.splitlines()
    assert cmdline == "carte-init|"
    assert int(capabilities.split()[1], 16) == 0x800405FB


def test_user_namespaced_root_is_unprivileged_on_the_host(
    runtime: Runtime, make_bundle: Callable[..., Bundle], open_bundle_dir: Path
) -> None:
    bundle = make_bundle("sleep", "1000")
    bundle.path = open_bundle_dir
    bundle.config["linux"]["namespaces"].append({"type": "user"})
    mapping = [{"containerID": 0, "hostID": 300000, "size": 65536}]
    bundle.config["linux"]["uidMappings"] = mapping
    bundle.config["linux"]["gidMappings"] = mapping
    bundle.write()
    container_id = runtime.new_id("userns")
    created = runtime("create", "--bundle", bundle.path, container_id)
    assert created.returncode == 0, created.stderr
    pid = json.loads(runtime("state", container_id).stdout)["pid"]
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status if line.startswith("Gid:")).split()[1:]
    assert uids == ["300000"] * 4
    assert gids == ["300000"] * 4
    assert runtime("start", container_id).returncode == 0


def test_join_uts_namespace_by_path(runtime: Runtime, make_bundle: Callable[..., Bundle]) -> None:
    first = make_bundle("sleep", "1000")
    first.config["hostname"] = "shared-uts"
    first.write()
    first_id = runtime.new_id("owner")
    assert runtime("create", "--bundle", first.path, first_id).returncode == 0
    pid = json.loads(runtime("state", first_id).stdout)["pid"]
    second = make_bundle("hostname")
    second.config["hostname"] = ""
    second.config["linux"]["namespaces"] = [
        ns if ns["type"] != "uts" else {"type": "uts", "path": f"/proc/{pid}/ns/uts"}
        for ns in second.config["linux"]["namespaces"]
    ]
    result = runtime.run(second)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "shared-uts"


def test_join_missing_namespace_path_fails_cleanly(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    bundle = make_bundle()
    namespaces = [ns for ns in bundle.config["linux"]["namespaces"] if ns["type"] != "network"]
    namespaces.append({"type": "network", "path": "/nonexistent/ns"})
    bundle.config["linux"]["namespaces"] = namespaces
    result = runtime.run(bundle)
    assert result.returncode == 1
    assert "/nonexistent/ns" in result.stderr
    assert "Traceback" not in result.stderr


def test_console_socket_receives_the_pty_master(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle("sh")
    bundle.config["process"]["terminal"] = True
    bundle.write()
    socket_path = tmp_path / "console.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)
    container_id = runtime.new_id("tty")
    created = subprocess.Popen(
        [sys.executable, "-m", "carte", "runtime", "--root", str(runtime.state), "create",
         "--bundle", str(bundle.path), "--console-socket", str(socket_path), container_id],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    listener.settimeout(30)
    connection, _ = listener.accept()
    _, fds, _, _ = socket.recv_fds(connection, 1024, 1)
    assert created.wait(timeout=30) == 0, created.stderr.read() if created.stderr else ""
    if created.stderr:
        created.stderr.close()
    master = fds[0]
    try:
        assert runtime("start", container_id).returncode == 0
        os.write(master, b"tty; echo marker-$((6*7)); exit 3\n")
        output = read_until(master, b"marker-42")
        assert b"/dev/pts/0" in output
        _wait_stopped(runtime, container_id)
    finally:
        os.close(master)
        connection.close()
        listener.close()


def _wait_stopped(runtime: Runtime, container_id: str) -> None:
    deadline = time.monotonic() + 10
    while json.loads(runtime("state", container_id).stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_exec_joins_the_running_container(
    runtime: Runtime, make_bundle: Callable[..., Bundle], tmp_path: Path
) -> None:
    bundle = make_bundle("sleep", "1000")
    bundle.config["hostname"] = "exec-target"
    bundle.write()
    container_id = runtime.new_id("exec")
    assert runtime("create", "--bundle", bundle.path, container_id).returncode == 0
    assert runtime("start", container_id).returncode == 0
    process = dict(bundle.config["process"])
    process["args"] = ["sh", "-c", "hostname; echo $$; ls /proc | grep -c '^[0-9]'; exit 4"]
    process_file = tmp_path / "process.json"
    process_file.write_text(json.dumps(process))
    result = runtime("exec", "--process", process_file, container_id)
    assert result.returncode == 4, result.stderr
    hostname, pid, count = result.stdout.split()
    assert hostname == "exec-target"
    assert int(pid) > 1
    assert int(count) >= 2


def test_run_of_a_terminal_container_uses_our_terminal(
    runtime: Runtime, make_bundle: Callable[..., Bundle]
) -> None:
    """Without --console-socket, `run` receives the pty itself and proxies our terminal."""
    bundle = make_bundle("sh")
    bundle.config["process"]["terminal"] = True
    bundle.write()
    argv = [sys.executable, "-m", "carte", "runtime", "--root", str(runtime.state), "run",
            "--bundle", str(bundle.path), runtime.new_id("ourtty")]  # fmt: skip
    assert b"/dev/pts/0" in shell_on_a_pty(argv, 6, cwd=REPO)
