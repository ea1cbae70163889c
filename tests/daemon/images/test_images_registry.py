"""pull, push, login and logout through a real daemon, against Debian's docker-registry on
loopback, with skopeo as the independent reader and writer."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from images_peers import PASSWORD, USER, BreakableRegistry, skopeo, write_oci_layout
from support.daemon import Daemon, DaemonFactory
from support.registry import RunningRegistry


def ok(result: object) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"  # type: ignore[attr-defined]
    return result.stdout  # type: ignore[attr-defined,no-any-return]


def error_lines(stderr: str) -> list[str]:
    """The error lines of a client's stderr (progress lines left out)."""
    return [line for line in stderr.splitlines() if line.startswith("carte:")]


def image_ids(carte: Daemon) -> set[str]:
    return set(ok(carte.client("images", "-q", "--no-trunc")).split())


def test_push_is_what_skopeo_reads_and_pull_brings_it_back(
    carte: Daemon, registry: RunningRegistry
) -> None:
    name = f"{registry.host}/carte/bb:push"
    ok(carte.client("tag", "busybox", name))
    pushed = carte.client("push", name)
    ok(pushed)
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    local = json.loads(ok(carte.client("image", "inspect", name)))[0]
    assert inspected["Digest"] == local["manifest_digest"]
    assert inspected["Digest"] in pushed.stdout
    assert "Pushed" in pushed.stderr
    # Pushing again sends nothing: every blob is already there.
    again = carte.client("push", name)
    ok(again)
    assert "Pushed" not in again.stderr and "Already exists" in again.stderr

    ok(carte.client("rmi", name))
    pulled = carte.client("pull", name)
    ok(pulled)
    assert local["manifest_digest"] in pulled.stdout
    # busybox holds the same layer locally, so nothing is downloaded.
    assert "Downloading" not in pulled.stderr and "Already exists" in pulled.stderr
    assert json.loads(ok(carte.client("image", "inspect", name)))[0]["id"] == local["id"]


def test_an_image_skopeo_pushed_is_pulled_and_runs(
    carte: Daemon, registry: RunningRegistry, busybox_tar: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    write_oci_layout(layout, busybox_tar, "v1", ["/bin/echo", "from skopeo"])
    name = f"{registry.host}/skopeo/bb:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{name}")
    pulled = carte.client("pull", name)
    ok(pulled)
    assert "Pull complete" in pulled.stderr  # not a terminal: one line per state change
    run = carte.client("run", "--rm", "--network", "none", name)
    assert ok(run).strip() == "from skopeo"
    ok(carte.client("rmi", name))


def test_pull_of_a_missing_tag_is_one_line(carte: Daemon, registry: RunningRegistry) -> None:
    result = carte.client("pull", f"{registry.host}/carte/nothing:here")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "not found in registry" in result.stderr


def test_login_pull_push_logout_on_a_registry_with_auth(
    carte: Daemon, private_registry: RunningRegistry
) -> None:
    host = private_registry.host
    name = f"{host}/private/bb:1"
    ok(carte.client("tag", "busybox", name))
    refused = carte.client("push", name)
    assert refused.returncode == 1
    assert f"run carte login {host}" in refused.stderr
    assert refused.stderr.count("\n") == 1

    auth_file = carte.config_home / "carte" / "auth.json"  # type: ignore[attr-defined]
    wrong = carte.client("login", host, "-u", USER, "--password-stdin", env=None)
    assert wrong.returncode != 0  # empty password on stdin
    bad = carte.client("login", host, "-u", USER, "-p", "not-the-password")
    assert bad.returncode == 1 and f"run carte login {host}" in bad.stderr
    assert not auth_file.exists()

    ok(carte.client("login", host, "-u", USER, "-p", PASSWORD))
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert host in json.loads(auth_file.read_text())["auths"]
    ok(carte.client("push", name))
    ok(carte.client("rmi", name))
    ok(carte.client("pull", name))

    ok(carte.client("logout", host))
    assert host not in json.loads(auth_file.read_text())["auths"]
    ok(carte.client("rmi", name))
    again = carte.client("pull", name)
    assert again.returncode == 1 and f"run carte login {host}" in again.stderr


def test_an_interrupted_pull_leaves_nothing_and_the_next_completes(
    carte: Daemon, busybox_tar: Path
) -> None:
    before = image_ids(carte)
    with BreakableRegistry(busybox_tar) as server:
        name = f"{server.host}/broken/bb:1"
        layer_digest = "sha256:" + __import__("hashlib").sha256(server.layer).hexdigest()
        blob = carte.root / "blobs" / "sha256" / layer_digest.removeprefix("sha256:")

        server.mode = "truncate"
        cut = carte.client("pull", name)
        assert cut.returncode == 1
        [message] = error_lines(cut.stderr)
        assert "broke off" in message and layer_digest in message
        assert not blob.exists()
        assert not list((carte.root / "ingest").glob("blob-*"))
        assert image_ids(carte) == before

        server.mode = "corrupt"
        corrupt = carte.client("pull", name)
        assert corrupt.returncode == 1
        [message] = error_lines(corrupt.stderr)
        assert "nothing was stored" in message and "hashes to" in message
        assert not blob.exists() and image_ids(carte) == before

        server.mode = "ok"
        ok(carte.client("pull", name))
        assert blob.exists()
        run = carte.client("run", "--rm", "--network", "none", name, "echo", "whole")
        assert ok(run).strip() == "whole"
        ok(carte.client("rmi", name))


def test_plain_http_only_for_loopback_names_or_when_allowed(
    carte: Daemon, busybox_tar: Path
) -> None:
    """127.0.0.2 is not one of the loopback names, so it gets HTTPS unless allowed."""
    with BreakableRegistry(busybox_tar, address="127.0.0.2") as server:
        name = f"{server.host}/broken/bb:1"
        refused = carte.client("pull", name)
        assert refused.returncode == 1
        [message] = error_lines(refused.stderr)
        assert "HTTPS" in message and "--insecure-registry" in message
        assert server.blob_requests == 0
        ok(carte.client("pull", "--insecure-registry", name))
        ok(carte.client("rmi", name))


def test_images_insecure_registries_in_carte_yaml_allows_plain_http(busybox_tar: Path) -> None:
    with BreakableRegistry(busybox_tar, address="127.0.0.2") as server:
        factory = DaemonFactory()
        try:
            config = f'images:\n  insecure_registries: ["{server.host}"]\n'
            daemon = factory(config=config)
            ok(daemon.client("pull", f"{server.host}/broken/bb:1", timeout=60))
            assert server.blob_requests == 1
        finally:
            factory.cleanup()
