"""Compose keys against a real daemon, each checked where it takes effect: inside the replica
(its /proc, /etc files and mounts), in what the daemon made (networks, volumes), or in the
one-line refusal naming file, line and key."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from support.containers import ok
from support.daemon import Daemon

CAP_NET_ADMIN = 12
CAP_NET_RAW = 13


def write(directory: Path, text: str, name: str = "compose.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def sh(carte: Daemon, container: str, script: str) -> str:
    return ok(carte.client("exec", container, "sh", "-c", script))


def running(carte: Daemon, *names: str) -> Callable[[], bool]:
    """Whether every named container runs (an exec in it works)."""

    def check() -> bool:
        return all(carte.client("exec", name, "true").returncode == 0 for name in names)

    return check


KEYS = """\
name: keys
services:
  web:
    image: busybox
    container_name: keys-web
    command: [sleep, "300"]
    stop_signal: KILL
    cap_add: [NET_ADMIN]
    cap_drop: [NET_RAW]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    sysctls: {net.core.somaxconn: "1234"}
    extra_hosts: ["db.example:10.1.2.3"]
    dns: [10.9.9.9]
    dns_search: [example.internal]
    tmpfs: [/scratch]
    stdin_open: true
    tty: true
    platform: linux/amd64
    environment: [PASSTHRU, FIXED=1]
    secrets:
      - api_key
      - {source: db_pw, target: dbpass, uid: "1000", gid: "1000", mode: 0400}
    configs:
      - {source: app_conf, target: /etc/app.conf}
    healthcheck: {test: [CMD, "true"], interval: 5m, start_period: 5m, start_interval: 500ms}
    deploy:
      placement: {constraints: ["node.role==manager"]}
secrets:
  api_key: {file: ./api_key.txt}
  db_pw: {environment: DB_PASSWORD}
configs:
  app_conf: {content: "port=80"}
"""


def test_service_keys_take_effect_inside_the_container(carte: Daemon, tmp_path: Path) -> None:
    (tmp_path / "api_key.txt").write_text("s3cr3t-api-key")
    env = {**carte.env, "PASSTHRU": "from-client", "DB_PASSWORD": "pw-from-env"}
    ok(carte.client("apply", "-f", str(write(tmp_path, KEYS)), env=env))
    wait_for(running(carte, "keys-web"), 20, "keys-web running")
    status = sh(carte, "keys-web", "grep -E '^Cap(Eff)' /proc/1/status").split()[-1]
    caps = int(status, 16)
    assert caps & (1 << CAP_NET_ADMIN) and not caps & (1 << CAP_NET_RAW)
    limits = sh(carte, "keys-web", "grep -E 'open files|processes' /proc/1/limits")
    assert "1024                 2048" in limits and "512                  512" in limits
    assert sh(carte, "keys-web", "cat /proc/sys/net/core/somaxconn").strip() == "1234"
    assert "10.1.2.3\tdb.example" in sh(carte, "keys-web", "cat /etc/hosts")
    resolv = sh(carte, "keys-web", "cat /etc/resolv.conf")
    assert "nameserver 10.9.9.9" in resolv and "search example.internal" in resolv
    assert "tmpfs /scratch tmpfs" in sh(carte, "keys-web", "cat /proc/mounts")
    assert sh(carte, "keys-web", "readlink /proc/1/fd/0").startswith("/dev/pts/")
    env_out = sh(carte, "keys-web", "env")
    assert "PASSTHRU=from-client" in env_out and "FIXED=1" in env_out
    assert sh(carte, "keys-web", "cat /run/secrets/api_key") == "s3cr3t-api-key"
    owner = sh(carte, "keys-web", "stat -c '%a %u %g' /run/secrets/dbpass /run/secrets/api_key")
    assert owner.split("\n")[:2] == ["400 1000 1000", "444 0 0"]
    assert sh(carte, "keys-web", "cat /run/secrets/dbpass") == "pw-from-env"
    assert sh(carte, "keys-web", "cat /etc/app.conf") == "port=80"
    # secrets never in inspect, the service's inspect or the daemon's log
    shown = ok(carte.client("inspect", "keys-web")) + ok(
        carte.client("service", "inspect", "keys_web")
    )
    for secret in ("s3cr3t-api-key", "pw-from-env"):
        assert secret not in shown and secret not in carte.log()
    assert "node.role==manager" in shown
    # probes every start_interval during the start period: healthy long before interval (5m)
    wait_for(
        lambda: "healthy" in ok(carte.client("ps", "--filter", "name=keys-web")),
        15,
        "keys-web healthy",
    )


NETWORKS = """\
services:
  Web:
    image: busybox
    container_name: nets-web
    command: [sh, -c, "mkdir -p /data && echo shared > /data/file && exec sleep 300"]
    stop_signal: KILL
    volumes: ["data:/data", "ext:/ext"]
    networks:
      front:
        ipv4_address: 10.93.200.50
        aliases: [www]
      shared: {}
    mac_address: 02:42:0a:5d:c8:32
    ipc: shareable
  sidecar:
    image: busybox
    container_name: nets-sidecar
    command: [sleep, "300"]
    stop_signal: KILL
    network_mode: service:Web
    volumes_from: [Web]
    ipc: service:Web
  isolated:
    image: busybox
    container_name: nets-isolated
    command: [sleep, "300"]
    stop_signal: KILL
    network_mode: none
  hostnet:
    image: busybox
    container_name: nets-hostnet
    command: [sleep, "300"]
    stop_signal: KILL
    network_mode: host
    ipc: host
  joiner:
    image: busybox
    container_name: nets-joiner
    command: [sleep, "300"]
    stop_signal: KILL
    network_mode: container:nets-web
    ipc: container:nets-web
  once:
    image: busybox
    command: [sh, -c, "echo done"]
    restart: "no"
  debug:
    image: busybox
    container_name: nets-debug
    command: [sleep, "300"]
    profiles: [debug]
