"""`carte build` against a real daemon: RUN in Carte containers, multi-stage, cache rules,
ARG scoping, COPY/ADD flags, .dockerignore, reproducible digests, bad input."""

from __future__ import annotations

import os
import stat
import tarfile
import time
from pathlib import Path

from build_checks import (
    build,
    built,
    image,
    leftovers,
    read_file,
    running_build,
    serving,
    stat_file,
    write,
)
from support.daemon import Daemon, DaemonFactory

from carte.image import ImageStore


def test_run_copy_env_workdir_user_and_config(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox\n"
                'ENV GREETING="hello world" \\\n'
                "    TARGET=/app\n"
                "WORKDIR $TARGET\n"
                "COPY greet.txt ./\n"
                "# a comment between instructions\n"
                'RUN echo "$GREETING from $(hostname)" > out.txt && \\\n'
                "    cat greet.txt >> out.txt && id -u > uid.txt\n"
                'RUN ["/bin/sh", "-c", "echo exec form > exec.txt"]\n'
                "USER nobody\n"
                "EXPOSE 8080 53/udp 7000-7001\n"
                'LABEL org.example.k=v other="a b"\n'
                "STOPSIGNAL SIGINT\n"
                "HEALTHCHECK --interval=5s --retries=2 CMD true\n"
                'ENTRYPOINT ["cat"]\n'
                'CMD ["out.txt"]\n'
            ),
            "greet.txt": "from the context\n",
        },
    )
    result = built(build_daemon, context, "-t", "basic:1")
    assert "[5/13] RUN echo" in result.stderr
    assert read_file(build_daemon, "basic:1", "/app/out.txt") == (
        b"hello world from carte\nfrom the context\n"
    )
    assert read_file(build_daemon, "basic:1", "/app/uid.txt") == b"0\n"
    assert read_file(build_daemon, "basic:1", "/app/exec.txt") == b"exec form\n"
    config = image(build_daemon, "basic:1").config.config
    assert config is not None
    assert config.working_dir == "/app"
    assert config.user == "nobody"
    assert config.entrypoint == ("cat",) and config.cmd == ("out.txt",)
    assert config.exposed_ports == {"8080/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}}
    assert config.labels == {"org.example.k": "v", "other": "a b"}
    assert config.stop_signal == "SIGINT"
    assert config.healthcheck is not None and config.healthcheck.test == ("CMD-SHELL", "true")
    assert config.healthcheck.interval == 5_000_000_000 and config.healthcheck.retries == 2
    assert config.env is not None and "GREETING=hello world" in config.env
    assert leftovers(build_daemon) == []


def test_multi_stage_target_builds_only_needed_stages(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox AS base\n"
                "RUN echo base > /base.txt\n"
                "FROM base AS builder\n"
                "RUN echo built-artifact > /artifact && ln -s /artifact /link\n"
                "FROM busybox AS unused\n"
                "RUN echo never-run-marker && false\n"
                "FROM busybox AS final\n"
                "COPY --from=builder /artifact /usr/share/artifact\n"
                "COPY --from=0 /base.txt /\n"
                "COPY --from=builder /link /usr/local/bin/\n"
                "FROM final AS extra\n"
                "RUN echo extra-marker\n"
            )
        },
    )
    result = built(build_daemon, context, "-t", "multi:1", "--target", "final")
    assert "never-run-marker" not in result.stderr
    assert "extra-marker" not in result.stderr
    assert read_file(build_daemon, "multi:1", "/usr/share/artifact") == b"built-artifact\n"
    assert read_file(build_daemon, "multi:1", "/base.txt") == b"base\n"
    assert read_file(build_daemon, "multi:1", "/artifact") is None
    assert read_file(build_daemon, "multi:1", "/usr/local/bin/link") == b"built-artifact\n"
    linked = stat_file(build_daemon, "multi:1", "/usr/local/bin/link")
    assert linked is not None and stat.S_ISREG(linked.st_mode)  # the symlink was followed


def test_second_build_is_all_cached_fast_and_same_image(
    build_daemon: Daemon, tmp_path: Path
) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox\nCOPY app.txt /app/\nRUN sleep 1 && cp /app/app.txt /copy\n"
            ),
            "app.txt": "v1\n",
        },
    )
    first = built(build_daemon, context, "-t", "cached:1")
    started = time.monotonic()
    second = build(build_daemon, context, "-t", "cached:1")
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("CACHED") == 2, second.stderr
    assert "DONE" not in second.stderr
    assert elapsed < 1.0, f"a cache-hit rebuild took {elapsed:.2f}s"
    assert first.stderr.splitlines()[-2] == second.stderr.splitlines()[-2]  # same image id
    no_cache = build(build_daemon, context, "-t", "cached:1", "--no-cache")
    assert no_cache.returncode == 0 and "CACHED" not in no_cache.stderr


