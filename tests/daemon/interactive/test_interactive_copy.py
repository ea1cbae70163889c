"""`carte cp` both ways, for running and stopped containers, and symlinks that try to lead out
of the container's root."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon

SETUP = (
    "mkdir -p /data/sub && echo hello > /data/sub/file && ln -s /etc /data/etc-link && "
    "ln -s ../../../../../../../{host} /escape && ln -s {host}/secret /secret-link && "
)


def start(carte: Daemon, name: str, host_dir: Path, then: str = "sleep 1000") -> None:
    script = SETUP.format(host=host_dir) + then
    ok(carte.client("run", "-d", "--name", name, "busybox", "sh", "-c", script))
    if then == "true":
        ok(carte.client("wait", name))
    else:
        ok(carte.client("exec", name, "sh", "-c", "until [ -L /secret-link ]; do sleep 0.05; done"))


def test_copy_a_directory_out_and_a_file_in(carte: Daemon, tmp_path: Path) -> None:
    start(carte, "copier", tmp_path / "host")
    out = tmp_path / "out"
    out.mkdir()
    ok(carte.client("cp", "copier:/data", str(out)))
    assert (out / "data" / "sub" / "file").read_text() == "hello\n"
    assert os.readlink(out / "data" / "etc-link") == "/etc", "a symlink is copied as one"
    ok(carte.client("cp", "copier:/data/sub/file", str(out / "renamed")))
    assert (out / "renamed").read_text() == "hello\n"
    local = tmp_path / "note.txt"
    local.write_text("from the host\n")
    ok(carte.client("cp", str(local), "copier:/data/sub/"))
    ok(carte.client("cp", str(local), "copier:/data/as-named"))
    shown = ok(carte.client("exec", "copier", "cat", "/data/sub/note.txt", "/data/as-named"))
    assert shown == "from the host\n" * 2
    missing = carte.client("cp", "copier:/no/such", str(out))
    assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
    assert '"/no/such"' in missing.stderr


def test_tar_streams_on_stdout_and_stdin(carte: Daemon, tmp_path: Path) -> None:
    start(carte, "streamer", tmp_path / "host")
    argv = [*carte.command, "--host", f"unix://{carte.socket}", "cp"]
    got = subprocess.run([*argv, "streamer:/data/sub/file", "-"], capture_output=True, timeout=30)
    with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
        assert tar.getnames() == ["file"]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("piped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"tar\n"))
    sent = subprocess.run(
        [*argv, "-", "streamer:/tmp"], input=archive.getvalue(), capture_output=True, timeout=30
    )
    assert sent.returncode == 0, sent.stderr
    assert ok(carte.client("exec", "streamer", "cat", "/tmp/piped.txt")) == "tar\n"


def test_symlinks_never_lead_out_of_the_container(carte: Daemon, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret\n")
    start(carte, "escaper", host)
    out = tmp_path / "out"
    out.mkdir()
    through_dir = carte.client("cp", "escaper:/escape/secret", str(out))
    assert through_dir.returncode == 1 and "no such file" in through_dir.stderr
    assert not (out / "secret").exists()
    ok(carte.client("cp", "escaper:/secret-link", str(out)))
    assert os.readlink(out / "secret-link") == f"{host}/secret"  # the link, not the host file
    intruder = tmp_path / "intruder"
    intruder.write_text("planted\n")
    refused = carte.client("cp", str(intruder), "escaper:/escape/")
    assert refused.returncode == 1
    assert sorted(p.name for p in host.iterdir()) == ["secret"]
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w") as tar:
        info = tarfile.TarInfo("../../../../../../" + str(host / "climbed"))
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    climbed = subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", "cp", "-", "escaper:/tmp"],
        input=hostile.getvalue(),
        capture_output=True,
        timeout=30,
    )
    assert climbed.returncode == 1 and b'".."' in climbed.stderr
    assert sorted(p.name for p in host.iterdir()) == ["secret"]


def test_copy_with_a_stopped_container(carte: Daemon, tmp_path: Path) -> None:
    start(carte, "resting", tmp_path / "host", then="true")
    out = tmp_path / "out"
    out.mkdir()
    ok(carte.client("cp", "resting:/data/sub/file", str(out)))
    assert (out / "file").read_text() == "hello\n"
    local = tmp_path / "later.txt"
    local.write_text("seen after start\n")
    ok(carte.client("cp", str(local), "resting:/data/"))
    mounts = Path("/proc/self/mounts").read_text()
    assert str(carte.run_root) not in mounts, "the overlay mounted for the copy is left"
    ok(carte.client("start", "resting"))
    ok(carte.client("wait", "resting"))
    ok(carte.client("cp", "resting:/data/later.txt", str(out)))
    assert (out / "later.txt").read_text() == "seen after start\n"