networks:
  front:
    ipam:
      config: [{subnet: 10.93.200.0/24, gateway: 10.93.200.1}]
  shared:
    external: true
    name: keys-shared
volumes:
  data: {}
  ext:
    external: true
    name: keys-ext
"""


def test_network_volume_restart_and_profile_keys(carte: Daemon, tmp_path: Path) -> None:
    missing = carte.client("apply", "-n", "nets", "-f", str(write(tmp_path, NETWORKS)))
    assert missing.returncode != 0
    assert 'external network "keys-shared" does not exist' in missing.stderr
    assert 'external volume "keys-ext" does not exist' in missing.stderr
    assert "nets" not in ok(carte.client("stack", "ls"))
    ok(carte.client("network", "create", "keys-shared"))
    ok(carte.client("volume", "create", "keys-ext"))
    ok(carte.client("apply", "-n", "nets", "-f", str(tmp_path / "compose.yaml")))
    wait_for(running(carte, "nets-web", "nets-sidecar", "nets-isolated"), 30, "replicas run")
    addresses = sh(carte, "nets-web", "ip -4 -o addr")
    assert "10.93.200.50/24" in addresses
    assert "02:42:0a:5d:c8:32" in sh(carte, "nets-web", "ip -o link")
    # the sidecar shares Web's network namespace and its volumes
    assert sh(carte, "nets-sidecar", "ip -4 -o addr") == addresses
    assert sh(carte, "nets-sidecar", "cat /data/file").strip() == "shared"
    assert "eth" not in sh(carte, "nets-isolated", "ip -o link")
    wait_for(running(carte, "nets-hostnet", "nets-joiner"), 30, "host and joined replicas")
    for kind in ("net", "ipc"):
        host_ns = os.readlink(f"/proc/self/ns/{kind}")
        assert sh(carte, "nets-hostnet", f"readlink /proc/1/ns/{kind}").strip() == host_ns
    assert sh(carte, "nets-joiner", "ip -4 -o addr") == addresses
    # ipc: service:Web and container:nets-web join Web's shareable IPC namespace and /dev/shm
    ipc = sh(carte, "nets-web", "readlink /proc/1/ns/ipc").strip()
    assert ipc != os.readlink("/proc/self/ns/ipc")
    sh(carte, "nets-sidecar", "echo from-sidecar > /dev/shm/note")
    for joiner in ("nets-sidecar", "nets-joiner"):
        assert sh(carte, joiner, "readlink /proc/1/ns/ipc").strip() == ipc, joiner
        assert sh(carte, joiner, "cat /dev/shm/note").strip() == "from-sidecar", joiner
    # aliases and the uppercase service name resolve on the custom network
    for name in ("www", "tasks.web", "Web_1", "web"):
        assert "10.93.200.50" in sh(carte, "nets-web", f"nslookup {name} 2>&1 || true"), name
    # ...and on every other network the replica shares (the external one here)
    shared_ip = sh(carte, "nets-web", "ip -4 -o addr show eth1").split()[3].split("/")[0]
    found = ok(
        carte.client(
            "run",
            "--rm",
            "--network",
            "keys-shared",
            "busybox",
            "sh",
            "-c",
            "for n in web tasks.Web Web_1; do nslookup $n; done 2>&1",
        )
    )
    assert found.count(shared_ip) >= 3, found
    # a one-shot "no" service exits 0 and stays exited (not replaced)
    time.sleep(2)
    once = [line for line in ok(carte.client("ps", "-a")).splitlines() if "nets_once" in line]
    assert len(once) == 1 and "Exited (0)" in once[0]
    assert carte.client("exec", "nets-debug", "true").returncode != 0  # profile not enabled
    ok(carte.client("stack", "rm", "nets"))
    assert "keys-shared" in ok(carte.client("network", "ls"))  # external: kept
    assert "keys-ext" in ok(carte.client("volume", "ls"))
    ok(
        carte.client(
            "apply", "-n", "nets", "--profile", "debug", "-f", str(tmp_path / "compose.yaml")
        )
    )
    wait_for(running(carte, "nets-debug"), 30, "the debug profile's service runs")


PORTS = """\
services:
  web:
    image: busybox
    command: [sh, -c, "echo hello > /index.html && exec httpd -f -p 80 -h /"]
    stop_signal: KILL
    ports: ["127.0.0.1:18581:80", "80"]