def test_cache_follows_content_not_mtime(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY app.txt /app.txt\nRUN cat /app.txt > /seen\n",
            "app.txt": "one\n",
        },
    )
    built(build_daemon, context, "-t", "mtime:1")
    future = time.time() + 3600
    os.utime(context / "app.txt", (future, future))
    touched = build(build_daemon, context, "-t", "mtime:1")
    assert touched.returncode == 0 and touched.stderr.count("CACHED") == 2, touched.stderr
    (context / "app.txt").write_text("two\n")
    changed = build(build_daemon, context, "-t", "mtime:1")
    assert changed.returncode == 0
    assert "CACHED" not in changed.stderr, changed.stderr
    assert read_file(build_daemon, "mtime:1", "/seen") == b"two\n"
    (context / "app.txt").chmod(0o600)
    mode_changed = build(build_daemon, context, "-t", "mtime:1")
    assert "CACHED" not in mode_changed.stderr, mode_changed.stderr


def test_arg_scoping_and_build_args(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "ARG BASE=busybox\n"
                "ARG VERSION=1.0\n"
                "FROM ${BASE}:latest\n"
                'RUN echo "before:[$VERSION]" > /before\n'
                "ARG VERSION\n"
                "ARG LOCAL=default\n"
                'RUN echo "after:[$VERSION] local:[$LOCAL]" > /after\n'
                'RUN echo "proxy:[$http_proxy]" > /proxy\n'
                "COPY --from=busybox:latest /etc/passwd /from-image-passwd\n"
            )
        },
    )
    result = built(
        build_daemon,
        context,
        "-t",
        "args:1",
        "--build-arg",
        "LOCAL=given",
        "--build-arg",
        "NOT_DECLARED=x",
        "--build-arg",
        "http_proxy=http://127.0.0.1:9",
    )
    assert read_file(build_daemon, "args:1", "/before") == b"before:[]\n"
    assert read_file(build_daemon, "args:1", "/after") == b"after:[1.0] local:[given]\n"
    assert "NOT_DECLARED" in result.stderr and "not consumed" in result.stderr
    assert "http_proxy" not in result.stderr.split("not consumed")[0].splitlines()[-1]
    assert read_file(build_daemon, "args:1", "/proxy") == b"proxy:[http://127.0.0.1:9]\n"
    assert read_file(build_daemon, "args:1", "/from-image-passwd") is not None
    env = image(build_daemon, "args:1").config.config
    assert env is not None and not any("LOCAL" in item for item in env.env or ())
    again = build(build_daemon, context, "-t", "args:1", "--build-arg", "LOCAL=other")
    assert again.returncode == 0
    assert again.stderr.count("CACHED") == 1, again.stderr  # the first RUN only
    assert read_file(build_daemon, "args:1", "/after") == b"after:[1.0] local:[other]\n"


def test_copy_chown_chmod_dirs_and_globs(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox\n"
                "COPY --chown=nobody:nogroup --chmod=0640 conf/*.ini /etc/app/\n"
                "COPY tree /srv/\n"
                "COPY --chown=1234:5678 one.txt /tmp/one.txt\n"
            ),
            "conf/a.ini": "a\n",
            "conf/b.ini": "b\n",
            "conf/skip.txt": "not matched\n",
            "tree/sub/deep.txt": "deep\n",
            "one.txt": "1\n",
        },
    )
    built(build_daemon, context, "-t", "copy:1")
    ini = stat_file(build_daemon, "copy:1", "/etc/app/a.ini")
    assert ini is not None and (ini.st_uid, ini.st_gid) == (65534, 65534)
    assert stat.S_IMODE(ini.st_mode) == 0o640
    assert read_file(build_daemon, "copy:1", "/etc/app/b.ini") == b"b\n"
    assert read_file(build_daemon, "copy:1", "/etc/app/skip.txt") is None
    assert read_file(build_daemon, "copy:1", "/srv/sub/deep.txt") == b"deep\n"
    one = stat_file(build_daemon, "copy:1", "/tmp/one.txt")
    assert one is not None and (one.st_uid, one.st_gid) == (1234, 5678)
    tmp = stat_file(build_daemon, "copy:1", "/tmp")
    assert tmp is not None and stat.S_IMODE(tmp.st_mode) == 0o1777  # parent kept as it was


