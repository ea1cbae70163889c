"""Starting a shim and talking to it: the command line, the report, a blocking client.

A trio handler uses it like this (protocol in docs/shim.md)::

    argv = shim_command(shim_arguments(container_id=..., bundle=..., ...))
    result = await trio.run_process(argv, capture_stdout=True, check=False)
    created = parse_report(result.stdout)        # raises the CarteError the shim reported
    # then JSON lines on trio.open_unix_socket(created["socket"]), encoded/decoded with
    # carte.runtime.shim.protocol (encode_line/decode_line/LineBuffer), or the blocking
    # ShimClient below inside trio.to_thread.run_sync for one-shot requests.

The shim's files live in ``STATE_DIR/ID/``: ``shim.sock`` while the shim runs and
``exit.json`` once the container has exited (`read_exit_file`).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import carte
from carte.api.errors import ERRORS_BY_CODE, Internal, NotFound, Unavailable
from carte.runtime.shim.protocol import (
    EXIT_FILE,
    SOCKET_NAME,
    LineBuffer,
    ProtocolError,
    UnixAddress,
    decode_data,
    decode_line,
    encode_data,
    encode_line,
)

__all__ = [
    "ShimClient",
    "ShimError",
    "connect",
    "create_with_factory",
    "exit_file_path",
    "factory_command",
    "factory_request",
    "find_state",
    "interpreter_command",
    "parse_report",
    "read_exit_file",
    "shim_arguments",
    "shim_command",
    "socket_path",
]


class ShimError(Internal):
    """The shim refused a request; `message` is its one-line reason."""


def _boot_paths() -> list[str]:
    """Where `carte` and its dependencies are importable from, for an interpreter run with -I -S
    (which drops site-packages): carte's parent directory, then msgspec's (the runtime needs it)."""
    import msgspec

    paths = [str(Path(carte.__file__).resolve().parent.parent)]
    dependencies = str(Path(msgspec.__file__).resolve().parent.parent)
    return paths if dependencies in paths else [*paths, dependencies]


def interpreter_command() -> list[str]:
    """How to run Carte's per-container processes: the frozen binary itself, or this interpreter
    isolated (-I) and without site (-S, about 1.5 MB less) with Carte put on sys.path."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    first, *rest = _boot_paths()
    boot = (
        f"import sys;sys.path.insert(0,{first!r});sys.path.extend({rest!r});"
        "from carte.__main__ import main;main()"
    )
    return [sys.executable, "-I", "-S", "-c", boot]


def shim_arguments(
    *,
    container_id: str,
    bundle: Path,
    state_dir: Path,
    log_path: Path,
    log_max_size: int = 0,
    log_max_file: int = 1,
    stdin: bool = False,
    linger: float | None = None,
) -> list[str]:
    """The arguments of `carte shim` (for `shim_command` or a factory request)."""
    arguments = [
        "--id",
        container_id,
        "--bundle",
        str(bundle),
        "--state-dir",
        str(state_dir),
        "--log-path",
        str(log_path),
        "--log-max-size",
        str(log_max_size),
        "--log-max-file",
        str(log_max_file),
    ]
    if stdin:
        arguments.append("--stdin")
    if linger is not None:
        arguments += ["--linger", str(linger)]
    return arguments


def shim_command(arguments: list[str]) -> list[str]:
    """The argv that creates a container under a new shim, given `shim_arguments(...)`.

    Run it and read its stdout: one report line (`parse_report`)."""
    return [*interpreter_command(), "shim", *arguments]


def factory_command(socket_path: Path) -> list[str]:
    """The argv of a shim factory serving `socket_path` (carte.runtime.shim._factory). It prints
    "ready" once it accepts requests and exits when its stdin reaches end of file."""
    return [*interpreter_command(), "shim", "factory", "--socket", str(socket_path)]


def factory_request(arguments: list[str]) -> bytes:
    """The line asking a factory for a shim; it answers with the shim's report line."""
    return encode_line({"args": arguments})


def create_with_factory(socket_path: Path, arguments: list[str]) -> dict[str, Any]:
    """Ask the factory at `socket_path` for a shim (blocking); its report, as `parse_report`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as channel:
        try:
            with UnixAddress(str(socket_path)) as address:
                channel.connect(address)
        except OSError as error:
            raise Unavailable(
                f"shim factory {socket_path}: cannot connect ({error.strerror}); start it "
                "or create shims with shim_command"
            ) from None
        channel.sendall(factory_request(arguments))
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = channel.recv(1 << 16)
            if not chunk:
                break
            reply += chunk
    return parse_report(reply)


def parse_report(stdout: bytes) -> dict[str, Any]:
    """The shim's creation report; raises the `CarteError` it names when creation failed."""
    try:
        report = decode_line(stdout.strip() or b"{}")
    except ProtocolError:
        raise Internal(f"the shim printed no report: {stdout[:200]!r}") from None
    if not report.get("ok"):
        error_type = ERRORS_BY_CODE.get(str(report.get("code")), Internal)
        raise error_type(str(report.get("error") or "the shim failed without a reason"))
    return report


