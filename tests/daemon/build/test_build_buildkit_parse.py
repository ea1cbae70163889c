"""BuildKit syntax in the parser and planner (in-process): repeated --mount flags, heredoc
names with dots, --mount values, the automatic platform ARGs, COPY --exclude patterns."""

from __future__ import annotations

import pytest

from carte.build._copy import Excludes
from carte.build._mounts import MountError, parse_mount
from carte.build._stages import plan_stages
from carte.build.dockerfile import DockerfileError, parse
from carte.image.importer import host_architecture


def test_every_mount_flag_is_kept_in_order() -> None:
    run = parse(
        "FROM b\nRUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b"
        " --network=none --mount=type=secret,id=s true\n"
    ).instructions[1]
    assert run.values("mount") == (
        "type=cache,target=/a",
        "type=tmpfs,target=/b",
        "type=secret,id=s",
    )
    assert run.values("network") == ("none",)
    assert run.text == "true"
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: COPY: --from is given twice"):
        parse("FROM b\nCOPY --from=a --from=b x /\n")


def test_heredoc_names_with_dots() -> None:
    copy = parse(
        "FROM b\nCOPY <<robots.txt <<humans-v1.txt /dir/\nUser-agent: *\nrobots.txt\n"
        "hi\nhumans-v1.txt\nRUN $((1<<2))\n"
    ).instructions[1]
    assert [(h.name, h.body) for h in copy.heredocs] == [
        ("robots.txt", "User-agent: *\n"),
        ("humans-v1.txt", "hi\n"),
    ]


def test_mount_values() -> None:
    cache = parse_mount("type=cache,target=.cache,sharing=locked,mode=0700,uid=5", "/w")
    assert (cache.target, cache.id, cache.sharing, cache.mode, cache.uid) == (
        "/w/.cache",
        "/w/.cache",
        "locked",
        0o700,
        5,
    )
    bind = parse_mount("src=data,dst=/d,from=build,rw", "/")
    assert (bind.type, bind.source, bind.target, bind.from_, bind.readonly) == (
        "bind",
        "data",
        "/d",
        "build",
        False,
    )
    assert parse_mount("type=bind,target=/d", "/").readonly
    secret = parse_mount("type=secret,id=aws", "/")
    assert (secret.target, secret.required) == ("/run/secrets/aws", False)
    assert parse_mount("type=secret,id=k,env=KEY", "/").target == ""
    assert parse_mount("type=tmpfs,target=/t,size=64m", "/").size == 64 << 20
    for bad, message in (
        ("type=nfs,target=/x", 'type "nfs" is unknown'),
        ("type=cache", "needs target=PATH"),
        ("type=secret", "needs id="),
        ("type=cache,target=/x,sharing=maybe", "sharing= must be"),
        ("type=cache,target=/x,mode=rwx", "not an octal mode"),
        ("type=tmpfs,target=/x,size=big", "not a size"),
        ("type=tmpfs,target=/x,required=yes", 'has no option "required"'),
    ):
        with pytest.raises(MountError, match=message):
            parse_mount(bad, "/")


def test_platform_args_in_from_lines_and_foreign_platforms_refused() -> None:
    arch = host_architecture()
    plan = plan_stages(
        parse(
            f"FROM --platform=$BUILDPLATFORM img-$TARGETARCH AS a\nFROM --platform=linux/{arch} b\n"
        ),
        {},
    )
    assert plan.stages[0].base == f"img-{arch}"
    assert plan.global_args["TARGETPLATFORM"] == f"linux/{arch}"
    assert plan.global_args["TARGETOS"] == "linux"
    with pytest.raises(DockerfileError, match=r"^Dockerfile:1: FROM: --platform \"windows/"):
        plan_stages(parse(f"FROM --platform=windows/{arch} b\n"), {})


def test_exclude_patterns() -> None:
    excludes = Excludes(["**/*.log", "b/skip", "*.tmp"])
    assert excludes.excluded("/src/a/debug.log", "/src")
    assert excludes.excluded("/src/b/skip/three.txt", "/src")
    assert excludes.excluded("/x.tmp")
    assert not excludes.excluded("/src/a/x.tmp", "/src")  # `*` stays within one level
    assert not excludes.excluded("/src/a/one.txt", "/src")
    assert not Excludes([])
