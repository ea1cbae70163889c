"""`--platform` on run, create and build as Docker users pass it from docs, and `build
--iidfile`, against a real daemon: the host's platform is accepted, another one is refused
in one line with the reason (exit 125, nothing created)."""

from __future__ import annotations

import platform
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures

CONFIG = 'network:\n  pools: ["10.241.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'

platform_daemon, carte = daemon_fixtures("platform_daemon", config=CONFIG)

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OTHER = "linux/s390x" if ARCH != "s390x" else "linux/amd64"


def test_platform_and_iidfile(carte: Daemon, tmp_path: Path) -> None:
    ran = carte.client("run", "--rm", "--platform", f"linux/{ARCH}", "busybox", "echo", "native")
    assert ok(ran).strip() == "native"
    for verb in ("run", "create"):
        refused = carte.client(verb, "--name", "foreign", "--platform", OTHER, "busybox", "true")
        assert refused.returncode == 125 and len(refused.stderr.splitlines()) == 1
        assert f"is not this host's platform (linux/{ARCH})" in refused.stderr
    assert ok(carte.client("ps", "-aq")) == ""  # nothing created
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo built > /built\n")
    iidfile = tmp_path / "iid"
    built = carte.client(
        "build", "-q", "--platform", f"linux/{ARCH}", "--iidfile", str(iidfile), "-t", "mine",
        str(tmp_path),
    )  # fmt: skip
    image_id = ok(built).strip()
    assert iidfile.read_text() == image_id
    assert ok(carte.client("image", "inspect", "-f", "{{.Id}}", "mine")).strip() == image_id
    refused = carte.client("build", "--platform", OTHER, "-t", "other", str(tmp_path))
    assert refused.returncode == 125 and "not this host's platform" in refused.stderr
    assert carte.client("image", "inspect", "other").returncode == 1
