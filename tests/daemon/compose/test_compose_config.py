"""`carte compose config` prints the normalized Compose file as `docker compose config` does,
and relative paths of an included file resolve against that file's directory, both when
printed and when deployed to a real daemon (checked inside the replica)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML
from support.containers import ok, wait_for
from support.daemon import Daemon

Compose = Callable[..., subprocess.CompletedProcess[str]]

MAIN = """\
name: shop
include:
  - parts/extra.yaml
services:
  web:
    image: busybox
    command: httpd -f -p 8080
    environment:
      - GREETING=${GREETING:-hi}
    env_file: web.env
    ports: ["127.0.0.1:18941:8080", "9000"]
    volumes: ["./site:/site:ro", "cache:/cache"]
    depends_on: [helper]
  debug:
    image: busybox
    profiles: [debug]
volumes:
  cache: {}
secrets:
  token:
    file: ./token.txt
"""

EXTRA = """\
services:
  helper:
    image: busybox
    command: ["sh", "-c", "cat /notes/note; echo helper has $$FROM_EXTRA; exec sleep 3600"]
    env_file: extra.env
    volumes: ["./notes:/notes"]
"""


def write_project(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    (directory / "parts" / "notes").mkdir(parents=True)
    (directory / "compose.yaml").write_text(MAIN)
    (directory / "web.env").write_text("FROM_FILE=1\n")
    (directory / "token.txt").write_text("s3cret\n")
    (directory / "parts" / "extra.yaml").write_text(EXTRA)
    (directory / "parts" / "extra.env").write_text("FROM_EXTRA=yes\n")
    (directory / "parts" / "notes" / "note").write_text("note from parts/notes\n")
    return directory


def test_config_prints_the_normalized_file(compose: Compose, tmp_path: Path) -> None:
    cwd = write_project(tmp_path)
    printed = compose("config", cwd=cwd)
    assert printed.returncode == 0, printed.stderr
    project = YAML(typ="safe").load(printed.stdout)
    assert project["name"] == "shop"
    assert list(project["services"]) == ["helper", "web"]  # debug's profile is not enabled
    web = project["services"]["web"]
    assert web["command"] == ["httpd", "-f", "-p", "8080"]
    assert web["environment"] == {"FROM_FILE": "1", "GREETING": "hi"}  # env_file read in
    assert "env_file" not in web
    assert web["ports"] == [
        {
            "mode": "ingress",
            "target": 8080,
            "host_ip": "127.0.0.1",
            "published": "18941",
            "protocol": "tcp",
        },
        {"mode": "ingress", "target": 9000, "protocol": "tcp"},
    ]
    assert web["volumes"][0] == {
        "type": "bind",
        "source": str(cwd / "site"),
        "target": "/site",
        "bind": {"create_host_path": True},
        "read_only": True,
    }
    assert web["volumes"][1] == {"type": "volume", "source": "cache", "target": "/cache"}
    assert web["depends_on"]["helper"]["condition"] == "service_started"
    assert web["networks"] == {"default": None}
    # the included file's paths are relative to its own directory
    helper = project["services"]["helper"]
    assert helper["volumes"][0]["source"] == str(cwd / "parts" / "notes")
    assert helper["environment"] == {"FROM_EXTRA": "yes"}
    assert project["networks"] == {"default": {"name": "shop_default"}}
    assert project["volumes"] == {"cache": {"name": "shop_cache"}}
    assert project["secrets"]["token"] == {"file": str(cwd / "token.txt"), "name": "shop_token"}
    # interpolated from the environment; the flags as Compose's
    env = {"GREETING": "hello"}
    as_json = json.loads(ok(compose("config", "--format", "json", cwd=cwd, env=env)))
    assert as_json["services"]["web"]["environment"]["GREETING"] == "hello"
    assert ok(compose("config", "--services", cwd=cwd)).split() == ["helper", "web"]
    with_debug = compose("--profile", "debug", "config", "--services", cwd=cwd)
    assert ok(with_debug).split() == ["debug", "helper", "web"]
    assert ok(compose("config", "--volumes", cwd=cwd)).split() == ["cache"]
    assert ok(compose("config", "-q", cwd=cwd)) == ""
    # a problem: one line with file:line, exit 1, nothing printed on stdout
    (cwd / "compose.yaml").write_text(MAIN.replace("depends_on: [helper]", "depends_on: [db]"))
    bad = compose("config", cwd=cwd)
    assert (bad.returncode, bad.stdout) == (1, "")
    assert bad.stderr.startswith("carte: compose.yaml:13: services.web.depends_on[0]:")
    assert len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr


def test_included_files_paths_resolve_in_their_directory_when_deployed(
    compose: Compose, carte: Daemon, tmp_path: Path
) -> None:
    cwd = write_project(tmp_path)
    (cwd / "site").mkdir()
    up = compose("up", "-d", cwd=cwd)
    assert up.returncode == 0, up.stderr

    def helper_said() -> bool:
        return "helper has yes" in compose("logs", "helper", cwd=cwd).stdout

    wait_for(helper_said, 60, "the helper's lines")
    said = ok(compose("logs", "--no-log-prefix", "helper", cwd=cwd)).splitlines()
    assert said == ["note from parts/notes", "helper has yes"]
    ok(compose("down", "-v", cwd=cwd))
