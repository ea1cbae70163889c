"""BuildKit syntax users copy from the docs, built for real: RUN --mount (cache, bind, tmpfs,
secret; several per RUN), `carte build --secret`, heredoc names with dots, FROM --platform and
the automatic platform ARGs, COPY --parents/--exclude, ADD --checksum, ADD of a git URL,
RUN --mount=type=ssh with `carte build --ssh`."""

from __future__ import annotations

import hashlib
import socket
import tarfile
from pathlib import Path

from build_checks import build, built, image, leftovers, read_file, serving, write
from support.daemon import Daemon

from carte.image import ImageStore
from carte.image.importer import host_architecture

SECRET = "s3cret-value-never-stored"


def _layer_bytes(daemon: Daemon, name: str) -> list[bytes]:
    store = ImageStore(daemon.root)
    stored = image(daemon, name)
    contents = []
    for descriptor in stored.manifest.layers:
        with tarfile.open(store.blob_path(descriptor.digest)) as layer:
            names = [member.name.lstrip("./") for member in layer.getmembers()]
            data = b"".join(
                layer.extractfile(m).read()  # type: ignore[union-attr]
                for m in layer.getmembers()
                if m.isfile()
            )
        contents.append("\n".join(names).encode() + b"\n" + data)
    return contents


def test_run_mounts_several_per_run(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox AS tools\n"
                "RUN mkdir /tools && echo from the tools stage > /tools/t.txt\n"
                "FROM busybox\n"
                "RUN --mount=type=cache,target=/cache,id=runs"
                " --mount=type=bind,source=data,target=/src"
                " --mount=type=tmpfs,target=/scratch,size=1m"
                " --mount=type=secret,id=token"
                " --mount=type=secret,id=token,env=TOKEN,target=/etc/token.copy"
                " --mount=type=bind,from=tools,source=/tools,target=/t \\\n"
                "  cat /src/in.txt > /from-bind && cat /t/t.txt > /from-stage &&"
                " echo run >> /cache/runs && wc -l < /cache/runs > /cache-count &&"
                " grep -c ' /scratch tmpfs' /proc/mounts > /tmpfs &&"
                " wc -c < /run/secrets/token > /secret-size &&"
                " stat -c %a /run/secrets/token > /secret-mode &&"
                ' test "$TOKEN" = "$(cat /etc/token.copy)" && echo same > /secret-env &&'
                " (touch /src/w 2>/dev/null && echo rw || echo ro) > /bind-mode\n"
            ),
            "data/in.txt": "from the context\n",
        },
    )
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET)
    args = ("--secret", f"id=token,src={secret_file}")
    built(build_daemon, context, "-t", "mounts:1", *args)
    check = {
        "/from-bind": b"from the context\n",
        "/from-stage": b"from the tools stage\n",
        "/cache-count": b"1\n",
        "/tmpfs": b"1\n",
        "/secret-size": f"{len(SECRET)}\n".encode(),
        "/secret-mode": b"400\n",
        "/secret-env": b"same\n",
        "/bind-mode": b"ro\n",
    }
    for path, expected in check.items():
        assert read_file(build_daemon, "mounts:1", path) == expected, path
    # Mount points the image lacked are not committed; the secret is in no layer or history.
    for path in ("/cache", "/src", "/scratch", "/t", "/run/secrets", "/etc/token.copy"):
        assert read_file(build_daemon, "mounts:1", path) is None, path
    layers = _layer_bytes(build_daemon, "mounts:1")
    assert not any(SECRET.encode() in layer for layer in layers)
    assert not any(b"run/secrets" in layer for layer in layers)
    stored = image(build_daemon, "mounts:1")
    assert SECRET not in str(stored.config)
    # The cache mount persists between builds ...
    built(build_daemon, context, "-t", "mounts:2", "--no-cache", *args)
    assert read_file(build_daemon, "mounts:2", "/cache-count") == b"2\n"
    # ... until `carte builder prune`.
    pruned = build_daemon.client("builder", "prune", "-f")
    assert pruned.returncode == 0, pruned.stderr
    built(build_daemon, context, "-t", "mounts:3", *args)
    assert read_file(build_daemon, "mounts:3", "/cache-count") == b"1\n"
    # A secret from the client's environment.
    (context / "Dockerfile").write_text(
        "FROM busybox\nRUN --mount=type=secret,id=api,required=true wc -c < /run/secrets/api > /n\n"
    )
    built(build_daemon, context, "-t", "mounts:4", "--secret", "id=api,env=API", env={"API": "xyz"})
    assert read_file(build_daemon, "mounts:4", "/n") == b"3\n"
    assert leftovers(build_daemon) == []


