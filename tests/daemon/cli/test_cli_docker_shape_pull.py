"""`run --pull` and `compose up` fetch a missing image themselves, as Docker does, from a
real registry (Debian's docker-registry on loopback)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.containers import ok
from support.daemon import Daemon
from support.module_daemon import daemon_fixtures
from support.registry import RunningRegistry, start_registry

CONFIG = 'network:\n  pools: ["10.92.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


pull_daemon, carte = daemon_fixtures("pull_daemon", config=CONFIG, stacks=True, networks=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    yield from start_registry(tmp_path_factory.mktemp("shape-registry") / "open", None)


def pushed(carte: Daemon, registry: RunningRegistry, tag: str) -> str:
    """A busybox copy in the registry, absent locally."""
    name = f"{registry.host}/shape/bb:{tag}"
    ok(carte.client("tag", "busybox", name))
    ok(carte.client("push", name))
    ok(carte.client("rmi", name))
    return name


def test_run_pulls_a_missing_image(carte: Daemon, registry: RunningRegistry) -> None:
    name = pushed(carte, registry, "run")
    never = carte.client("run", "--rm", "--pull", "never", name, "true")
    assert never.returncode == 125 and "locally" in never.stderr
    assert "Digest" not in never.stderr  # nothing was pulled
    ran = carte.client("run", "--rm", name, "echo", "pulled")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "pulled\n"
    assert f"Unable to find image '{name}' locally" in ran.stderr
    ok(carte.client("image", "inspect", name))  # now held locally
    again = carte.client("run", "--rm", "--pull", "always", name, "true")
    assert again.returncode == 0 and "Digest: sha256:" in again.stderr


def test_compose_up_pulls_missing_images(
    carte: Daemon, registry: RunningRegistry, tmp_path: Path
) -> None:
    name = pushed(carte, registry, "compose")
    (tmp_path / "compose.yaml").write_text(
        f'services:\n  app:\n    image: {name}\n    command: ["sleep", "600"]\n'
    )
    up = subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", "compose", "up", "-d"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=carte.env,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert " Service app  Created" in up.stdout
    ok(carte.client("image", "inspect", name))  # now held locally


def test_run_interactive_pulls_a_missing_image(carte: Daemon, registry: RunningRegistry) -> None:
    """`run -i` (and -it) pulls as `run -d` does: the default is --pull missing."""
    name = pushed(carte, registry, "interactive")
    never = subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", "run", "-i", "--rm",
         "--pull", "never", name, "cat"],
        input="", capture_output=True, text=True, timeout=60, env=carte.env,
    )  # fmt: skip
    assert never.returncode == 125 and "locally" in never.stderr
    ran = subprocess.run(
        [*carte.command, "--host", f"unix://{carte.socket}", "run", "-i", "--rm", name,
         "sh", "-c", "read line; echo got $line"],
        input="hello\n", capture_output=True, text=True, timeout=120, env=carte.env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "got hello\n"
    assert f"Unable to find image '{name}' locally" in ran.stderr
    assert "Digest: sha256:" in ran.stderr
    ok(carte.client("image", "inspect", name))  # now held locally
