"""Start real `carte daemon` subprocesses for tests and talk HTTP to them over their socket.

Every daemon gets its own short temporary directory (unix socket paths are limited to 107
bytes) holding its root, run root, socket, config and log. The fixtures that hand these out
(`daemons`, `plugin_daemons`) are in support/fixtures.py.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO, Any

from support import REPO
from support.processes import SLOWDOWN, terminate

SAMPLE_PLUGIN = REPO / "tests" / "daemon" / "plugins" / "sample_plugin"
START_TIMEOUT = 20.0 * SLOWDOWN


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket: an independent client, not Carte's own."""

    def __init__(self, path: Path, timeout: float = 10.0 * SLOWDOWN) -> None:
        super().__init__("carte", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Reply:
    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def request_over(
    socket_path: Path, method: str, path: str, body: Any = None, raw: bytes | None = None
) -> Reply:
    """One HTTP request over the unix socket at `socket_path` (the API's, or the Docker API's);
    `body` goes as JSON, `raw` as it is."""
    connection = UnixHTTPConnection(socket_path)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if data is not None else {}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.getheader("Content-Type", ""), response.read())
    finally:
        connection.close()


def refused_start(tmp_path: Path, *flags: str) -> str:
    """The one line on stderr of a `carte daemon` (root and run root under `tmp_path`) that must
    refuse `flags` at start with exit status 1."""
    result = subprocess.run(
        [
            sys.executable, "-m", "carte", "daemon", "--root", f"{tmp_path}/root",
            "--run-root", f"{tmp_path}/run", *flags,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="carte-t-", dir="/tmp"))


class Daemon:
    """One `carte daemon` subprocess with its own directories."""

    def __init__(
        self,
        workdir: Path,
        *,
        config: str = "",
        extra_path: Sequence[Path] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.run_root = workdir / "run"
        self.socket = workdir / "carte.sock"
        self.config_path = workdir / "carte.yaml"
        self.log_path = workdir / "daemon.log"
        self.config_path.write_text(config)
        self.extra_path = list(extra_path)
        self.command = list(command) if command else [sys.executable, "-m", "carte"]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.extra_path:
            paths = [str(p) for p in self.extra_path]
            env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            )
        return env

    def argv(self) -> list[str]:
        return [
            *self.command,
            "daemon",
            "--root",
            str(self.root),
            "--run-root",
            str(self.run_root),
            "--socket",
            str(self.socket),
            "--config",
            str(self.config_path),
        ]

    def start(self, *, wait: bool = True) -> Daemon:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv(), stdout=log, stderr=log, env=self.env, cwd=self.workdir
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /_ping until it answers OK; raise with the daemon's log if it dies or times out."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.process.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                if self.request("GET", "/_ping").body == b"OK":
                    break
            except OSError:
                pass
            time.sleep(0.02)
        else:
            raise AssertionError(f"daemon not ready in {timeout}s:\n{self.log_path.read_text()}")
        # The API answers as soon as its handler runs; the daemon is ready once every
        # handler had its first start (DaemonStarted).
        started = self.stream("/v1/events?since=0&type=DaemonStarted", timeout=timeout)
        try:
            next(started)
        finally:
            started.close()

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Reply:
        return request_over(self.socket, method, path, body, raw)

    def command_(self, name: str, **fields: Any) -> Reply:
        return self.request("POST", f"/v1/commands/{name}", fields)

    def stream(self, path: str, timeout: float = 10.0) -> Generator[dict[str, Any], None, None]:
        """Yield parsed NDJSON lines of a streaming GET; closes when the caller stops."""
        connection = UnixHTTPConnection(self.socket, timeout=timeout)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        try:
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()

    def client(
        self,
        *args: str,
        timeout: float = 30.0 * SLOWDOWN,
        env: dict[str, str] | None = None,
        stdin: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the Carte client against this daemon (its standard input: `stdin`, or none)."""
        return subprocess.run(
            [*self.command, "--host", f"unix://{self.socket}", *args],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env or self.env,
        )

    def send_signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon and wait for its exit code (SIGKILL after `timeout`)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"daemon ignored signal {signum} for {timeout}s") from None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text()


class DaemonFactory:
    """Makes daemons for one test and stops and removes them all afterwards."""

    def __init__(self, extra_path: Sequence[Path] = ()) -> None:
        self.extra_path = list(extra_path)
        self.daemons: list[Daemon] = []
        self.workdirs: list[Path] = []

    def __call__(
        self,
        *,
        config: str = "",
        start: bool = True,
        workdir: Path | None = None,
        command: Sequence[str] | None = None,
    ) -> Daemon:
        if workdir is None:
            workdir = make_workdir()
            self.workdirs.append(workdir)
        daemon = Daemon(workdir, config=config, extra_path=self.extra_path, command=command)
        self.daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    def cleanup(self) -> None:
        """Stop every daemon (SIGTERM, SIGKILL after 15 s) and remove the work directories.

        Containers outlive their daemon by design: a test that starts containers removes
        them itself before this runs. Bridges of user-defined networks (kept when a daemon
        stops) are asked of a live daemon first and deleted with its other host state.
        """
        for daemon in self.daemons:
            bridges: list[str] = []
            if daemon.process is not None and daemon.process.poll() is None:
                bridges = network_bridges(daemon)
                terminate(daemon.process, 15)
            if daemon.process is not None:
                remove_host_network_state(daemon.root, bridges)
        from support.leftovers import unmount_under

        for workdir in self.workdirs:
            unmount_under(workdir)
            shutil.rmtree(workdir, ignore_errors=True)


def network_bridges(daemon: Daemon) -> list[str]:
    """The bridges of a live daemon's networks; none when it cannot tell (no network handler,
    not answering)."""
    try:
        reply = daemon.command_("ListNetworks")
    except OSError:
        return []
    if reply.status != 200:
        return []
    return [str(n["bridge"]) for n in reply.json().get("result", []) if n.get("bridge")]


def remove_host_network_state(root: Path, bridges: Sequence[str] = ()) -> None:
    """Delete the nftables tables and bridges a daemon on `root` left on the host.

    The network and services handlers keep them when their daemon stops (containers
    outlive the daemon), so a test daemon's are removed here, named the way the handlers
    name them per root: table ``carte-<hash>`` and its services' ``carte-<hash>-lb``, the
    default bridge, and the user-defined networks' `bridges` when known.
    """
    from carte.handlers.network._records import default_bridge_name, nft_table_name

    table = nft_table_name(root)
    for name in (table, f"{table}-lb"):
        subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True, check=False)
    for bridge in {default_bridge_name(root, ""), *bridges}:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def install_sample_plugin(target: Path) -> Path:
    """pip-install tests/daemon/plugins/sample_plugin into `target` (a directory for PYTHONPATH)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(SAMPLE_PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    for leftover in ("build", "carte_sample_plugin.egg-info"):
        shutil.rmtree(SAMPLE_PLUGIN / leftover, ignore_errors=True)
    return target