def socket_path(state_dir: Path, container_id: str) -> Path:
    return state_dir / container_id / SOCKET_NAME


def exit_file_path(state_dir: Path, container_id: str) -> Path:
    return state_dir / container_id / EXIT_FILE


def read_exit_file(state_dir: Path, container_id: str) -> dict[str, Any] | None:
    """What the shim recorded when the container exited, or None if it has not (yet)."""
    try:
        return decode_line(exit_file_path(state_dir, container_id).read_bytes())
    except (FileNotFoundError, ProtocolError):
        return None


def find_state(state_dir: Path, container_id: str) -> dict[str, Any]:
    """What is known of a container after a daemon restart: its live shim's state, or, once
    the shim has gone, the exit it recorded (``status`` "stopped" plus the exit.json fields).

    Raises `NotFound` when there is neither: no such container, or its shim was killed
    before the container exited (the exit code is then lost).
    """
    try:
        with connect(state_dir, container_id) as client:
            return client.state()
    except Unavailable:
        pass
    record = read_exit_file(state_dir, container_id)
    if record is None:
        raise NotFound(
            f'container "{container_id}" has no running shim and no recorded exit in '
            f"{state_dir / container_id}; remove it (it cannot be recovered)"
        )
    return {"status": "stopped", **record}


class ShimClient:
    """A blocking connection to one shim. One request at a time; `wait`, `exec` and `attach`
    occupy the connection until their end. Raises `Unavailable` if the shim is not running."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with UnixAddress(str(path)) as address:
                self.sock.connect(address)
        except OSError as error:
            self.sock.close()
            raise Unavailable(
                f"shim socket {path}: cannot connect ({error.strerror}); the shim is not running"
            ) from None
        self._lines = LineBuffer()
        self._queued: list[bytes] = []
        self.received_fds: list[int] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ShimClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        line = encode_line(message)
        if fds:
            socket.send_fds(self.sock, [line], fds)
        else:
            self.sock.sendall(line)

    def receive(self) -> dict[str, Any]:
        """The next line from the shim; fds that came with it land in `received_fds`."""
        while not self._queued:
            data, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, 4)
            self.received_fds.extend(fds)
            if not data:
                raise Unavailable(f"shim {self.path} closed the connection")
            self._queued.extend(self._lines.feed(data))
        return decode_line(self._queued.pop(0))

    def request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        """Send one request and return its reply; raises `ShimError` if the shim refused."""
        self.send(message, fds)
        reply = self.receive()
        if not reply.get("ok"):
            raise ShimError(str(reply.get("error")))
        return reply

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.request({"op": "state"})["state"]
        return state

    def start(self) -> dict[str, Any]:
        state: dict[str, Any] = self.request({"op": "start"})["state"]
        return state

    def kill(self, signal: int, *, all_processes: bool = False) -> None:
        self.request({"op": "kill", "signal": signal, "all": all_processes})

    def wait(self) -> dict[str, Any]:
        """Block until the container has exited; its exit record (exit_code, oom_killed...)."""
        record: dict[str, Any] = self.request({"op": "wait"})["exit"]
        return record

    def resize(self, rows: int, cols: int) -> None:
        self.request({"op": "resize", "rows": rows, "cols": cols})

    def delete(self, *, force: bool = False) -> None:
        self.request({"op": "delete", "force": force})

    def exec(
        self, process: dict[str, Any], stdio: tuple[int, int, int] | None = None
    ) -> tuple[int, int]:
        """Start `process` (an OCI process object) in the container; its pid and, for a
        terminal, the pty master (-1 otherwise). Then `wait_exec` returns its exit code."""
        reply = self.request({"op": "exec", "process": process}, list(stdio) if stdio else None)
        master = self.received_fds.pop(0) if self.received_fds else -1
        return int(reply["pid"]), master

    def wait_exec(self) -> int:
        """The exit code of the process `exec` started on this connection."""
        while True:
            event = self.receive()
            if event.get("event") == "exit":
                return int(event["exit_code"])

    def attach(self) -> dict[str, Any]:
        """Start receiving the container's output on this connection; returns its state."""
        state: dict[str, Any] = self.request({"op": "attach"})["state"]
        return state

    def events(self) -> Iterator[dict[str, Any]]:
        """Attach events until the container's exit event (included)."""
        while True:
            event = self.receive()
            if "data" in event:
                event["data"] = decode_data(event["data"])
            yield event
            if event.get("event") == "exit":
                return

    def write_stdin(self, data: bytes) -> None:
        self.send({"op": "stdin", "data": encode_data(data)})

    def close_stdin(self) -> None:
        self.send({"op": "close_stdin"})


def connect(state_dir: Path, container_id: str) -> ShimClient:
    """A client of the shim of `container_id`; raises `Unavailable` if it is not running."""
    return ShimClient(socket_path(state_dir, container_id))
