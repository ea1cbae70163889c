"""Compose files written the way public sample projects write them (compose_samples/*: web +
database + cache, secrets, profiles, extends/include, custom networks, healthchecks, env files)
deploy unchanged on one daemon; each is applied, checked for one effect a user would look
for, and removed.

The images they name (postgres:16, redis:alpine, nginx:alpine...) are busybox stand-ins built
once for the module from compose_samples/standin: they answer HTTP with their command line on
the ports those servers use, so "can the web tier reach db:5432" is a real connection."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.containers import memory_cgroup, ok
from support.daemon import Daemon
from support.module_daemon import ModuleDaemon

SAMPLES = Path(__file__).parent / "compose_samples"
CONFIG = 'network:\n  pools: ["10.94.0.0/16:24"]\n  dns_upstreams: ["127.0.0.1:9"]\n'


@pytest.fixture(scope="module")
def samples_daemon(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for every sample, with the stand-in images tagged as the images they name."""
    with ModuleDaemon(busybox_tar, config=CONFIG, stacks=True, networks=True, volumes=True) as m:
        context = tmp_path_factory.mktemp("standin")
        (context / "bin").mkdir()
        script = SAMPLES / "standin" / "standin"
        for name in ("standin", "pg_isready", "redis-cli", "curl", "pip", "npm"):
            shutil.copy(script, context / "bin" / name)
        shutil.copy(SAMPLES / "standin" / "Dockerfile", context / "Dockerfile")
        tags = [f"-t{line}" for line in (SAMPLES / "standin" / "images.txt").read_text().split()]
        ok(m.daemon.client("build", *tags, str(context), timeout=120))
        yield m.daemon


@pytest.fixture
def carte(samples_daemon: Daemon) -> Iterator[Daemon]:
    yield samples_daemon
    for stack in json.loads(ok(samples_daemon.client("--format", "json", "stack", "ls"))):
        ok(samples_daemon.client("stack", "rm", stack["name"], timeout=60))


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def replicas(carte: Daemon, stack: str, service: str) -> list[str]:
    """Names of the service's running replicas."""
    listed = carte.client("--format", "json", "service", "ps", f"{stack}_{service}")
    if listed.returncode != 0:
        return []
    return [r["name"] for r in json.loads(listed.stdout) if r["status"].startswith("Up")]


def replica(carte: Daemon, stack: str, service: str) -> str:
    found: list[str] = []

    def up() -> bool:
        found[:] = replicas(carte, stack, service)
        return bool(found)

    wait_for(up, 60, f"a running replica of {stack}_{service}")
    return found[0]


def sh(carte: Daemon, container: str, script: str) -> str:
    return ok(carte.client("exec", container, "sh", "-c", script))


def fetch(carte: Daemon, container: str, url: str) -> str:
    """What `wget` in the container gets from `url` (retried while the server starts)."""
    out: list[str] = []

    def got() -> bool:
        # (busybox's wget -T crashes here: timeout bounds it instead)
        result = carte.client("exec", container, "timeout", "5", "wget", "-q", "-O", "-", url)
        out[:] = [result.stdout]
        return result.returncode == 0

    wait_for(got, 30, f"{url} from {container}")
    return out[0]


def env_of(carte: Daemon, container: str) -> dict[str, str]:
    lines = sh(carte, container, "env").splitlines()
    return dict(line.partition("=")[::2] for line in lines if "=" in line)


# One check per sample: the effect a user of that sample would look for first.


def flask_redis(carte: Daemon, stack: str) -> None:
    web = replica(carte, stack, "web")
    assert fetch(carte, web, "http://localhost:5000/").startswith("standin flask run")
    fetch(carte, web, "http://redis:6379/")
    assert env_of(carte, web)["REDIS_HOST"] == "redis"


def wordpress_mysql(carte: Daemon, stack: str) -> None:
    wordpress = replica(carte, stack, "wordpress")
    assert "--default-authentication-plugin" in fetch(carte, wordpress, "http://db:3306/")


def nginx_postgres_redis(carte: Daemon, stack: str) -> None:
    app = replica(carte, stack, "app")
    fetch(carte, app, "http://db:5432/")
    fetch(carte, app, "http://cache:6379/")
    proxy = replica(carte, stack, "proxy")
    fetch(carte, proxy, "http://app:3000/")
    # the proxy is on the frontend network only: the database is out of its reach
    assert carte.client("exec", proxy, "nslookup", "db").returncode != 0