def test_bad_mounts_and_secrets_name_the_line(build_daemon: Daemon, tmp_path: Path) -> None:
    cases = {
        "RUN --mount=type=secret,id=api,required=true true": (
            'Dockerfile:2: RUN: secret "api" is required but was not given; pass it with '
            "carte build --secret id=api,src=FILE"
        ),
        "RUN --mount=type=ssh,required=true true": (
            'Dockerfile:2: RUN: SSH agent "default" is required but was not given; pass it '
            "with carte build --ssh default[=SOCKET]"
        ),
        "RUN --mount=type=volume,target=/x true": 'Dockerfile:2: RUN: --mount type "volume"',
        "RUN --mount=type=cache true": "Dockerfile:2: RUN: --mount type=cache needs target=",
        "RUN --mount=type=bind,source=nothere,target=/x true": (
            'Dockerfile:2: RUN: --mount source "nothere" was not found in the build context'
        ),
        "RUN --mount=type=tmpfs,target=/x,colour=red true": (
            'Dockerfile:2: RUN: --mount type=tmpfs has no option "colour"'
        ),
        "RUN --network=none --network=host true": "Dockerfile:2: RUN: --network is given twice",
    }
    for line, expected in cases.items():
        context = write(tmp_path / str(abs(hash(line))), {"Dockerfile": f"FROM busybox\n{line}\n"})
        result = build(build_daemon, context, "-t", "bad:1")
        assert result.returncode != 0, line
        assert expected in result.stderr, (line, result.stderr)
        assert "Traceback" not in result.stderr
    context = write(tmp_path / "cli", {"Dockerfile": "FROM busybox\n"})
    result = build(build_daemon, context, "--secret", "id=x,src=/nonexistent/file")
    assert result.returncode != 0
    assert "cannot read /nonexistent/file" in result.stderr
    assert leftovers(build_daemon) == []


def test_heredoc_names_platform_args_and_copy_flags(build_daemon: Daemon, tmp_path: Path) -> None:
    arch = host_architecture()
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "ARG BASE=busybox\n"
                "FROM --platform=$BUILDPLATFORM $BASE AS build\n"
                "ARG TARGETPLATFORM TARGETOS TARGETARCH BUILDPLATFORM\n"
                "RUN echo $BUILDPLATFORM $TARGETPLATFORM $TARGETOS $TARGETARCH > /platform\n"
                "FROM build\n"
                "COPY <<robots.txt <<humans.txt /site/\n"
                "User-agent: *\n"
                "robots.txt\n"
                "we are humans\n"
                "humans.txt\n"
                "COPY --parents src/a/one.txt src/b/ /tree/\n"
                "COPY --parents ./src/./a/one.txt /pivot/\n"
                "COPY --exclude=**/*.log --exclude=b/skip src /filtered/\n"
            ),
            "src/a/one.txt": "one\n",
            "src/a/debug.log": "log\n",
            "src/b/two.txt": "two\n",
            "src/b/skip/three.txt": "three\n",
        },
    )
    built(build_daemon, context, "-t", "syntax:1")
    name = "syntax:1"
    platform = f"linux/{arch}"
    assert read_file(build_daemon, name, "/platform") == (
        f"{platform} {platform} linux {arch}\n".encode()
    )
    assert read_file(build_daemon, name, "/site/robots.txt") == b"User-agent: *\n"
    assert read_file(build_daemon, name, "/site/humans.txt") == b"we are humans\n"
    assert read_file(build_daemon, name, "/tree/src/a/one.txt") == b"one\n"
    assert read_file(build_daemon, name, "/tree/src/b/two.txt") == b"two\n"
    assert read_file(build_daemon, name, "/pivot/a/one.txt") == b"one\n"
    assert read_file(build_daemon, name, "/filtered/a/one.txt") == b"one\n"
    assert read_file(build_daemon, name, "/filtered/b/two.txt") == b"two\n"
    assert read_file(build_daemon, name, "/filtered/a/debug.log") is None
    assert read_file(build_daemon, name, "/filtered/b/skip") is None
    other = "arm64" if arch != "arm64" else "amd64"
    bad = {
        f"FROM --platform=linux/{other} busybox\n": (
            f'Dockerfile:1: FROM: --platform "linux/{other}" is not this machine\'s platform'
        ),
        "FROM busybox\nADD https://example.invalid/repo.git /src\n": (
            "Dockerfile:2: ADD: ADD of a git repository is not supported"
        ),
        "FROM busybox\nADD git@example.invalid:org/repo /src\n": (
            "Dockerfile:2: ADD: ADD of a git repository is not supported"
        ),
        "FROM busybox\nADD --checksum=sha256:00 x /x\n": (
            "Dockerfile:2: ADD: --checksum needs exactly one http(s) URL source"
        ),
    }
    for text, expected in bad.items():
        where = write(tmp_path / str(abs(hash(text))), {"Dockerfile": text, "x": "x"})
        failed = build(build_daemon, where)
        assert failed.returncode != 0, text
        assert expected in failed.stderr, (text, failed.stderr)
    assert leftovers(build_daemon) == []


