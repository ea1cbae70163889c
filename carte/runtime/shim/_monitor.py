"""The shim's lean monitor: the container's parent once it has been created.

`carte shim` creates the container with the full runtime library, then execs this monitor in
the same process (the pid stays, so it stays the container's parent and a child subreaper) so
the runtime's imports are dropped and the shim's memory stays small. It imports only `os`,
C modules and the small shim_* modules; never `json`, `socket`, `signal` or `selectors`.

One single-threaded epoll loop (_loop) serves the container's stdio (_stdio), the
clients of shim.sock (_connections; protocol in docs/shim.md), exec sessions (_exec), the
exec fifo on start, and SIGCHLD through the signal wakeup fd: the container, exec'd processes
(re-parented to us) and helper processes are reaped here.

When the container exits the monitor drains its output (at most DRAIN_SECONDS), records
exit.json atomically, answers every `wait`, ends attach streams, and keeps serving until
`delete`, or until no client has been connected for `linger` seconds; then it removes
shim.sock and exits (exit.json stays for a daemon that was down).
"""

from __future__ import annotations

import _socket
import os
import sys
import time

from carte.runtime.logs import JsonFileLog, rfc3339_nano
from carte.runtime.shim._connections import Clients, Connection
from carte.runtime.shim._exec import Execs, encode_argument, exit_code, spawn_helper
from carte.runtime.shim._loop import EventLoop
from carte.runtime.shim._stdio import ContainerStdio
from carte.runtime.shim.protocol import (
    EXIT_FILE,
    SOCKET_NAME,
    decode_data,
    decode_line,
    encode_line,
    output_event,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with type stubs
    from collections.abc import Callable
    from typing import Any, NoReturn
else:
    import _signal  # `signal` itself would import enum (about 1 MB)

DRAIN_SECONDS = 1.0
_SIGKILL = 9
_SIGTERM = 15


def _noop(signum: int, frame: object) -> None:
    """Signal handler that only lets the wakeup fd fire."""


class Monitor:
    """The container's lifecycle as the shim sees it; `config` comes from `carte shim`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.id: str = config["id"]
        self.directory: str = config["directory"]
        self.container_pid: int = config["container_pid"]
        self.socket_inode = _inode(os.path.join(self.directory, SOCKET_NAME))
        self.status = "created"
        self.started_at = ""
        self.finished_at = ""
        self.exit_status: int | None = None
        self.exit_record: dict[str, Any] | None = None
        self.drain_deadline = 0.0
        self.linger: float = config["linger"]
        self.last_client_left = time.monotonic()
        self.waiters: list[Connection] = []
        self.starter: Connection | None = None
        self.fifo_fd = -1
        self.deleter: Connection | None = None
        self.delete_after_exit = False
        self.delete_helper = 0
        self.delete_report: _socket.socket | None = None
        self.loop = EventLoop()
        self.clients = Clients(self.loop, config["listen_fd"], self._handle, self._dropped)
        self.execs = Execs(
            self.loop,
            self.clients,
            {"id": self.id, "state_dir": config["state_dir"]},
        )
        self.log = JsonFileLog(
            config["log_path"], max_size=config["log_max_size"], max_file=config["log_max_file"]
        )
        self.stdio = ContainerStdio(
            self.loop,
            self.log,
            self._output,
            pty_fd=config["pty_fd"],
            stdin_fd=config["stdin_fd"],
            stdout_fd=config["stdout_fd"],
            stderr_fd=config["stderr_fd"],
        )
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        # Handlers, not SIG_IGN: exec resets them, so helpers and containers get defaults.
        for signum in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
            _signal.signal(signum, _noop)
        self.loop.watch(wake_read, lambda events: self._woken(wake_read))

    def run(self) -> NoReturn:
        """Serve until deleted or lingering is over; then exit the process (status 0)."""
        self._reap()  # the container may have exited while this process was exec'ing
        while True:
            self.loop.run_once(self._timeout())
            now = time.monotonic()
            if self.exit_status is not None and self.exit_record is None:
                if not self.stdio.output_open or now >= self.drain_deadline:
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
            and not self.execs.busy
            and not self._deleting
            and now >= self.last_client_left + self.linger
        )

    @property
    def _deleting(self) -> bool:
        return bool(self.delete_helper) or self.delete_after_exit

    def _output(self, stream: str, data: bytes) -> None:
        if self.clients.any_attached():
            self.clients.broadcast(output_event(stream, data))

    def _dropped(self, client: Connection) -> None:
        if client in self.waiters:
            self.waiters.remove(client)
        if self.starter is client:
            self.starter = None  # the start still happens; nobody hears about it
        if self.deleter is client:
            self.deleter = None  # the delete still happens; nobody hears about it
        self.execs.forget_client(client)
        if not self.clients:
            self.last_client_left = time.monotonic()

    # -- processes -------------------------------------------------------------------------

    def _woken(self, wake_fd: int) -> None:
        try:
            while os.read(wake_fd, 512):
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
            elif pid == self.delete_helper:
                self._delete_helper_done(status)
            else:
                self.execs.reaped(pid, status)  # or an orphan: reaped, nothing more to do

    def _container_exited(self, status: int) -> None:
        if self.starter is not None and self.fifo_fd >= 0:
            # Its go-ahead byte may still wait in the fifo: it started, then exited at once.
            self._fifo_readable(0)
        self.exit_status = status
        self.finished_at = rfc3339_nano(time.time_ns())
        self.drain_deadline = time.monotonic() + DRAIN_SECONDS
        if self.starter is not None:
            self.clients.reply(
                self.starter, error=f'container "{self.id}" exited before it started'
            )
            self.starter = None
        self._close_fifo()

    def _record_exit(self) -> None:
        """Write exit.json (atomically), answer waiters, end attach streams."""
        assert self.exit_status is not None
        self.stdio.close_outputs()
        try:
            self.log.close()
        except OSError:
            pass  # a full disk loses the last partial line, not the exit record
        self.status = "stopped"
        record = {
            "id": self.id,
            "pid": self.container_pid,
            "exit_code": exit_code(self.exit_status),
            "oom_killed": self._oom_killed(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
        self.exit_record = record
        _write_atomically(os.path.join(self.directory, EXIT_FILE), encode_line(record))
        for waiter in self.waiters:
            self.clients.reply(waiter, exit=record)
        self.waiters.clear()
        for client in list(self.clients.connections.values()):
            if client.attached:
                self.clients.send(client, encode_line({"event": "exit", **record}))
                self.clients.close_after_flush(client)
        self.last_client_left = time.monotonic()
        if self.delete_after_exit:
            self._start_delete_helper()

    def _oom_killed(self) -> bool:
        """Whether the cgroup's oom_kill counter grew since create (v1 or v2 file)."""
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

    def _kill(self, signum: int, *, all_processes: bool) -> None:
        """Signal pid 1, or every process in the container's cgroup."""
        targets = [self.container_pid]
        if all_processes and self.config["cgroup_procs"]:
            try:
                with open(self.config["cgroup_procs"], "rb") as procs:
                    targets = [int(pid) for pid in procs.read().split()] or targets
            except OSError:
                pass
        for pid in targets:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    # -- requests --------------------------------------------------------------------------

    def _handle(self, client: Connection, request: dict[str, Any]) -> None:
        op = request.get("op")
        handler = _OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            self.clients.reply(client, error=f"unknown op {op!r}; use one of {', '.join(_OPS)}")
            return
        try:
            handler(self, client, request)
        except (KeyError, TypeError, ValueError, OSError) as error:
            self.clients.reply(client, error=f"bad {op} request: {type(error).__name__}: {error}")

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
        self.clients.reply(client, state=self.state())

    def op_start(self, client: Connection, request: dict[str, Any]) -> None:
        if self.status != "created" or self.exit_status is not None or self.starter is not None:
            status = "starting" if self.starter is not None else self.status
            if self.exit_status is not None:
                status = "stopped"
            self.clients.reply(
                client,
                error=f'cannot start container "{self.id}": it is {status}, not created; '
                "create it again to run it once more",
            )
            return
        fifo = os.path.join(self.directory, self.config["exec_fifo"])
        # Non-blocking: the container opens its end for writing once a reader exists.
        self.fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.starter = client
        self.loop.watch(self.fifo_fd, self._fifo_readable)

    def _fifo_readable(self, events: int) -> None:
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
            self.clients.reply(self.starter, state=self.state())
            self.starter = None

    def _close_fifo(self) -> None:
        if self.fifo_fd >= 0:
            self.loop.unwatch(self.fifo_fd)
            os.close(self.fifo_fd)
            self.fifo_fd = -1

    def op_kill(self, client: Connection, request: dict[str, Any]) -> None:
        if self.exit_status is not None:
            self.clients.reply(
                client, error=f'cannot kill container "{self.id}": it is not running'
            )
            return
        signum = int(request.get("signal", _SIGTERM))
        self._kill(signum, all_processes=bool(request.get("all")))
        self.clients.reply(client)

    def op_wait(self, client: Connection, request: dict[str, Any]) -> None:
        if self.exit_record is not None:
            self.clients.reply(client, exit=self.exit_record)
        else:
            self.waiters.append(client)

    def op_attach(self, client: Connection, request: dict[str, Any]) -> None:
        client.attached = True
        self.clients.reply(client, state=self.state())
        if self.exit_record is not None:
            self.clients.send(client, encode_line({"event": "exit", **self.exit_record}))
            self.clients.close_after_flush(client)

    def op_stdin(self, client: Connection, request: dict[str, Any]) -> None:
        self.stdio.write_stdin(decode_data(request["data"]))  # no reply: stdin is a stream

    def op_close_stdin(self, client: Connection, request: dict[str, Any]) -> None:
        self.stdio.close_stdin()

    def op_resize(self, client: Connection, request: dict[str, Any]) -> None:
        if self.stdio.pty_fd < 0:
            self.clients.reply(client, error=f'container "{self.id}" has no terminal to resize')
            return
        self.stdio.resize(int(request["rows"]), int(request["cols"]))
        self.clients.reply(client)

    def op_exec(self, client: Connection, request: dict[str, Any]) -> None:
        process = dict(request["process"])
        terminal = bool(request.get("tty", process.get("terminal")))
        process["terminal"] = terminal
        fds = client.take_fds(0 if terminal else 3)
        refusal = ""
        if not terminal and len(fds) != 3:
            refusal = "exec without a terminal needs 3 fds (stdin, stdout, stderr)"
        elif self.status != "running" or self.exit_status is not None:
            refusal = f'cannot exec in container "{self.id}": it is not running'
        if refusal:
            for fd in fds:
                os.close(fd)
            self.clients.reply(client, error=refusal)
            return
        self.execs.start(client, process, fds, str(request.get("exec_id") or ""))

    def op_delete(self, client: Connection, request: dict[str, Any]) -> None:
        if self._deleting:
            self.clients.reply(client, error=f'container "{self.id}" is already being deleted')
            return
        if self.exit_record is None and self.status == "running" and not request.get("force"):
            self.clients.reply(
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
                self._kill(_SIGKILL, all_processes=True)
            return
        self._start_delete_helper()

    def _start_delete_helper(self) -> None:
        self.delete_after_exit = False
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        argument = encode_argument({"id": self.id, "state_dir": self.config["state_dir"]})
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            command = [*self.config["self_command"], "shim", "delete", argument]
            self.delete_helper = spawn_helper(command, [null, null, null], theirs)
        finally:
            os.close(null)
            theirs.close()
        self.delete_report = ours

    def _delete_helper_done(self, status: int) -> None:
        """The runtime's delete ran: reply, then stop serving and exit (or report why not)."""
        self.delete_helper = 0
        reason = ""
        if self.delete_report is not None:
            self.delete_report.setblocking(False)
            try:
                data = self.delete_report.recv(1 << 16)
            except OSError:
                data = b""
            self.delete_report.close()
            self.delete_report = None
            for line in data.splitlines():
                reason = str(decode_line(line).get("error", "")) or reason
        if not reason and status != 0:
            reason = f"the delete helper failed (status {exit_code(status)})"
        client, self.deleter = self.deleter, None
        if reason:
            if client is not None:
                self.clients.reply(client, error=reason)
            return
        if client is not None:
            self.clients.reply(client)
            self.clients.flush_blocking(client)
        self._shutdown()

    def _shutdown(self) -> NoReturn:
        """Stop serving: remove shim.sock (only if it is still ours: a new shim for the same
        container id may have bound the path since), close every connection, exit 0."""
        path = os.path.join(self.directory, SOCKET_NAME)
        if self.socket_inode and _inode(path) == self.socket_inode:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.clients.drop_all()
        if self.exit_record is None:
            self.log.close()
        os._exit(0)


def _inode(path: str) -> int:
    """The inode of `path`, 0 when it does not exist."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _write_atomically(path: str, data: bytes) -> None:
    """Write, fsync, rename; a state directory already removed (deleted) is not an error."""
    temporary = path + ".tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except FileNotFoundError:
        pass


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
    """`carte shim monitor` (exec'd by `carte shim` only), its configuration in
    $CARTE_SHIM_CONFIG (or, from an older shim, in its one argument). Removes the variable, so
    the helpers it runs do not inherit it, and shows as `carte-shim -id ID` from then on."""
    from carte.runtime.shim._options import CONFIG_VARIABLE

    raw = os.environ.pop(CONFIG_VARIABLE, "") or (argv[0] if argv else "")
    serve(decode_line(raw.encode()))


def serve(config: dict[str, Any]) -> NoReturn:
    """Be the monitor of `config` in this process, as `carte-shim -id ID`, until it exits."""
    from carte.runtime.proctitle import set_process_title

    monitor = Monitor(config)
    try:
        set_process_title(f"carte-shim -id {monitor.id}")
    except OSError:
        pass  # only cosmetic: the shim keeps its interpreter command line
    sys.stdout.flush()
    monitor.run()