def test_dockerignore_with_exceptions(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY . /ctx/\n",
            ".dockerignore": "# comment\n**/*.log\n!keep.log\nsecrets\n",
            "keep.log": "kept\n",
            "drop.log": "dropped\n",
            "deep/inner/x.log": "dropped\n",
            "deep/inner/y.txt": "kept\n",
            "secrets/key": "private\n",
        },
    )
    built(build_daemon, context, "-t", "ignore:1")
    assert read_file(build_daemon, "ignore:1", "/ctx/keep.log") == b"kept\n"
    assert read_file(build_daemon, "ignore:1", "/ctx/deep/inner/y.txt") == b"kept\n"
    assert read_file(build_daemon, "ignore:1", "/ctx/drop.log") is None
    assert read_file(build_daemon, "ignore:1", "/ctx/deep/inner/x.log") is None
    assert read_file(build_daemon, "ignore:1", "/ctx/secrets/key") is None


def test_add_extracts_local_archives(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nADD bundle.tar.gz /opt/\n"})
    payload = tmp_path / "payload"
    write(payload, {"pkg/readme": "inside the archive\n"})
    with tarfile.open(context / "bundle.tar.gz", "w:gz") as archive:
        archive.add(payload / "pkg", arcname="pkg")
    built(build_daemon, context, "-t", "add:1")
    assert read_file(build_daemon, "add:1", "/opt/pkg/readme") == b"inside the archive\n"
    assert read_file(build_daemon, "add:1", "/opt/bundle.tar.gz") is None


def test_source_date_epoch_gives_identical_digests(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": "FROM busybox\nCOPY a.txt /\nRUN date > /stamp; echo x > /x\n",
            "a.txt": "a\n",
        },
    )
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    built(build_daemon, context, "-t", "repro:1", "--no-cache", env=env)
    first_image = image(build_daemon, "repro:1")
    (context / "a.txt").touch()
    built(build_daemon, context, "-t", "repro:2", "--no-cache", env=env)
    second_image = image(build_daemon, "repro:2")
    # RUN date writes different bytes each time, so compare everything but that layer.
    assert first_image.manifest.layers[:2] == second_image.manifest.layers[:2]
    assert first_image.config.created == "2023-11-14T22:13:20Z"


def test_reproducible_image_digest_without_time_dependent_steps(
    build_daemon: Daemon, tmp_path: Path
) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": 'FROM busybox\nCOPY a.txt /\nRUN echo fixed > /x\nCMD ["cat", "/x"]\n',
            "a.txt": "a\n",
        },
    )
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    built(build_daemon, context, "-t", "same:1", "--no-cache", env=env)
    built(build_daemon, context, "-t", "same:2", "--no-cache", env=env)
    assert (
        image(build_daemon, "same:1").manifest_digest
        == image(build_daemon, "same:2").manifest_digest
    )


def test_bad_input_is_one_line_and_stores_nothing(build_daemon: Daemon, tmp_path: Path) -> None:
    cases = {
        "FROM busybox\nRUN true\n\nRUNN echo typo\n": 'Dockerfile:4: unknown instruction "RUNN"',
        "FROM busybox\nCOPY ../outside /x\n": "outside the build context",
        "FROM busybox\nCOPY missing.txt /x\n": 'source "missing.txt" was not found',
        "FROM busybox\nCOPY --from=nowhere-stage:none /a /b\n": "Dockerfile:2",
        "FROM no-such-image-here:1\nRUN true\n": 'Dockerfile:1: FROM: base image "no-such',
        "FROM busybox\nRUN echo step-output && exit 3\n": "exited with status 3",
    }
    before = {i.id for i in ImageStore(build_daemon.root).images()}
    for number, (dockerfile, expected) in enumerate(cases.items()):
        context = write(tmp_path / f"ctx{number}", {"Dockerfile": dockerfile})
        result = build(build_daemon, context, "-t", f"bad:{number}")
        assert result.returncode == 1, (dockerfile, result.stderr)
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("carte:")]
        assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert {i.id for i in ImageStore(build_daemon.root).images()} == before
    assert leftovers(build_daemon) == []
    unknown_target = build(
        build_daemon, write(tmp_path / "t", {"Dockerfile": "FROM busybox\n"}), "--target", "nope"
    )
    assert unknown_target.returncode == 1
    assert 'target stage "nope" is not defined' in unknown_target.stderr