def test_add_checksum_verifies_the_download(build_daemon: Daemon, tmp_path: Path) -> None:
    """The download comes from an HTTP server on loopback that the test runs."""
    served = write(tmp_path / "served", {"file.txt": "downloaded\n"})
    digest = "sha256:" + hashlib.sha256(b"downloaded\n").hexdigest()
    with serving(served) as base_url:
        url = f"{base_url}/file.txt"
        good = write(
            tmp_path / "good", {"Dockerfile": f"FROM busybox\nADD --checksum={digest} {url} /\n"}
        )
        built(build_daemon, good, "-t", "checksum:1")
        assert read_file(build_daemon, "checksum:1", "/file.txt") == b"downloaded\n"
        wrong = "sha256:" + "0" * 64
        bad = write(
            tmp_path / "bad", {"Dockerfile": f"FROM busybox\nADD --checksum={wrong} {url} /\n"}
        )
        failed = build(build_daemon, bad, "-t", "checksum:2")
    assert failed.returncode != 0
    assert f"Dockerfile:2: ADD: {url} has checksum {digest}, not the {wrong}" in failed.stderr
    assert leftovers(build_daemon) == []


def test_ssh_mount_binds_the_agent_socket(build_daemon: Daemon, tmp_path: Path) -> None:
    """The "agent" is a unix socket the test listens on (busybox has no client to talk to it,
    so the step checks the socket and SSH_AUTH_SOCK); it leaves no trace in the layer."""
    agent_path = tmp_path / "agent.sock"
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.bind(str(agent_path))
    agent.listen()
    try:
        context = write(
            tmp_path / "ctx",
            {
                "Dockerfile": (
                    "FROM busybox\n"
                    'RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo $SSH_AUTH_SOCK > /sock\n'
                    "RUN --mount=type=ssh,id=other,target=/agent"
                    " test -S /agent && echo ok > /other\n"
                )
            },
        )
        built(
            build_daemon,
            context,
            "-t",
            "ssh:1",
            "--ssh",
            "default",
            "--ssh",
            f"other={agent_path}",
            env={"SSH_AUTH_SOCK": str(agent_path)},
        )
        assert read_file(build_daemon, "ssh:1", "/sock") == b"/run/buildkit/ssh_agent.0\n"
        assert read_file(build_daemon, "ssh:1", "/other") == b"ok\n"
        assert read_file(build_daemon, "ssh:1", "/run/buildkit") is None
        assert read_file(build_daemon, "ssh:1", "/agent") is None
        not_socket = tmp_path / "plain"
        not_socket.write_text("x")
        failed = build(build_daemon, context, "--no-cache", "--ssh", f"default={not_socket}")
        assert failed.returncode != 0
        assert f'Dockerfile:2: RUN: SSH agent "default": {not_socket} is not a socket' in (
            failed.stderr
        )
    finally:
        agent.close()
    assert leftovers(build_daemon) == []
