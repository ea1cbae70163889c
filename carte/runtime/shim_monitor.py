"""The shim's lean monitor: the container's parent once it has been created.

`carte shim` creates the container with the full runtime library, then execs this monitor in
the same process (the pid stays, so it stays the container's parent and a child subreaper) so
the runtime's imports are dropped and the shim's memory stays small. It imports only `os`,
C modules and the small logs/protocol modules; it never imports `json`, `socket`, `signal`.

One single-threaded epoll loop serves: the container's stdout/stderr (or pty master), copied to
the json-file log and to attached clients; SIGCHLD (through the wakeup fd), reaping the
container, exec'd processes (re-parented to us) and helper processes; the exec fifo on start;
and the clients of shim.sock (the protocol is in docs/shim.md). Exec and delete need the full
runtime, so they run in short-lived helper processes (`carte shim exec|delete`).

When the container exits the monitor drains its output (at most DRAIN_SECONDS), records
exit.json atomically, answers every `wait`, and keeps serving until `delete`, or until no client
has been connected for `linger` seconds; then it removes shim.sock and exits (exit.json stays
for a daemon that was down).
"""

from __future__ import annotations

import _socket
import fcntl
import os
import select
import struct
import sys
import termios
import time

from carte.runtime.logs import JsonFileLog, rfc3339_nano
from carte.runtime.shim_protocol import (
    EXIT_FILE,
    LineBuffer,
    ProtocolError,
    decode_data,
    decode_line,
    encode_data,
    encode_line,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from collections.abc import Callable
    from typing import Any, NoReturn
else:
    import _signal  # `signal` itself would import enum (about 1 MB)

DRAIN_SECONDS = 1.0
# An attached client that falls this far behind is disconnected (the log still has everything).
MAX_CLIENT_BACKLOG = 8 << 20
_READ_SIZE = 1 << 16
_FD_SIZE = 4  # sizeof(int) in SCM_RIGHTS payloads


def _noop(signum: int, frame: object) -> None:
    """Signal handler that only lets the wakeup fd fire."""


def _exit_code(wait_status: int) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


class Connection:
    """One client of shim.sock: its lines in, its queued output, and what it waits for."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.lines = LineBuffer()
        self.out: list[tuple[bytes, list[int]]] = []
        self.backlog = 0
        self.fds: list[int] = []
        self.attached = False
        self.closing = False  # close once `out` is flushed

    def take_fds(self, count: int) -> list[int]:
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken


class ExecSession:
    """An exec request: its helper, then its process, reported to `client`."""

    def __init__(self, exec_id: str, client: Connection | None, report: _socket.socket) -> None:
        self.exec_id = exec_id
        self.client = client
        self.report = report
        self.report_lines = LineBuffer()
        self.helper_pid = 0
        self.pid = 0
        self.reported = False


class Monitor:
    """The event loop; `config` is the JSON object `carte shim` passes on the command line."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.id: str = config["id"]
        self.directory: str = config["directory"]
        self.container_pid: int = config["container_pid"]
        self.status = "created"
        self.started_at = ""
        self.finished_at = ""
        self.exit_status: int | None = None
        self.exit_record: dict[str, Any] | None = None
        self.drain_deadline = 0.0
        self.last_client_left = time.monotonic()
        self.linger: float = config["linger"]
        self.epoll = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.clients: dict[int, Connection] = {}
        self.waiters: list[Connection] = []
        self.starter: Connection | None = None
        self.fifo_fd = -1
        self.execs: dict[str, ExecSession] = {}
        self.exec_by_pid: dict[int, ExecSession] = {}
        self.exec_by_helper: dict[int, ExecSession] = {}
        self.unclaimed: dict[int, int] = {}
        self.exec_counter = 0
        self.deleter: Connection | None = None
        self.delete_helper = 0
        self.delete_report: _socket.socket | None = None
        self.delete_after_exit = False
        self.log = JsonFileLog(
            config["log_path"],
            max_size=config["log_max_size"],
            max_file=config["log_max_file"],
        )
        self.stdin_fd: int = config["stdin_fd"]
        self.stdin_pending = b""
        self.stdin_close_requested = False
        self.outputs: dict[int, str] = {}
        self.pty_fd: int = config["pty_fd"]
        self.listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, config["listen_fd"])
        self.listener.setblocking(False)
        self._watch(self.listener.fileno(), self._accept)
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_fd = wake_read
        _signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        for signum in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
            _signal.signal(signum, _noop)
        self._watch(wake_read, self._on_wakeup)
        streams = (
            [(self.pty_fd, "stdout")]
            if self.pty_fd >= 0
            else [(config["stdout_fd"], "stdout"), (config["stderr_fd"], "stderr")]
        )
        for fd, stream in streams:
            os.set_blocking(fd, False)
            self.outputs[fd] = stream
            self._watch(fd, self._output_handler(fd))
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> NoReturn:
        """Serve until deleted or lingering is over; exits the process (status 0)."""
        self._reap()  # the container may have exited while we were exec'ing
        while True:
            for fd, events in self.epoll.poll(self._timeout()):
                handler = self.handlers.get(fd)
                if handler is not None:
                    try:
                        handler(events)
                    except Exception:
                        # A bug must not take the container's parent down: note it, go on.
                        _report_bug()
            now = time.monotonic()
            if self.exit_status is not None and self.exit_record is None:
                if not self.outputs or now >= self.drain_deadline:
                    self._record_exit()
            if self._linger_over(now):
                self._shutdown()

    def _timeout(self) -> float:
        if self.exit_status is not None and self.exit_record is None:
            return max(0.0, self.drain_deadline - time.monotonic())
        if self.exit_record is not None and not self.clients:
            return max(0.0, self.last_client_left + self.linger - time.monotonic())
        return -1

    def _linger_over(self, now: float) -> bool:
        return (
            self.exit_record is not None
            and not self.clients
            and not self.execs
            and self.deleter is None
            and now >= self.last_client_left + self.linger
        )

    def _watch(self, fd: int, handler: Callable[[int], None], mask: int = select.EPOLLIN) -> None:
        self.handlers[fd] = handler
        self.epoll.register(fd, mask)

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            self.epoll.unregister(fd)

    # -- container output and stdin --------------------------------------------------------

    def _output_handler(self, fd: int) -> Callable[[int], None]:
        def on_events(events: int) -> None:
            self._on_output(fd, events)

        return on_events

    def _on_output(self, fd: int, events: int) -> None:
        if events & select.EPOLLOUT:
            self._flush_stdin()
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        stream = self.outputs[fd]
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pty's last replica closed
            data = b""
        if data:
            self.log.write(stream, data)
            self._broadcast({"event": "output", "stream": stream, "data": encode_data(data)})
        else:
            self._close_output(fd)

    def _close_output(self, fd: int) -> None:
        self._unwatch(fd)
        stream = self.outputs.pop(fd)
        if self.exit_record is None:
            self.log.flush_partial(stream)
        if fd != self.pty_fd:
            os.close(fd)

    def _broadcast(self, message: dict[str, Any]) -> None:
        line = encode_line(message)
        for client in list(self.clients.values()):
            if client.attached:
                self._send(client, line)

    def _write_stdin(self, data: bytes) -> None:
        target = self.pty_fd if self.pty_fd >= 0 else self.stdin_fd
        if target < 0:
            return
        self.stdin_pending += data
        self._flush_stdin()

    def _flush_stdin(self) -> None:
        """Write what is pending without blocking; wait for EPOLLOUT for the rest."""
        target = self.pty_fd if self.pty_fd >= 0 else self.stdin_fd
        if target < 0:
            self.stdin_pending = b""
            return
        try:
            while self.stdin_pending:
                written = os.write(target, self.stdin_pending)
                self.stdin_pending = self.stdin_pending[written:]
        except BlockingIOError:
            self._want_writable(target, True)
            return
        except OSError:
            self.stdin_pending = b""  # the container closed its stdin
        self._want_writable(target, False)
        if self.stdin_close_requested and self.stdin_fd >= 0:
            self._unwatch(self.stdin_fd)
            os.close(self.stdin_fd)
            self.stdin_fd = -1

    def _want_writable(self, fd: int, wanted: bool) -> None:
        if fd == self.pty_fd:
            if fd in self.handlers:  # the pty master is also watched for output
                mask = select.EPOLLIN | (select.EPOLLOUT if wanted else 0)
                self.epoll.modify(fd, mask)
        elif wanted and fd not in self.handlers:
            self._watch(fd, lambda events: self._flush_stdin(), select.EPOLLOUT)
        elif not wanted and fd in self.handlers:
            self._unwatch(fd)

    # -- processes -------------------------------------------------------------------------

    def _on_wakeup(self, fd: int) -> None:
        try:
            while os.read(self.wake_fd, 512):
                pass
        except BlockingIOError:
            pass
        self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.container_pid:
                self._container_exited(status)
            elif pid in self.exec_by_helper:
                self._helper_exited(self.exec_by_helper.pop(pid), status)
            elif pid in self.exec_by_pid:
                self._exec_exited(self.exec_by_pid.pop(pid), status)
            elif pid == self.delete_helper:
                self.delete_helper = 0
                self._finish_delete(status)
            elif any(not session.reported for session in self.execs.values()):
                self.unclaimed[pid] = status  # perhaps an exec'd process not yet reported

    def _container_exited(self, status: int) -> None:
        self.exit_status = status
        self.finished_at = rfc3339_nano(time.time_ns())
        self.drain_deadline = time.monotonic() + DRAIN_SECONDS
        if self.starter is not None:
            self._reply(self.starter, error=f'container "{self.id}" exited before it started')
            self.starter = None
            self._close_fifo()

    def _record_exit(self) -> None:
        """Write exit.json (atomically), answer waiters, end attach streams."""
        assert self.exit_status is not None
        for fd in list(self.outputs):
            self._close_output(fd)
        self.log.close()
        self.status = "stopped"
        record = {
            "id": self.id,
            "pid": self.container_pid,
            "exit_code": _exit_code(self.exit_status),
            "oom_killed": self._oom_killed(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        self._write_exit_file(record)
        self.exit_record = record
        for waiter in self.waiters:
            self._reply(waiter, exit=record)
        self.waiters.clear()
        for client in list(self.clients.values()):
            if client.attached:
                self._send(client, encode_line({"event": "exit", **record}))
                client.closing = True
                self._flush(client)
        if not self.clients:
            self.last_client_left = time.monotonic()
        if self.delete_after_exit:
            self._start_delete_helper()

    def _write_exit_file(self, record: dict[str, Any]) -> None:
        """exit.json, atomically; a removed state directory (deleted) is not an error."""
        path = os.path.join(self.directory, EXIT_FILE)
        temporary = path + ".tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, encode_line(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
        except FileNotFoundError:
            pass

    def _oom_killed(self) -> bool:
        oom_file = self.config["oom_file"]
        if not oom_file:
            return False
        try:
            with open(oom_file, "rb") as counters:
                for line in counters:
                    name, _, value = line.partition(b" ")
                    if name == b"oom_kill":
                        return int(value) > int(self.config["oom_base"])
        except OSError:
            pass
        return False

    # -- clients ---------------------------------------------------------------------------

    def _accept(self, fd: int) -> None:
        while True:
            try:
                client_fd, _ = self.listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                return
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, client_fd)
            sock.setblocking(False)
            client = Connection(sock)
            self.clients[client.fd] = client
            self._watch(client.fd, self._client_handler(client))

    def _client_handler(self, client: Connection) -> Callable[[int], None]:
        def on_events(events: int) -> None:
            self._client_ready(client, events)

        return on_events

    def _client_ready(self, client: Connection, events: int) -> None:
        if events & select.EPOLLOUT:
            self._flush(client)
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            data, ancillary, _, _ = client.sock.recvmsg(
                _READ_SIZE, _socket.CMSG_SPACE(8 * _FD_SIZE), _socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _FD_SIZE
                client.fds.extend(memoryview(payload)[:usable].cast("i"))
        if not data:
            self._drop(client)
            return
        try:
            lines = client.lines.feed(data)
            for line in lines:
                if line.strip():
                    self._handle(client, decode_line(line))
        except ProtocolError as error:
            self._reply(client, error=f"bad request: {error}")
            client.closing = True
            self._flush(client)

    def _send(self, client: Connection, line: bytes, fds: list[int] | None = None) -> None:
        if client.fd not in self.clients:
            return
        client.out.append((line, fds or []))
        client.backlog += len(line)
        if client.backlog > MAX_CLIENT_BACKLOG:
            self._drop(client)
            return
        self._flush(client)

    def _flush(self, client: Connection) -> None:
        try:
            while client.out:
                line, fds = client.out[0]
                if fds:
                    payload = struct.pack(f"{len(fds)}i", *fds)
                    sent = client.sock.sendmsg(
                        [line], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)]
                    )
                    for fd in fds:
                        os.close(fd)
                else:
                    sent = client.sock.send(line)
                client.backlog -= sent
                if sent < len(line):
                    client.out[0] = (line[sent:], [])
                else:
                    client.out.pop(0)
        except BlockingIOError:
            self.epoll.modify(client.fd, select.EPOLLIN | select.EPOLLOUT)
            return
        except OSError:
            self._drop(client)
            return
        if client.fd in self.clients:
            self.epoll.modify(client.fd, select.EPOLLIN)
            if client.closing:
                self._drop(client)

    def _drop(self, client: Connection) -> None:
        if self.clients.pop(client.fd, None) is None:
            return
        self._unwatch(client.fd)
        for _, fds in client.out:
            for fd in fds:
                os.close(fd)
        for fd in client.fds:
            os.close(fd)
        client.sock.close()
        if client in self.waiters:
            self.waiters.remove(client)
        if self.starter is client:
            self.starter = None  # the start still happens; nobody hears about it
        for session in self.execs.values():
            if session.client is client:
                session.client = None
        if not self.clients:
            self.last_client_left = time.monotonic()

    def _reply(self, client: Connection, *, error: str = "", **fields: Any) -> None:
        message = {"ok": False, "error": error} if error else {"ok": True, **fields}
        self._send(client, encode_line(message))

    # -- requests --------------------------------------------------------------------------

    def _handle(self, client: Connection, request: dict[str, Any]) -> None:
        op = request.get("op")
        handler = _OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            self._reply(client, error=f"unknown op {op!r}; use one of {', '.join(_OPS)}")
            return
        try:
            handler(self, client, request)
        except (KeyError, TypeError, ValueError, OSError) as error:
            self._reply(client, error=f"bad {op} request: {type(error).__name__}: {error}")

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "pid": self.container_pid if self.status != "stopped" else 0,
            "shim_pid": os.getpid(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        if self.exit_record is not None:
            state["exit_code"] = self.exit_record["exit_code"]
            state["oom_killed"] = self.exit_record["oom_killed"]
        return state

    def op_state(self, client: Connection, request: dict[str, Any]) -> None:
        self._reply(client, state=self.state())

    def op_start(self, client: Connection, request: dict[str, Any]) -> None:
        if self.status != "created" or self.exit_status is not None or self.starter is not None:
            status = "starting" if self.starter is not None else self.status
            self._reply(
                client,
                error=f'cannot start container "{self.id}": it is {status}, not created; '
                "create it again to run it once more",
            )
            return
        fifo = os.path.join(self.directory, self.config["exec_fifo"])
        # Non-blocking: the container opens its end for writing once a reader exists.
        self.fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.starter = client
        self._watch(self.fifo_fd, self._on_fifo)

    def _on_fifo(self, fd: int) -> None:
        try:
            data = os.read(self.fifo_fd, 1)
        except BlockingIOError:
            return
        if not data:
            return  # no writer yet (or it left without a word: SIGCHLD will tell)
        self._close_fifo()
        self.status = "running"
        self.started_at = rfc3339_nano(time.time_ns())
        try:
            os.unlink(os.path.join(self.directory, self.config["exec_fifo"]))
        except FileNotFoundError:
            pass
        if self.starter is not None:
            self._reply(self.starter, state=self.state())
            self.starter = None

    def _close_fifo(self) -> None:
        if self.fifo_fd >= 0:
            self._unwatch(self.fifo_fd)
            os.close(self.fifo_fd)
            self.fifo_fd = -1

    def op_kill(self, client: Connection, request: dict[str, Any]) -> None:
        signum = int(request.get("signal", _signal.SIGTERM))
        if self.exit_status is not None:
            self._reply(client, error=f'cannot kill container "{self.id}": it is not running')
            return
        if request.get("all"):
            self._kill_all(signum)
        else:
            self._kill(self.container_pid, signum)
        self._reply(client)

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _kill_all(self, signum: int) -> None:
        """Signal every process of the container's cgroup (its pid 1 if the cgroup is gone)."""
        targets = [self.container_pid]
        if self.config["cgroup_procs"]:
            try:
                with open(self.config["cgroup_procs"], "rb") as procs:
                    targets = [int(pid) for pid in procs.read().split()] or targets
            except OSError:
                pass
        for pid in targets:
            self._kill(pid, signum)

    def op_wait(self, client: Connection, request: dict[str, Any]) -> None:
        if self.exit_record is not None:
            self._reply(client, exit=self.exit_record)
        else:
            self.waiters.append(client)

    def op_attach(self, client: Connection, request: dict[str, Any]) -> None:
        client.attached = True
        self._reply(client, state=self.state())
        if self.exit_record is not None:
            self._send(client, encode_line({"event": "exit", **self.exit_record}))
            client.closing = True
            self._flush(client)

    def op_stdin(self, client: Connection, request: dict[str, Any]) -> None:
        self._write_stdin(decode_data(request["data"]))  # no reply: stdin is a stream

    def op_close_stdin(self, client: Connection, request: dict[str, Any]) -> None:
        if self.pty_fd >= 0:
            self._write_stdin(b"\x04")  # a terminal's end of input is ^D
            return
        self.stdin_close_requested = True
        self._flush_stdin()

    def op_resize(self, client: Connection, request: dict[str, Any]) -> None:
        rows, cols = int(request["rows"]), int(request["cols"])
        if self.pty_fd < 0:
            self._reply(client, error=f'container "{self.id}" has no terminal to resize')
            return
        fcntl.ioctl(self.pty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._reply(client)

    def op_exec(self, client: Connection, request: dict[str, Any]) -> None:
        process = request["process"]
        tty = bool(process.get("terminal"))
        fds = client.take_fds(0 if tty else 3)
        if not tty and len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self._reply(client, error="exec without a terminal needs 3 fds (stdin, stdout, stderr)")
            return
        if self.status != "running" or self.exit_status is not None:
            for fd in fds:
                os.close(fd)
            self._reply(client, error=f'cannot exec in container "{self.id}": it is not running')
            return
        self.exec_counter += 1
        exec_id = str(request.get("exec_id") or f"exec-{self.exec_counter}")
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        helper_config = {
            "id": self.id,
            "state_dir": self.config["state_dir"],
            "process": process,
        }
        stdio = fds if fds else [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)] * 3
        helper = self._spawn_helper(["exec", "".join(_encode_config(helper_config))], stdio, theirs)
        for fd in set(stdio):
            os.close(fd)
        theirs.close()
        session = ExecSession(exec_id, client, ours)
        session.helper_pid = helper
        self.execs[exec_id] = session
        self.exec_by_helper[helper] = session
        ours.setblocking(False)
        self._watch(ours.fileno(), lambda events: self._on_exec_report(session))

    def _spawn_helper(self, argv: list[str], stdio: list[int], report: _socket.socket) -> int:
        """Fork and exec `carte shim <argv>` with `stdio` as fds 0-2 and `report` as fd 3."""
        command = [*self.config["self_command"], "shim", *argv]
        pid = os.fork()
        if pid == 0:
            try:
                # Move the sources above the targets first, so no dup2 clobbers a later source.
                sources = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in [*stdio, report.fileno()]]
                for target, fd in enumerate(sources):
                    os.dup2(fd, target)
                os.closerange(4, os.sysconf("SC_OPEN_MAX"))
                os.execv(command[0], command)
            finally:
                os._exit(127)
        return pid

    def _on_exec_report(self, session: ExecSession) -> None:
        try:
            data, ancillary, _, _ = session.report.recvmsg(
                _READ_SIZE, _socket.CMSG_SPACE(_FD_SIZE), _socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        received: list[int] = []
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % _FD_SIZE
                received.extend(memoryview(payload)[:usable].cast("i"))
        for line in session.report_lines.feed(data) if data else []:
            self._exec_reported(session, decode_line(line), received)
            received = []
        for fd in received:
            os.close(fd)
        if not data:
            self._unwatch(session.report.fileno())
            session.report.close()
            if not session.reported:
                self._exec_failed(session, "the exec helper ended without a word")

    def _exec_reported(self, session: ExecSession, report: dict[str, Any], fds: list[int]) -> None:
        if session.reported:
            return
        session.reported = True
        if "error" in report:
            self._exec_failed(session, str(report["error"]))
            return
        session.pid = int(report["pid"])
        if session.client is not None:
            self._reply_with_fds(session, fds)
        else:
            for fd in fds:
                os.close(fd)
        if session.pid in self.unclaimed:
            self._exec_exited(session, self.unclaimed.pop(session.pid))
        else:
            self.exec_by_pid[session.pid] = session

    def _reply_with_fds(self, session: ExecSession, fds: list[int]) -> None:
        assert session.client is not None
        line = encode_line({"ok": True, "exec_id": session.exec_id, "pid": session.pid})
        self._send(session.client, line, fds)

    def _exec_failed(self, session: ExecSession, reason: str) -> None:
        session.reported = True
        self.execs.pop(session.exec_id, None)
        if session.client is not None:
            self._reply(session.client, error=reason)

    def _helper_exited(self, session: ExecSession, status: int) -> None:
        """Nothing to do: the helper's report (or its end of file) says how the exec went."""

    def _exec_exited(self, session: ExecSession, status: int) -> None:
        self.execs.pop(session.exec_id, None)
        if session.client is not None:
            event = {"event": "exit", "exec_id": session.exec_id, "exit_code": _exit_code(status)}
            self._send(session.client, encode_line(event))

    def op_delete(self, client: Connection, request: dict[str, Any]) -> None:
        if self.deleter is not None:
            self._reply(client, error=f'container "{self.id}" is already being deleted')
            return
        if self.exit_record is None and self.status == "running" and not request.get("force"):
            self._reply(
                client,
                error=f'cannot delete container "{self.id}": it is running; '
                "stop it first or delete with force",
            )
            return
        self.deleter = client
        if self.exit_record is None:
            # Kill it and delete once its exit is recorded (the runtime's delete needs it gone).
            self.delete_after_exit = True
            if self.exit_status is None:
                self._kill_all(9)
            return
        self._start_delete_helper()

    def _start_delete_helper(self) -> None:
        self.delete_after_exit = False
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        config = {"id": self.id, "state_dir": self.config["state_dir"]}
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.delete_helper = self._spawn_helper(
            ["delete", "".join(_encode_config(config))], [null, null, null], theirs
        )
        os.close(null)
        theirs.close()
        self.delete_report = ours

    def _finish_delete(self, status: int) -> None:
        """The delete helper is done: reply, stop serving, exit."""
        reason = ""
        if self.delete_report is not None:
            self.delete_report.setblocking(False)
            try:
                data = self.delete_report.recv(_READ_SIZE)
            except OSError:
                data = b""
            self.delete_report.close()
            for line in data.splitlines():
                reason = str(decode_line(line).get("error", "")) or reason
        if not reason and status != 0:
            reason = f"the delete helper failed (status {_exit_code(status)})"
        client = self.deleter
        self.deleter = None
        if reason:
            if client is not None:
                self._reply(client, error=reason)
            return
        if client is not None and client.fd in self.clients:
            self._reply(client)
            if client.fd in self.clients:
                client.sock.setblocking(True)
                self._flush(client)
        self._shutdown()

    def _shutdown(self) -> NoReturn:
        """Stop serving: remove shim.sock, close everything, exit 0."""
        try:
            os.unlink(os.path.join(self.directory, "shim.sock"))
        except FileNotFoundError:
            pass
        for client in list(self.clients.values()):
            self._drop(client)
        if self.exit_record is None:
            self.log.close()
        os._exit(0)


def _report_bug() -> None:
    """Print the current exception to stderr (the shim.log file in the state directory)."""
    import traceback

    traceback.print_exc()
    sys.stderr.flush()


def _encode_config(config: dict[str, Any]) -> str:
    return encode_line(config).decode().rstrip("\n")


_OPS: dict[str, Callable[[Monitor, Connection, dict[str, Any]], None]] = {
    "state": Monitor.op_state,
    "start": Monitor.op_start,
    "kill": Monitor.op_kill,
    "wait": Monitor.op_wait,
    "attach": Monitor.op_attach,
    "stdin": Monitor.op_stdin,
    "close_stdin": Monitor.op_close_stdin,
    "resize": Monitor.op_resize,
    "exec": Monitor.op_exec,
    "delete": Monitor.op_delete,
}


def main(argv: list[str]) -> NoReturn:
    """`carte shim monitor CONFIG_JSON` (exec'd by `carte shim` only)."""
    monitor = Monitor(decode_line(argv[0].encode()))
    sys.stdout.flush()
    monitor.run()
