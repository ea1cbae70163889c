"""save, load, export, commit, history, image prune and system df through a real daemon;
podman is the independent peer for archives both ways."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from support.daemon import Daemon, DaemonFactory
from support.podman import podman_in


def ok(result: object) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined,no-any-return]


def details(carte: Daemon, ref: str) -> dict[str, object]:
    return json.loads(ok(carte.client("image", "inspect", ref)))[0]  # type: ignore[no-any-return]


def test_podman_loads_and_runs_what_carte_saved(carte: Daemon, tmp_path: Path) -> None:
    ok(carte.client("tag", "busybox", "carte-saved:1"))
    for fmt in ("oci", "docker"):
        archive = tmp_path / f"saved-{fmt}.tar"
        ok(carte.client("save", "--format", fmt, "-o", str(archive), "carte-saved:1"))
        with podman_in(tmp_path / f"podman-{fmt}") as podman:
            podman("load", "-i", str(archive))
            said = podman(
                "run", "--rm", "--network", "none", "carte-saved:1", "/bin/busybox", "echo", fmt
            )
            assert said.strip() == fmt
    ok(carte.client("rmi", "carte-saved:1"))


def test_carte_loads_and_runs_what_podman_saved(
    carte: Daemon, busybox_tar: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "from-podman.tar"
    with podman_in(tmp_path / "podman") as podman:
        podman("import", "--change", 'CMD ["/bin/echo", "made by podman"]', str(busybox_tar),
               "podman-made:2")  # fmt: skip
        podman_id = podman("image", "inspect", "--format", "{{.Id}}", "podman-made:2").strip()
        podman("save", "--format", "docker-archive", "-o", str(archive), "podman-made:2")
    loaded = carte.client("load", "-i", str(archive))
    name = "localhost/podman-made:2"  # podman's own name for a short name
    assert ok(loaded).strip() == f"Loaded image: {name}"
    assert details(carte, name)["id"] == f"sha256:{podman_id}"
    run = carte.client("run", "--rm", "--network", "none", name)
    assert ok(run).strip() == "made by podman"
    ok(carte.client("rmi", name))


def test_a_hostile_archive_is_one_line_and_records_nothing(carte: Daemon, tmp_path: Path) -> None:
    archive = tmp_path / "hostile.tar"
    with tarfile.open(archive, "w") as tar:
        manifest = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    before = ok(carte.client("images", "-q", "--no-trunc"))
    loaded = carte.client("load", "-i", str(archive))
    assert loaded.returncode == 1
    assert loaded.stderr.count("\n") == 1 and "../../etc/passwd" in loaded.stderr
    assert ok(carte.client("images", "-q", "--no-trunc")) == before


def test_save_of_an_unknown_image_writes_no_file(carte: Daemon, tmp_path: Path) -> None:
    target = tmp_path / "never.tar"
    saved = carte.client("save", "-o", str(target), "no-such-image:1")
    assert saved.returncode == 1
    assert 'image "no-such-image:1" not found locally' in saved.stderr
    assert not target.exists()


def test_export_and_commit_see_what_the_container_changed(carte: Daemon, tmp_path: Path) -> None:
    ok(carte.client("run", "--name", "changer", "--network", "none", "busybox",
                    "sh", "-c", "echo changed > /made-here && rm /bin/ls"))  # fmt: skip
    exported = tmp_path / "export.tar"
    ok(carte.client("export", "-o", str(exported), "changer"))
    with tarfile.open(exported) as tar:
        names = set(tar.getnames())
        made = tar.extractfile("made-here")
        assert made is not None and made.read() == b"changed\n"
    assert "bin/sh" in names and "bin/ls" not in names
    assert not any(name.startswith(("proc/", "sys/")) and name.count("/") > 1 for name in names)

    image_id = ok(carte.client(
        "commit", "-m", "my change", "-a", "tester", "-c", 'CMD ["cat", "/made-here"]',
        "-c", "ENV COMMITTED=yes", "changer", "committed:1",
    )).strip()  # fmt: skip
    assert details(carte, "committed:1")["id"] == image_id
    run = carte.client("run", "--rm", "--network", "none", "committed:1")
    assert ok(run).strip() == "changed"
    env = carte.client("run", "--rm", "--network", "none", "committed:1", "sh", "-c",
                       "echo $COMMITTED; ls /bin/ls || true")  # fmt: skip
    assert ok(env).splitlines()[0] == "yes" and "/bin/ls" not in env.stdout.splitlines()[-1:]

    history = json.loads(ok(carte.client("--format", "json", "history", "committed:1")))
    assert history[0]["id"] == image_id
    assert history[0]["comment"] == "my change"
    assert history[0]["created_by"] == "carte commit changer"
    assert history[0]["size"] > 0 and history[1]["created_by"] == "carte import"
    table = ok(carte.client("history", "committed:1"))
    assert table.splitlines()[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE",
                                             "COMMENT"]  # fmt: skip
    ok(carte.client("rm", "changer"))


def test_prune_removes_unused_images_only(carte: Daemon) -> None:
    ok(carte.client("run", "--name", "holder", "--network", "none", "busybox", "true"))
    ok(carte.client("commit", "holder", "prune-me:1"))
    ok(carte.client("commit", "holder", "dangling:1"))
    dangling_id = details(carte, "dangling:1")["id"]
    ok(carte.client("commit", "holder", "dangling:1"))  # the old one loses its tag
    before = ok(carte.client("images", "-q", "--no-trunc"))
    assert str(dangling_id) in before

    pruned = ok(carte.client("image", "prune"))
    assert f"deleted: {dangling_id}" in pruned
    after = ok(carte.client("images", "-q", "--no-trunc"))
    assert str(dangling_id) not in after and "prune-me" in ok(carte.client("images"))

    ok(carte.client("image", "prune", "-a"))
    listing = ok(carte.client("images"))
    assert "prune-me" not in listing and "dangling" not in listing
    assert "busybox" in listing  # the container "holder" still uses it
    ok(carte.client("run", "--rm", "--network", "none", "busybox", "true"))
    ok(carte.client("rm", "holder"))


def test_system_df_counts_images_and_containers(carte: Daemon) -> None:
    ok(carte.client("run", "--name", "sizer", "--network", "none", "busybox",
                    "dd", "if=/dev/zero", "of=/big", "bs=1024", "count=512"))  # fmt: skip
    rows = {
        row["type"]: row for row in json.loads(ok(carte.client("--format", "json", "system", "df")))
    }
    assert rows["Images"]["total"] >= 1 and rows["Images"]["active"] >= 1
    assert rows["Containers"]["total"] >= 1 and rows["Containers"]["size"] >= 512 * 1024
    assert rows["Containers"]["reclaimable"] >= 512 * 1024
    ok(carte.client("rm", "sizer"))


def test_save_to_stdout_and_load_from_stdin_round_trip(carte: Daemon, tmp_path: Path) -> None:
    ok(carte.client("tag", "busybox", "piped:1"))
    busybox_id = details(carte, "piped:1")["id"]
    archive = tmp_path / "piped.tar"
    base = [*carte.command, "--host", f"unix://{carte.socket}"]
    with archive.open("wb") as out:
        saved = subprocess.run([*base, "save", "piped:1"], stdout=out, timeout=60)
    assert saved.returncode == 0
    ok(carte.client("rmi", "piped:1"))
    with archive.open("rb") as source:
        loaded = subprocess.run(
            [*base, "load"], stdin=source, capture_output=True, text=True, timeout=60
        )
    assert "Loaded image: piped:1" in ok(loaded).splitlines()
    assert details(carte, "piped:1")["id"] == busybox_id
    ok(carte.client("rmi", "piped:1"))


def test_a_restarted_daemon_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    """A daemon killed mid-load or mid-export leaves an upload and a mounted export root."""
    from carte.runtime.syscalls import MNT_DETACH, MS_RDONLY, mount, umount2

    factory = DaemonFactory()
    try:
        daemon = factory(start=False)
        upload = daemon.root / "load-uploads" / "load-left"
        upload.mkdir(parents=True)
        (upload / "archive.tar").write_bytes(b"partial")
        lower = [tmp_path / "a", tmp_path / "b"]
        for directory in lower:
            directory.mkdir()
        (tmp_path / "a" / "kept").write_text("must survive")
        target = daemon.run_root / "export" / "export-left"
        target.mkdir(parents=True)
        mount("overlay", str(target), "overlay", MS_RDONLY,
              "lowerdir=" + ":".join(str(d) for d in lower))  # fmt: skip
        try:
            daemon.start()
            assert not upload.exists()
            assert not target.exists()
            assert (tmp_path / "a" / "kept").read_text() == "must survive"
        finally:
            if target.exists() and target.is_mount():
                umount2(str(target), MNT_DETACH)
    finally:
        factory.cleanup()


def test_a_running_container_is_exported_and_committed_and_keeps_running(
    carte: Daemon, tmp_path: Path
) -> None:
    ok(carte.client("run", "-d", "--name", "busy", "--network", "none", "busybox",
                    "sh", "-c", "echo live > /state; exec sleep 300"))  # fmt: skip
    for _ in range(100):
        probe = carte.client("exec", "busy", "cat", "/state")
        if probe.returncode == 0 and probe.stdout.strip() == "live":
            break
    exported = tmp_path / "live.tar"
    ok(carte.client("export", "-o", str(exported), "busy"))
    with tarfile.open(exported) as tar:
        state = tar.extractfile("state")
        assert state is not None and state.read() == b"live\n"
    ok(carte.client("commit", "busy", "live-commit:1"))
    status = json.loads(ok(carte.client("inspect", "busy")))[0]["state"]["status"]
    assert status == "running"  # paused for the commit, then unpaused
    run = carte.client("run", "--rm", "--network", "none", "live-commit:1", "cat", "/state")
    assert ok(run).strip() == "live"
    ok(carte.client("rm", "-f", "busy"))
    ok(carte.client("rmi", "live-commit:1"))