def postgres_secrets(carte: Daemon, stack: str) -> None:
    backend = replica(carte, stack, "backend")
    assert sh(carte, backend, "cat /run/secrets/db-password") == "mysecretpassword"
    db = replica(carte, stack, "db")
    assert env_of(carte, db)["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db-password"


def profiles_debug(carte: Daemon, stack: str) -> None:
    replica(carte, stack, "app")
    names = {r["name"] for r in json.loads(ok(carte.client("--format", "json", "service", "ls")))}
    assert names == {"app", "db"}  # adminer and mailhog wait for --profile debug


def extends_common(carte: Daemon, stack: str) -> None:
    env = env_of(carte, replica(carte, stack, "web"))
    assert (env["LOG_LEVEL"], env["TZ"]) == ("debug", "UTC")
    reports = replica(carte, stack, "worker-reports")
    assert env_of(carte, reports)["QUEUE"] == "reports"
    assert fetch(carte, reports, "http://localhost:8000/").startswith("standin python worker.py")


def include_infra(carte: Daemon, stack: str) -> None:
    api = replica(carte, stack, "api")
    fetch(carte, api, "http://redis:6379/")
    fetch(carte, api, "http://db:5432/")


def healthy_depends(carte: Daemon, stack: str) -> None:
    web = replica(carte, stack, "web")  # created only once api, then db, were healthy
    fetch(carte, web, "http://api:8000/")
    assert "healthy" in ok(carte.client("ps", "--filter", f"label=com.carte.stack={stack}"))


def dotenv_envfile(carte: Daemon, stack: str) -> None:
    app = replica(carte, stack, "app")
    env = env_of(carte, app)
    assert (env["APP_ENV"], env["WORKERS"], env["DATABASE_HOST"]) == ("staging", "4", "db")
    assert "SECRET_KEY" not in env  # a bare name unset in the client stays unset
    assert env_of(carte, replica(carte, stack, "db"))["POSTGRES_USER"] == "app"
    rows = json.loads(ok(carte.client("--format", "json", "service", "ls")))
    assert {r["name"]: r["image"] for r in rows}["db"] == "postgres:16"


def mongo_express(carte: Daemon, stack: str) -> None:
    express = replica(carte, stack, "mongo-express")
    fetch(carte, express, "http://mongo:27017/")


def rabbitmq_workers(carte: Daemon, stack: str) -> None:
    wait_for(lambda: len(replicas(carte, stack, "worker")) == 2, 60, "2 workers")
    worker = replicas(carte, stack, "worker")[0]
    fetch(carte, worker, "http://rabbitmq:5672/")
    rows = json.loads(ok(carte.client("--format", "json", "service", "ps", f"{stack}_worker")))
    cgroup = memory_cgroup(rows[0]["container_id"])  # cgroup v1 here
    limit = cgroup / "memory.limit_in_bytes"
    assert limit.read_text().strip() == str(128 * 1024**2)


def nginx_configs(carte: Daemon, stack: str) -> None:
    proxy = replica(carte, stack, "proxy")
    conf = sh(carte, proxy, "cat /etc/nginx/conf.d/default.conf")
    assert "proxy_pass http://backend:3000;" in conf
    fetch(carte, proxy, "http://backend:3000/")


def elasticsearch_single(carte: Daemon, stack: str) -> None:
    replica(carte, stack, "es01")
    limits = sh(carte, "es01", "ulimit -l; ulimit -n").split()
    assert limits == ["unlimited", "65536"]


def _can_raise_limits() -> bool:
    status = Path("/proc/self/status").read_text()
    effective = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    return bool(int(effective.split()[1], 16) & (1 << 24))


def prometheus_grafana(carte: Daemon, stack: str) -> None:
    replica(carte, stack, "prometheus")
    assert "scrape_configs" in sh(carte, "prometheus", "cat /etc/prometheus/prometheus.yml")
    fetch(carte, "grafana", "http://prometheus:9090/")


def gitea_postgres(carte: Daemon, stack: str) -> None:
    replica(carte, stack, "server")
    fetch(carte, "gitea", "http://db:5432/")
    assert env_of(carte, "gitea")["GITEA__database__HOST"] == "db:5432"


def nextcloud_mariadb_redis(carte: Daemon, stack: str) -> None:
    app = replica(carte, stack, "app")
    assert "--transaction-isolation=READ-COMMITTED" in fetch(carte, app, "http://db:3306/")
    fetch(carte, app, "http://redis:6379/")


def migrate_once(carte: Daemon, stack: str) -> None:
    app = replica(carte, stack, "app")  # started after migrate completed successfully
    assert sh(carte, app, "cat /shared/migrations.log").strip() == "applied 3 migrations"
    time.sleep(1)
    listed = ok(carte.client("ps", "-a", "--filter", "label=com.carte.service=migrate"))
    assert listed.count("Exited (0)") == 1  # restart "no": it stays exited, not replaced


def django_anchors(carte: Daemon, stack: str) -> None:
    worker = replica(carte, stack, "worker")
    assert fetch(carte, worker, "http://localhost:8000/").startswith("standin celery -A config")
    assert env_of(carte, worker)["DJANGO_DEBUG"] == "true"
    assert sh(carte, worker, "readlink /proc/1/fd/0").startswith("/dev/pts/")  # tty: true
    web = replica(carte, stack, "web")
    assert "gunicorn" in fetch(carte, web, "http://localhost:8000/")


def hardened_nginx(carte: Daemon, stack: str) -> None:
    web = replica(carte, stack, "web")
    mounts = sh(carte, web, "cat /proc/mounts")
    assert "tmpfs /var/run tmpfs" in mounts
    assert sh(carte, web, "touch /etc/x 2>&1 || echo refused").strip().endswith("refused")
    status = sh(carte, web, "grep CapEff /proc/1/status").split()[-1]
    assert int(status, 16) == (1 << 10) | (1 << 0) | (1 << 6) | (1 << 7)


def host_gateway(carte: Daemon, stack: str) -> None:
    app = replica(carte, stack, "app")
    hosts = sh(carte, app, "cat /etc/hosts")
    gateway = sh(carte, app, "ip route | awk '/default/ {print $3}'").strip()
    assert f"{gateway}\thost.docker.internal" in hosts and "10.20.30.40\tlegacy-db" in hosts
    resolv = sh(carte, app, "cat /etc/resolv.conf")
    assert "nameserver 9.9.9.9" in resolv and "search corp.example" in resolv
    assert sh(carte, app, "hostname").strip() == "app01"
    assert sh(carte, app, "cat /proc/sys/net/core/somaxconn").strip() == "1024"


def voting_app(carte: Daemon, stack: str) -> None:
    vote = replica(carte, stack, "vote")
    fetch(carte, vote, "http://redis:6379/")
    result = replica(carte, stack, "result")
    fetch(carte, result, "http://db:5432/")
    worker = replica(carte, stack, "worker")
    fetch(carte, worker, "http://vote:8000/")


def memcached_app(carte: Daemon, stack: str) -> None:
    replica(carte, stack, "app")
    assert env_of(carte, "memcached-app")["GREETING"] == "hello from compose"
    fetch(carte, "memcached-app", "http://cache:11211/")


CHECKS: dict[str, Callable[[Daemon, str], None]] = {
    "flask-redis": flask_redis,
    "wordpress-mysql": wordpress_mysql,
    "nginx-postgres-redis": nginx_postgres_redis,
    "postgres-secrets": postgres_secrets,
    "profiles-debug": profiles_debug,
    "extends-common": extends_common,
    "include-infra": include_infra,
    "healthy-depends": healthy_depends,
    "dotenv-envfile": dotenv_envfile,
    "mongo-express": mongo_express,
    "rabbitmq-workers": rabbitmq_workers,
    "nginx-configs": nginx_configs,
    "elasticsearch-single": elasticsearch_single,
    "prometheus-grafana": prometheus_grafana,
    "gitea-postgres": gitea_postgres,
    "nextcloud-mariadb-redis": nextcloud_mariadb_redis,
    "migrate-once": migrate_once,
    "django-anchors": django_anchors,
    "hardened-nginx": hardened_nginx,
    "host-gateway": host_gateway,
    "voting-app": voting_app,
    "memcached-app": memcached_app,
}


def test_every_sample_has_a_check() -> None:
    found = {p.name for p in SAMPLES.iterdir() if (p / "compose.yaml").exists()}
    assert found == set(CHECKS) and len(found) >= 20


@pytest.mark.parametrize("sample", sorted(CHECKS))
def test_sample_deploys_unchanged(carte: Daemon, tmp_path: Path, sample: str) -> None:
    if sample == "elasticsearch-single" and not _can_raise_limits():
        pytest.skip("this machine holds no CAP_SYS_RESOURCE: no process may raise its ulimits")
    project = tmp_path / sample
    shutil.copytree(SAMPLES / sample, project)
    env = {k: v for k, v in carte.env.items() if k not in ("SECRET_KEY", "APP_ENV")}
    applied = carte.client("apply", "-f", str(project / "compose.yaml"), env=env, timeout=120)
    assert applied.returncode == 0, applied.stderr
    CHECKS[sample](carte, sample)