"""


def http_get(address: str, port: int) -> str:
    with socket.create_connection((address, port), timeout=2) as conn:
        conn.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode().partition("\r\n\r\n")[2].strip()


def test_ports_bind_only_their_host_ip_and_bare_ports_get_a_random_one(
    carte: Daemon, tmp_path: Path
) -> None:
    ok(carte.client("apply", "-n", "ports", "-f", str(write(tmp_path, PORTS))))
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls")))
    published = {(p["host_ip"], p["container_port"]): p["host_port"] for p in rows[0]["ports"]}
    assert published[("127.0.0.1", 80)] == 18581
    random_port = published[("", 80)]
    assert 0 < random_port != 18581
    wait_for(lambda: _answers("127.0.0.1", 18581), 30, "the published port answers")
    assert http_get("127.0.0.1", random_port) == "hello"
    # the stack network's gateway is another local address: 18581 is not published there
    network = json.loads(
        ok(carte.client("--format", "json", "network", "inspect", "ports_default"))
    )
    gateway = (network[0] if isinstance(network, list) else network)["gateway"]
    assert _answers(gateway, random_port)
    assert not _answers(gateway, 18581)
    again = ok(carte.client("apply", "-n", "ports", "-f", str(tmp_path / "compose.yaml")))
    assert "unchanged" in again
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls")))
    assert random_port in {p["host_port"] for p in rows[0]["ports"]}  # kept across applies


def _answers(address: str, port: int) -> bool:
    try:
        return http_get(address, port) == "hello"
    except OSError:
        return False


BAD = """\
services:
  web:
    image: busybox
    deploy:
      replcas: 2
    restart: sometimes
    networks: [front]
  db:
    image: busybox
    ports: !override ["5432:5432"]
    sysctls: {kernel.panic: "1"}
networks:
  front: {}
"""


def test_bad_input_lists_every_problem_and_changes_nothing(carte: Daemon, tmp_path: Path) -> None:
    logged = len(carte.log())
    missing = carte.client("apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.returncode != 0
    assert missing.stderr.startswith("carte: ") and "the Compose file is missing" in missing.stderr
    bad = carte.client("apply", "-n", "bad", "-f", str(write(tmp_path, BAD)))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    lines = [line.removeprefix("carte: ") for line in bad.stderr.strip().splitlines()]
    assert lines == [
        'compose.yaml:5: services.web.deploy.replcas: unknown key "replcas"; did you mean '
        '`replicas`? remove it or prefix it with "x-"',
        'compose.yaml:6: services.web.restart: "sometimes" is not a restart policy; use "no", '
        "always, on-failure[:N] or unless-stopped",
        "compose.yaml:11: services.db.sysctls.kernel.panic: kernel.panic is not namespaced: it "
        "would change the host; only net.*, fs.mqueue.* and kernel.shm*/msg*/sem are allowed",
    ]
    assert "bad" not in ok(carte.client("stack", "ls"))
    assert "bad_front" not in ok(carte.client("network", "ls"))
    log = carte.log()[logged:]
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]


BUILD = """\
services:
  app:
    container_name: built
    command: [sleep, "300"]
    stop_signal: KILL
    build:
      context: .
      target: base
      args:
        GREETING: hello
      secrets:
        - token
      dockerfile_inline: |
        FROM busybox AS base
        ARG GREETING=hi
        RUN echo $$GREETING > /greeting
        RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /seen
        FROM base AS final
        RUN touch /final
secrets:
  token:
    environment: BUILD_TOKEN
"""


def test_build_keys(carte: Daemon, tmp_path: Path) -> None:
    env = {**carte.env, "BUILD_TOKEN": "s3cr3t"}
    ok(carte.client("apply", "-f", str(write(tmp_path, BUILD)), env=env, timeout=180))
    wait_for(running(carte, "built"), 30, "the built replica runs")
    assert sh(carte, "built", "cat /greeting /seen").split() == ["hello", "6"]
    assert "No such file" in sh(carte, "built", "ls /final 2>&1 || true")  # target: base
    assert "s3cr3t" not in ok(carte.client("history", "--no-trunc", f"{tmp_path.name}_app"))
