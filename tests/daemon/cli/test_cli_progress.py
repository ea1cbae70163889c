"""Progress of `carte build` and `carte load` as Docker's client shows it: redrawn in place when
stderr is a terminal (a real pseudo-terminal here), plain lines when it is not, nothing with
-q; against a real daemon."""

from __future__ import annotations

import os
import select
import subprocess
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

progress_daemon, carte = daemon_fixtures("progress_daemon")


def on_terminal(carte: Daemon, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """The client with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    master, slave = os.openpty()
    with subprocess.Popen(
        [*carte.command, "--host", f"unix://{carte.socket}", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=carte.env,
        cwd=cwd,
    ) as process:
        os.close(slave)
        screen = b""
        while True:  # read as it comes: a full terminal buffer would block the client
            ready, _, _ = select.select([master], [], [], 60)
            assert ready, f"no output for 60 s; screen: {screen!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the client closed the terminal
                chunk = b""
            if not chunk:
                break
            screen += chunk
        os.close(master)
        assert process.stdout is not None
        out = process.stdout.read().decode()
        code = process.wait(60)
    return code, out, screen.decode(errors="replace")


def context(tmp_path: Path, run: str) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(f"FROM busybox\nRUN {run}\n")
    return directory


def test_build_progress_on_a_terminal_and_plain(carte: Daemon, tmp_path: Path) -> None:
    ctx = context(tmp_path, "echo making-it && sleep 1")
    code, out, screen = on_terminal(carte, "build", "--network", "none", "-t", "tty:1", str(ctx))
    assert code == 0, screen
    assert "[+] Building" in screen and "(2/2) FINISHED" in screen
    assert " => [2/2] RUN echo making-it && sleep 1" in screen
    assert "\x1b[2K" in screen and "\x1b[" in screen.replace("\x1b[2K", "")  # redrawn
    assert "#2 [2/2]" not in screen  # not BuildKit's plain lines
    assert "naming to tty:1 done" in screen and out == ""
    # --progress plain on a terminal, and no terminal at all: the plain lines
    code, _out, plain = on_terminal(
        carte, "build", "--progress", "plain", "--network", "none", "-t", "tty:2", str(ctx)
    )
    assert code == 0 and "[2/2] RUN echo making-it" in plain and "[+] Building" not in plain
    piped = ok(carte.client("build", "--network", "none", "-t", "tty:3", str(ctx)))
    assert piped == ""
    lines = carte.client("build", "--network", "none", str(ctx)).stderr
    assert "[2/2] RUN echo making-it" in lines and "\x1b" not in lines
    quiet = carte.client("build", "-q", "--network", "none", str(ctx))
    assert quiet.stderr == "" and quiet.stdout.startswith("sha256:")


def test_failed_build_on_a_terminal_shows_the_step(carte: Daemon, tmp_path: Path) -> None:
    ctx = context(tmp_path, "echo about-to-fail && exit 3")
    code, _out, screen = on_terminal(carte, "build", "--network", "none", str(ctx))
    assert code != 0
    assert " => ERROR [2/2] RUN echo about-to-fail" in screen
    assert " => => # about-to-fail" in screen
    assert "FINISHED" not in screen
    assert "Traceback" not in screen


def test_load_progress(carte: Daemon, tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    ok(carte.client("save", "-o", str(archive), "busybox"))
    ok(carte.client("rmi", "busybox"))
    code, out, screen = on_terminal(carte, "load", "-i", str(archive))
    assert code == 0, screen
    assert "Loading [" + "=" * 30 + "]" in screen and "\r\x1b[2K" in screen
    assert out == "Loaded image: busybox:latest\n"
    plain = carte.client("load", "-i", str(archive))
    assert plain.returncode == 0
    assert plain.stderr == "", "no progress off a terminal, as docker load"
    quiet = carte.client("load", "-q", "-i", str(archive))
    assert quiet.stderr == "" and quiet.stdout.startswith("sha256:")
