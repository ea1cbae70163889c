"""The PyInstaller one-dir bundle: one binary that is both the daemon and the client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.daemon import REPO, DaemonFactory


@pytest.fixture(scope="module")
def carte_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build carte.spec once into a temporary directory (takes a minute or two)."""
    work = tmp_path_factory.mktemp("pyinstaller")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(work / "dist"),
            "--workpath",
            str(work / "build"),
            "carte.spec",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "dist" / "carte" / "carte"


@pytest.mark.slow
def test_binary_is_a_one_dir_bundle(carte_binary: Path) -> None:
    assert carte_binary.is_file() and os.access(carte_binary, os.X_OK)
    # One-dir: the libraries sit next to the executable instead of being unpacked per start.
    assert (carte_binary.parent / "_internal").is_dir()
    assert carte_binary.stat().st_size < 20 * 1024 * 1024


@pytest.mark.slow
def test_binary_serves_as_daemon_and_client(carte_binary: Path, daemons: DaemonFactory) -> None:
    daemon = daemons(command=[str(carte_binary)])
    version = daemon.client("--format", "json", "version")
    assert version.returncode == 0, version.stderr
    reply = json.loads(version.stdout)
    assert reply["server"]["api_version"] == reply["client"]["api_version"] == "1"

    info = json.loads(daemon.client("--format", "json", "info").stdout)
    assert info["pid"] == daemon.process.pid  # type: ignore[union-attr]
    handlers = {h["name"]: h["state"] for h in info["handlers"]}
    # The carte.plugins entry points are bundled too: the webhook example is found.
    assert handlers["api"] == "running"
    assert handlers["webhook"] == "skipped"

    no_daemon = subprocess.run(
        [str(carte_binary), "--host", f"unix://{daemon.workdir}/none.sock", "info"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_daemon.returncode == 1
    assert len(no_daemon.stderr.strip().splitlines()) == 1
    assert daemon.stop() == 0
