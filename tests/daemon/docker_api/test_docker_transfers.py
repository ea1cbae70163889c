"""`docker cp` both ways, `docker build`, `docker save | docker load`, `docker export`,
`docker commit` and `history`, and `docker push` to loopback registries (open, and behind
`docker login`), against Carte's Docker socket."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.registry import RunningRegistry, start_private_registry, start_registry

DockerCli = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.daemon]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("docker-api-registry") / "open", None)


def test_cp_both_ways(docker: DockerCli, tmp_path: Path) -> None:
    started = docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    assert started.returncode == 0, started.stderr
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "note.txt").write_text("from the host\n")
    (tmp_path / "in" / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "in" / "run.sh").chmod(0o750)
    assert docker("cp", str(tmp_path / "in"), "box:/srv").returncode == 0
    listed = docker("exec", "box", "sh", "-c", "cat /srv/note.txt; stat -c %a /srv/run.sh")
    assert listed.stdout == "from the host\n750\n", listed.stderr
    docker("exec", "box", "sh", "-c", "mkdir -p /out/sub && echo back > /out/sub/f")
    copied = docker("cp", "box:/out", str(tmp_path / "got"))
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "got" / "sub" / "f").read_text() == "back\n"
    single = docker("cp", "box:/out/sub/f", str(tmp_path / "single"))
    assert single.returncode == 0 and (tmp_path / "single").read_text() == "back\n"
    empty = docker("cp", "-", "box:/srv", input="")
    assert empty.returncode != 0 and "the archive sent is empty" in empty.stderr
    missing = docker("cp", "box:/nowhere", str(tmp_path / "x"))
    assert missing.returncode != 0 and "/nowhere" in missing.stderr
    assert not (tmp_path / "x").exists()
    exported = docker("export", "-o", str(tmp_path / "box.tar"), "box", timeout=60)
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(tmp_path / "box.tar") as archive:
        names = set(archive.getnames())
    assert {"bin/busybox", "out/sub/f", "srv/note.txt"} <= {n.lstrip("./") for n in names}
    assert docker("rm", "-f", "box").returncode == 0


def test_build_save_load_and_push(
    docker: DockerCli, registry: RunningRegistry, tmp_path: Path
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "greeting").write_text("hello\n")
    (context / "Build.df").write_text(
        "FROM busybox AS base\nARG WHO=nobody\nCOPY greeting /greeting\n"
        "RUN echo $WHO >> /greeting\nLABEL stage=base\n"
        "FROM base AS extra\nRUN echo extra >> /greeting\n"
    )
    built = docker(
        "build", "-f", str(context / "Build.df"), "--build-arg", "WHO=carte", "--target", "base",
        "--label", "team=a", "-t", "built:1", str(context), timeout=180,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged built:1" in built.stdout
    ran = docker("run", "--rm", "built:1", "cat", "/greeting")
    assert ran.stdout == "hello\ncarte\n", ran.stderr
    labels = docker("image", "inspect", "-f", "{{.Config.Labels.team}} {{.Config.Labels.stage}}",
                    "built:1")  # fmt: skip
    assert labels.stdout.split() == ["a", "base"], labels.stderr
    quiet = docker("build", "-q", "-f", str(context / "Build.df"), str(context), timeout=180)
    assert quiet.returncode == 0 and quiet.stdout.strip().startswith("sha256:"), quiet.stderr
    broken = docker("build", "-f", str(context / "nope.df"), str(context))
    assert broken.returncode != 0 and "nope.df" in broken.stderr

    saved = tmp_path / "saved.tar"
    assert docker("save", "-o", str(saved), "built:1").returncode == 0
    with tarfile.open(saved) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["built:1"]
    assert docker("rmi", "built:1").returncode == 0
    loaded = docker("load", "-i", str(saved))
    assert loaded.stdout.strip() == "Loaded image: built:1", loaded.stderr
    assert docker("run", "--rm", "built:1", "cat", "/greeting").stdout == "hello\ncarte\n"

    remote = f"{registry.host}/team/built:1"
    assert docker("tag", "built:1", remote).returncode == 0
    pushed = docker("push", remote, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    assert "digest: sha256:" in pushed.stdout
    assert docker("rmi", remote, "built:1").returncode == 0
    pulled = docker("pull", remote, timeout=120)
    assert pulled.returncode == 0, pulled.stderr
    assert docker("run", "--rm", remote, "cat", "/greeting").stdout == "hello\ncarte\n"
    unknown = docker("push", f"{registry.host}/team/absent:1")
    assert unknown.returncode != 0 and "absent" in unknown.stderr


def test_commit_and_history(docker: DockerCli) -> None:
    made = docker("run", "--name", "maker", "busybox", "sh", "-c", "echo made > /made")
    assert made.returncode == 0, made.stderr
    committed = docker("commit", "-c", "ENV MADE=yes", "-m", "by hand", "maker", "made:1")
    assert committed.returncode == 0 and committed.stdout.startswith("sha256:"), committed.stderr
    ran = docker("run", "--rm", "made:1", "sh", "-c", "cat /made; echo $MADE")
    assert ran.stdout == "made\nyes\n", ran.stderr
    history = docker("history", "--no-trunc", "--format", "{{.ID}}|{{.Comment}}", "made:1")
    top, *older = history.stdout.splitlines()
    assert top == f"{committed.stdout.strip()}|by hand", history.stderr
    assert older and all(line.startswith("<missing>|") for line in older)
    assert docker("rm", "maker").returncode == 0
    assert docker("rmi", "made:1").returncode == 0


def test_login_then_push_with_the_stored_credentials(
    docker_env: dict[str, str], tmp_path: Path
) -> None:
    with contextmanager(start_private_registry)(tmp_path / "reg", "ann", "secret") as private:
        env = {**docker_env, "DOCKER_CONFIG": str(tmp_path / "cfg")}

        def docker(*args: str, password: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(["docker", *args], input=password, env=env, timeout=120,
                                  capture_output=True, text=True)  # fmt: skip

        remote = f"{private.host}/team/bb:1"
        assert docker("tag", "busybox", remote).returncode == 0
        anonymous = docker("push", remote)
        assert anonymous.returncode != 0, anonymous.stdout
        login = ("login", "-u", "ann", "--password-stdin", private.host)
        wrong = docker(*login, password="wrong\n")
        assert wrong.returncode != 0 and "Login Succeeded" not in wrong.stdout
        right = docker(*login, password="secret\n")
        assert right.returncode == 0 and "Login Succeeded" in right.stdout, right.stderr
        pushed = docker("push", remote)
        assert pushed.returncode == 0 and "digest: sha256:" in pushed.stdout, pushed.stderr
        assert docker("rmi", remote).returncode == 0
