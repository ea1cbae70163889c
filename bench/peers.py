"""The programs Carte is compared with, started privately and removed afterwards, in one place.

`Peers` is a context manager handing out, on first use, each peer a benchmark needs:

    with Peers() as peers:
        carte = peers.carte()            # client argv against a private Carte daemon
        docker_env = peers.docker()      # env whose DOCKER_HOST is a private dockerd
        podman, podman_env = peers.podman()
        registry = peers.registry()      # "127.0.0.1:PORT" of a fresh docker-registry

Every daemon has its own root, run root and socket under one temporary directory (as
../shared/PEERS.md shows); leaving the block stops them, unmounts what they mounted and
removes the directory, also on failure. `busybox_tar()` is the test rootfs as a tar, and
`import_busybox()` loads it into an engine as `bb:latest`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "support"), str(REPO / "tests")]

try:  # the tests' busybox rootfs builder (tests/support/busybox.py)
    from busybox import make_rootfs, make_rootfs_tar  # type: ignore[import-not-found]
except ImportError:  # before tests/support/ existed
    from busybox_rootfs import make_rootfs, make_rootfs_tar  # type: ignore[import-not-found]

# Cached bytecode is what users get (pip compiles it at install); a developer shell that sets
# PYTHONDONTWRITEBYTECODE would make every run recompile Carte's sources instead.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PYTHON = sys.executable
IPERF_PORT = 5201
CARTE = [PYTHON, "-m", "carte"]

# Podman's defaults exceed this host's hard ulimits and crun refuses its hybrid cgroups.
PODMAN_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


class PeerFailed(Exception):
    """A peer could not start or a command failed; `str()` is one line for the table."""


def run(
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900,
) -> str:
    """Run to completion; raise PeerFailed with the tail of its stderr when it fails."""
    result = subprocess.run(
        argv, env=env or ENV, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
        raise PeerFailed(f"{' '.join(argv[:4])} failed ({result.returncode}): {tail[0][:200]}")
    return result.stdout


def timed(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall-clock seconds of one successful run of `argv` (what a user waits for)."""
    started = time.perf_counter()
    run(argv, env, cwd)
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (1 MB = 2**20 bytes), NaN once it is gone."""
    return _proc_kb_as_mb(f"/proc/{pid}/status", "VmRSS:")


def pss_mb(pid: int) -> float:
    """Proportional set size in MB: pages shared with other processes (a shim forked from the
    factory shares its interpreter's) count by their share; NaN once the process is gone."""
    return _proc_kb_as_mb(f"/proc/{pid}/smaps_rollup", "Pss:")


def _proc_kb_as_mb(path: str, label: str) -> float:
    """The kB figure on the line of a /proc file starting with `label`, in MB; NaN without it."""
    try:
        text = Path(path).read_text()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith(label):
            return int(line.split()[1]) / 1024
    return float("nan")


def pids_named(executable_name: str) -> list[int]:
    """Pids whose command's first word ends in `executable_name` (e.g. containerd-shim)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            first = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
        except OSError:
            continue
        if first.rsplit("/", 1)[-1] == executable_name:
            found.append(int(entry.name))
    return found


def iperf_gbits(
    server_ns: str, client_ns: str, address: str, seconds: int, port: int = IPERF_PORT
) -> float:
    """Gbit/s received by a one-shot iperf3 server in network namespace `server_ns` from a
    client in `client_ns` sending to `address` for `seconds`; RuntimeError if iperf3 fails
    (other than by the server not listening yet, retried for 5 s)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            done = subprocess.run(
                ["ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-p", str(port),
                 "-t", str(seconds), "-J"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            report = json.loads(done.stdout)
            if "error" not in report:
                break
            if "refused" not in report["error"] or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {report['error']}")
            time.sleep(0.05)  # the server is not listening yet
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        server.kill()
        server.wait()


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until(
    check: list[str],
    env: dict[str, str],
    what: str,
    timeout: float = 60,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Run `check` until it succeeds; PeerFailed after `timeout` or once `process` exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(check, env=env, capture_output=True).returncode == 0:
            return
        if process is not None and process.poll() is not None:
            raise PeerFailed(f"{what} exited with status {process.returncode}")
        time.sleep(0.1)
    raise PeerFailed(f"{what} did not answer within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _other_dockerd_running() -> bool:
    return bool(pids_named("dockerd"))


class Peers:
    """Private daemons under one temporary directory; each is started on first use."""

    def __init__(self, prefix: str = "carte-bench-") -> None:
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._carte: subprocess.Popen[bytes] | None = None
        self._docker_env: dict[str, str] | None = None
        self._podman_ready = False
        self._busybox: Path | None = None
        self._imported: set[str] = set()
        self._registries = 0

    def __enter__(self) -> Peers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # Carte -------------------------------------------------------------------------------
    @property
    def carte_socket(self) -> Path:
        return self.work / "carte.sock"

    def carte(self, config: str = "", program: list[str] = CARTE) -> list[str]:
        """The client argv (`python -m carte --host ...`) of a private daemon, started once;
        `program` runs it (e.g. a PyInstaller build's binary) and is the client's too."""
        client = [*program, "--host", f"unix://{self.carte_socket}"]
        if self._carte is None:
            (self.work / "carte.yaml").write_text(config)
            log = (self.work / "carte.log").open("wb")
            self._carte = self._spawn(
                [*program, "daemon", "--root", str(self.work / "carte-root"),
                 "--run-root", str(self.work / "carte-run"),
                 "--socket", str(self.carte_socket), "--config", str(self.work / "carte.yaml")],
                log,
            )  # fmt: skip
            try:
                wait_until([*client, "version"], ENV, "the Carte daemon", process=self._carte)
            except PeerFailed:
                lines = (self.work / "carte.log").read_text(errors="replace").splitlines()
                raise PeerFailed(f"the Carte daemon did not start: {(lines or [''])[-1]}") from None
        return client

    def installed_carte(self) -> list[str]:
        """The client argv of the private daemon through `carte` as install.sh installs it:
        this tree pip-installed (not editable, no dependencies: the client needs none) into
        a venv of the same interpreter with pip upgraded, made once. The development venv's
        editable install loads a path finder at every start (~12 ms, with pathlib) that users
        never run, and `python -m` adds runpy (~4 ms)."""
        host = self.carte()[len(CARTE) :]
        venv = self.work / "installed"
        script = venv / "bin" / "carte"
        if not script.exists():
            source = self.work / "installed-source"
            shutil.copytree(REPO / "carte", source / "carte",
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(REPO / name, source / name)
            run([PYTHON, "-m", "venv", str(venv)])
            pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
            # as install.sh: pip >= 25 writes the script without `import re` (if it can)
            subprocess.run([*pip, "--upgrade", "pip>=25"], env=ENV, capture_output=True)
            run([*pip, "--no-deps", str(source)])
        return [str(script), *host]

    @property
    def carte_pid(self) -> int:
        if self._carte is None:
            raise PeerFailed("the Carte daemon is not started")
        return self._carte.pid

    def stop_carte(self) -> None:
        """Stop the daemon after removing every container it has (they would outlive it)."""
        if self._carte is None:
            return
        client = [*CARTE, "--host", f"unix://{self.carte_socket}"]
        listed = subprocess.run([*client, "ps", "-aq"], env=ENV, capture_output=True, text=True)
        ids = listed.stdout.split()
        if ids:
            subprocess.run([*client, "rm", "-f", *ids], env=ENV, capture_output=True)
        stop(self._carte)
        self._carte = None

    # Docker ------------------------------------------------------------------------------
    def docker(self) -> dict[str, str]:
        """The environment of a `docker` client talking to a private dockerd, started once.

        Without a bridge and without iptables changes when no other dockerd runs; beside
        another one, its own address pool instead (a second `--bridge none` would delete
        the other's docker0).
        """
        if self._docker_env is None:
            if shutil.which("dockerd") is None:
                raise PeerFailed("dockerd is not installed (apt-get install docker.io)")
            network = (
                ["--default-address-pool", "base=10.213.0.0/16,size=24"]
                if _other_dockerd_running()
                else ["--bridge", "none"]
            )
            log = (self.work / "docker.log").open("wb")
            self._spawn(
                ["dockerd", "--host", f"unix://{self.work}/docker.sock",
                 "--data-root", str(self.work / "docker-root"),
                 "--exec-root", str(self.work / "docker-exec"),
                 "--pidfile", str(self.work / "docker.pid"),
                 "--iptables=false", "--ip-masq=false", *network],
                log,
            )  # fmt: skip
            env = {**ENV, "DOCKER_HOST": f"unix://{self.work}/docker.sock"}
            wait_until(["docker", "version"], env, "the private dockerd")
            self._docker_env = env
        return self._docker_env

    # Podman ------------------------------------------------------------------------------
    def podman(self) -> tuple[list[str], dict[str, str]]:
        """Podman argv and env with its own root, run root and vfs storage under the work dir."""
        argv = ["podman", "--root", str(self.work / "podman-root"),
                "--runroot", str(self.work / "podman-run"), "--storage-driver", "vfs"]  # fmt: skip
        env = {**ENV, "CONTAINERS_CONF": str(self.work / "containers.conf")}
        if not self._podman_ready:
            if shutil.which("podman") is None:
                raise PeerFailed("podman is not installed (apt-get install podman)")
            (self.work / "containers.conf").write_text(PODMAN_CONF)
            self._podman_ready = True
        return argv, env

    # Registry ----------------------------------------------------------------------------
    def registry(self) -> str:
        """A fresh docker-registry (empty storage) on a free loopback port: "127.0.0.1:PORT"."""
        self._registries += 1
        base = self.work / f"registry-{self._registries}"
        base.mkdir()
        port = _free_port()
        (base / "registry.yml").write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage: {{filesystem: {{rootdirectory: {base / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: 127.0.0.1:{port}}}\n"
        )
        process = self._spawn(["docker-registry", "serve", str(base / "registry.yml")], None)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return f"127.0.0.1:{port}"
            except OSError:
                if process.poll() is not None:
                    raise PeerFailed("docker-registry exited at start") from None
                time.sleep(0.05)
        raise PeerFailed("docker-registry did not listen within 20 s")

    def stop_registries(self) -> None:
        for process in self._processes:
            if process.args[0] == "docker-registry":  # type: ignore[index]
                stop(process)

    # Images ------------------------------------------------------------------------------
    def busybox_tar(self) -> Path:
        if self._busybox is None:
            self._busybox = Path(make_rootfs_tar(self.work / "busybox.tar", self.work))
        return self._busybox

    def busybox_rootfs(self, directory: Path) -> Path:
        return Path(make_rootfs(directory))

    def import_busybox(self, engine: str) -> None:
        """`bb:latest` in "carte", "docker" or "podman" (once each)."""
        if engine in self._imported:
            return
        tar = str(self.busybox_tar())
        if engine == "carte":
            run([*self.carte(), "import", tar, "bb:latest"])
        elif engine == "docker":
            run(["docker", "import", tar, "bb:latest"], self.docker())
        else:
            podman, env = self.podman()
            run([*podman, "import", tar, "bb:latest"], env)
        self._imported.add(engine)

    # Teardown ----------------------------------------------------------------------------
    def _spawn(self, argv: list[str], log: IO[bytes] | None) -> subprocess.Popen[bytes]:
        output: IO[bytes] | int = log if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(argv, stdout=output, stderr=output, env=ENV)
        self._processes.append(process)
        return process

    def close(self) -> None:
        self.stop_carte()
        if self._docker_env is not None:
            listed = subprocess.run(
                ["docker", "ps", "-aq"], env=self._docker_env, capture_output=True, text=True
            )
            if listed.stdout.split():
                subprocess.run(
                    ["docker", "rm", "-f", *listed.stdout.split()],
                    env=self._docker_env,
                    capture_output=True,
                )
        if self._podman_ready:
            podman, env = self.podman()
            subprocess.run([*podman, "rm", "-af"], env=env, capture_output=True)
        for process in reversed(self._processes):
            stop(process)
        unmount_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted at or below `directory`, deepest first."""
    prefix = str(directory)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