def test_dockerfile_from_stdin_and_builder_prune(build_daemon: Daemon, tmp_path: Path) -> None:
    built(
        build_daemon, Path("-"), "-t", "stdin:1", stdin="FROM busybox\nRUN echo from-stdin > /s\n"
    )
    assert read_file(build_daemon, "stdin:1", "/s") == b"from-stdin\n"
    pruned = build_daemon.client("builder", "prune", "-f")
    assert pruned.returncode == 0 and "Deleted build cache records" in pruned.stdout
    assert list((build_daemon.root / "build-contexts").glob("session-*")) == []
    again = build(
        build_daemon, Path("-"), "-t", "stdin:1", stdin="FROM busybox\nRUN echo from-stdin > /s\n"
    )
    assert again.returncode == 0 and "CACHED" not in again.stderr


def test_add_url_onbuild_shell_volume_network_none_and_outside_dockerfile(
    build_daemon: Daemon, tmp_path: Path
) -> None:
    """ADD of a URL is served by a local HTTP server on loopback (nothing else is reachable)."""
    served = write(tmp_path / "served", {"remote.txt": "fetched over http\n"})
    with serving(served) as base_url:
        base = write(
            tmp_path / "base",
            {
                "Dockerfile": (
                    "FROM busybox\n"
                    "MAINTAINER someone@example.org\n"
                    "ONBUILD RUN echo triggered > /onbuild.txt\n"
                    'SHELL ["/bin/sh", "-ec"]\n'
                    "VOLUME /data\n"
                )
            },
        )
        built(build_daemon, base, "-t", "onbuild-base:1")
        context = write(tmp_path / "ctx", {"x": "x\n"})
        dockerfile = write(
            tmp_path / "elsewhere",
            {
                "Dockerfile.app": (
                    "FROM onbuild-base:1\n"
                    f"ADD {base_url}/remote.txt /fetched/\n"
                    "RUN --network=none ip link show | grep -c ': ' > /links\n"
                )
            },
        )
        built(build_daemon, context, "-t", "url:1", "-f", str(dockerfile / "Dockerfile.app"))
    assert read_file(build_daemon, "url:1", "/fetched/remote.txt") == b"fetched over http\n"
    assert read_file(build_daemon, "url:1", "/onbuild.txt") == b"triggered\n"
    assert read_file(build_daemon, "url:1", "/links") == b"1\n"  # only loopback
    base_image = image(build_daemon, "onbuild-base:1")
    assert base_image.config.author == "someone@example.org"
    config = base_image.config.config
    assert config is not None and config.volumes == {"/data": {}}
    assert config.shell == ("/bin/sh", "-ec")
    assert config.on_build == ("RUN echo triggered > /onbuild.txt",)
    url_config = image(build_daemon, "url:1").config.config
    assert url_config is not None and not url_config.on_build  # triggers run once, not inherited


def test_client_going_away_cancels_a_running_step(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started; sleep 60\n"})
    with running_build(build_daemon, context, "--no-cache") as client:
        client.kill()
        client.wait()
    deadline = time.monotonic() + 20
    while leftovers(build_daemon) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(build_daemon) == []


def test_build_image_command_builds_a_context_on_the_daemon_host(
    build_daemon: Daemon, tmp_path: Path
) -> None:
    context = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nCOPY f /f\n", "f": "f\n"})
    reply = build_daemon.command_(
        "BuildImage", context=str(context), options={"tags": ["hostctx:1"]}
    )
    assert reply.status == 200, reply.body
    assert reply.json()["result"]["names"] == ["hostctx:1"]
    assert read_file(build_daemon, "hostctx:1", "/f") == b"f\n"
    missing = build_daemon.command_("BuildImage", context=str(tmp_path / "nope"))
    assert missing.status == 400 and "not a directory" in missing.json()["error"]["message"]


def test_restarted_daemon_removes_what_a_killed_one_left(
    daemons: DaemonFactory, busybox_tar: Path, tmp_path: Path
) -> None:
    import signal

    daemon = daemons()
    assert daemon.client("import", str(busybox_tar), "busybox:latest").returncode == 0
    context = write(tmp_path / "ctx", {"Dockerfile": "FROM busybox\nRUN echo started; sleep 60\n"})
    with running_build(daemon, context) as client:
        daemon.stop(signal.SIGKILL)
        client.wait(timeout=30)
    assert leftovers(daemon) != []
    restarted = daemons(workdir=daemon.workdir)
    assert leftovers(restarted) == []


def test_heredocs_in_run_and_copy(build_daemon: Daemon, tmp_path: Path) -> None:
    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox\n"
                "ARG WHO=world\n"
                "RUN <<EOF\n"
                'echo "first" > /h1\n'
                'echo "second $WHO" >> /h1\n'
                "EOF\n"
                "RUN cat > /h2 <<'END'\n"
                "literal $WHO\n"
                "END\n"
                "COPY <<CONF /etc/app.conf\n"
                'greeting="hello $WHO"\n'
                "CONF\n"
            )
        },
    )
    built(build_daemon, context, "-t", "heredoc:1")
    assert read_file(build_daemon, "heredoc:1", "/h1") == b"first\nsecond world\n"
    assert read_file(build_daemon, "heredoc:1", "/h2") == b"literal $WHO\n"
    assert read_file(build_daemon, "heredoc:1", "/etc/app.conf") == b'greeting="hello world"\n'


