"""Debian's podman drives `carte runtime` as its OCI runtime (`podman --runtime PATH`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_harness import host_mounts_mentioning
from support.podman import PODMAN_CONF
from support.terminal import shell_on_a_pty

pytestmark = pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")


class Podman:
    """podman with its own storage, run root and containers.conf, using Carte as runtime."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.wrapper = work / "carte-runtime"
        self.argv_log = work / "argv.log"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f'echo "$@" >> {self.argv_log}\n'
            f'exec {sys.executable} -m carte runtime --root {work / "runtime"} "$@"\n'
        )
        self.wrapper.chmod(0o755)
        (work / "containers.conf").write_text(PODMAN_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(work / "containers.conf")}

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.work / "storage"),
            "--runroot", str(self.work / "run"),
            "--storage-driver", "vfs",
            "--runtime", str(self.wrapper),
            *args,
        ]  # fmt: skip

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, env=self.env, timeout=120
        )


@pytest.fixture
def podman(busybox_tar: Path) -> Iterator[Podman]:
    """A podman instance in a short /tmp directory (podman refuses run roots over 50 chars)."""
    work = Path(tempfile.mkdtemp(prefix="h3p-", dir="/tmp"))
    try:
        engine = Podman(work)
        imported = engine("import", str(busybox_tar), "localhost/h3-busybox:latest")
        assert imported.returncode == 0, imported.stderr
        yield engine
        engine("rm", "--all", "--force")
        engine("rmi", "--all", "--force")
        assert host_mounts_mentioning(str(work)) == []
        runtime_state = work / "runtime"
        left = list(runtime_state.iterdir()) if runtime_state.exists() else []
        assert left == [], f"podman left containers in Carte's state: {left}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_podman_run_rm_true(podman: Podman) -> None:
    result = podman("run", "--rm", "--network", "none", "localhost/h3-busybox", "true")
    assert result.returncode == 0, result.stderr
    calls = [line.split()[0] for line in podman.argv_log.read_text().splitlines()]
    assert calls[:2] == ["create", "start"]
    assert "delete" in calls


def test_podman_run_reports_exit_code_and_isolation(podman: Podman) -> None:
    script = "echo $$; grep -E 'NoNewPrivs|Seccomp:' /proc/self/status; exit 3"
    result = podman("run", "--rm", "--network", "none", "localhost/h3-busybox", "sh", "-c", script)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "1"
    assert lines[lines.index("Seccomp:") + 1] == "2"


def test_podman_exec_and_stop(podman: Podman) -> None:
    started = podman(
        "run", "-d", "--name", "h3-exec", "--network", "none", "localhost/h3-busybox",
        "sleep", "1000",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    result = podman("exec", "h3-exec", "sh", "-c", "echo $$; cat /proc/1/cmdline")
    assert result.returncode == 0, result.stderr
    pid, cmdline = result.stdout.split()
    assert int(pid) > 1
    assert cmdline.startswith("sleep")
    removed = podman("rm", "--force", "h3-exec")
    assert removed.returncode == 0, removed.stderr


def test_podman_interactive_shell_over_a_pty(podman: Podman) -> None:
    """`podman run -it` hands Carte a console socket; a real pty drives the shell."""
    argv = podman.argv("run", "--rm", "-it", "--network", "none", "localhost/h3-busybox", "sh")
    assert b"/dev/pts/0" in shell_on_a_pty(argv, 5, 60, env=podman.env)