def test_from_a_registry_reference_pulls_the_base(build_daemon: Daemon, tmp_path: Path) -> None:
    """Debian's docker-registry on loopback serves a busybox pushed by the image library."""

    from support.registry import start_registry

    from carte.image import Registry, parse_reference

    registry_run = start_registry(tmp_path / "registry", None)
    registry = next(registry_run)
    try:
        store = ImageStore(build_daemon.root)
        reference = parse_reference(f"{registry.host}/test/bb:1")
        Registry(registry.host).push(store, store.get("busybox:latest"), reference)
        context = write(
            tmp_path / "ctx",
            {"Dockerfile": f"FROM {registry.host}/test/bb:1\nRUN echo pulled > /p\n"},
        )
        built(build_daemon, context, "-t", "pulled:1", "--label", "origin=registry")
        assert read_file(build_daemon, "pulled:1", "/p") == b"pulled\n"
        assert (
            image(build_daemon, f"{registry.host}/test/bb:1").id
            == image(build_daemon, "busybox:latest").id
        )
        config = image(build_daemon, "pulled:1").config.config
        assert config is not None and config.labels == {"origin": "registry"}
        again = build(build_daemon, context, "-t", "pulled:1", "--pull")
        assert again.returncode == 0 and again.stderr.count("CACHED") == 1, again.stderr
    finally:
        registry_run.close()


def test_adopted_layer_dirs_match_their_blobs(build_daemon: Daemon, tmp_path: Path) -> None:
    """A step's upper dir becomes the cached layer; it must equal an unpack of the blob."""
    from carte.image.digest import chain_ids
    from carte.image.layers import extract_layer, layer_dir

    context = write(
        tmp_path / "ctx",
        {
            "Dockerfile": (
                "FROM busybox\n"
                "RUN mkdir -p /data/sub && echo new > /data/sub/f && rm /etc/group "
                "&& rm -rf /tmp && mkdir /tmp && chmod 1777 /tmp\n"
                "COPY f.txt /data/\n"
            ),
            "f.txt": "f\n",
        },
    )
    built(build_daemon, context, "-t", "adopt:1", "--no-cache", env={"SOURCE_DATE_EPOCH": "1000"})
    adopted = image(build_daemon, "adopt:1")
    store = ImageStore(build_daemon.root)
    chains = chain_ids(adopted.diff_ids)
    for descriptor, chain in list(zip(adopted.manifest.layers, chains, strict=True))[1:]:
        fresh = tmp_path / f"fresh-{chain[7:19]}"
        fresh.mkdir()
        with store.open_blob(descriptor.digest) as blob:
            extract_layer(blob, fresh, trusted=True, what=descriptor.digest)
        assert _tree(layer_dir(store, chain)) == _tree(fresh)


def _tree(root: Path) -> dict[str, tuple[int, int, int, int, int, tuple[str, ...]]]:
    found = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        xattrs = () if path.is_symlink() else tuple(sorted(os.listxattr(path)))
        whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # its time is never seen
        mtime = 0 if whiteout else int(st.st_mtime)
        found[str(path.relative_to(root))] = (
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_rdev,
            mtime,
            xattrs,
        )
    return found
