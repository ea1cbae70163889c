"""The monitor's side of exec: helper processes, their reports, and the exec'd processes.

An exec forks a helper from the shim that runs what `carte shim exec` runs
(carte/runtime/shim/_runtime_steps.py, the same function and inputs) with the client's stdio
as its fds 0-2 and a socket as fd 3, so no new interpreter starts for each exec and health
probe (it still imports the runtime unless the shim has it already). The helper starts the
process in the container and reports ``{"pid": N}`` (plus the pty master for a terminal) or
``{"error": ...}``; it then exits and the process is re-parented to the shim, a child
subreaper, which reaps it. The process may even exit before its pid is reported: such an
early exit status is kept until the report.
"""

from __future__ import annotations

import _socket
import fcntl
import os

from carte.runtime.shim._connections import Clients, Connection
from carte.runtime.shim._loop import EventLoop
from carte.runtime.shim.protocol import LineBuffer, decode_line, encode_line, fd_space, fds_in

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_READ_SIZE = 1 << 16
HELPER_REPORT_FD = 3


def exit_code(wait_status: int) -> int:
    """Docker's exit code for a `waitpid` status: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def spawn_helper(command: list[str], stdio: list[int], report: _socket.socket) -> int:
    """Fork and exec `command` with `stdio` as its fds 0-2 and `report` as fd 3; its pid."""
    pid = os.fork()
    if pid == 0:
        try:
            # Lift the sources above the targets first, so no dup2 clobbers a later source.
            sources = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in [*stdio, report.fileno()]]
            for target, fd in enumerate(sources):
                os.dup2(fd, target)
            os.closerange(HELPER_REPORT_FD + 1, os.sysconf("SC_OPEN_MAX"))
            os.execv(command[0], command)
        finally:
            os._exit(127)
    return pid


def fork_helper(config: dict[str, Any], stdio: list[int], report: _socket.socket) -> int:
    """Fork a child that runs `carte shim exec CONFIG` in place (stdio as fds 0-2, `report`
    as fd 3) and exits; its pid. The shim's signal handlers and wakeup fd are undone first,
    as a new interpreter would not have them."""
    argument = encode_argument(config)
    pid = os.fork()
    if pid == 0:
        try:
            import signal

            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sources = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in [*stdio, report.fileno()]]
            for target, fd in enumerate(sources):
                os.dup2(fd, target)
            os.closerange(HELPER_REPORT_FD + 1, os.sysconf("SC_OPEN_MAX"))
            from carte.runtime.shim._runtime_steps import main as helper

            helper("exec", [argument])
        finally:
            os._exit(127)
    return pid


def encode_argument(config: dict[str, Any]) -> str:
    """A JSON object as one command-line argument."""
    return encode_line(config).decode().rstrip("\n")


class ExecSession:
    """One exec: its helper's report channel, then its process; `client` hears about both."""

    def __init__(self, exec_id: str, client: Connection | None, report: _socket.socket) -> None:
        self.exec_id = exec_id
        self.client = client
        self.report = report
        self.report_lines = LineBuffer()
        self.pid = 0
        self.reported = False


class Execs:
    """The exec sessions of one container."""

    def __init__(
        self,
        loop: EventLoop,
        clients: Clients,
        helper_config: dict[str, Any],
    ) -> None:
        self._loop = loop
        self._clients = clients
        self._helper_config = helper_config
        self._sessions: dict[str, ExecSession] = {}
        self._by_pid: dict[int, ExecSession] = {}
        self._helpers: set[int] = set()
        self._early_exits: dict[int, int] = {}
        self._counter = 0

    @property
    def busy(self) -> bool:
        """Whether some exec is still starting or running."""
        return bool(self._sessions)

    def start(
        self, client: Connection, process: dict[str, Any], fds: list[int], exec_id: str = ""
    ) -> None:
        """Run a helper to start `process` with `fds` as stdio (none for a terminal)."""
        self._counter += 1
        exec_id = exec_id or f"exec-{self._counter}"
        ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
        stdio = fds or [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)] * 3
        try:
            helper = fork_helper({**self._helper_config, "process": process}, stdio, theirs)
        finally:
            for fd in set(stdio):
                os.close(fd)
            theirs.close()
        self._helpers.add(helper)
        session = ExecSession(exec_id, client, ours)
        self._sessions[exec_id] = session
        ours.setblocking(False)
        self._loop.watch(ours.fileno(), lambda events: self._read_report(session))

    def reaped(self, pid: int, status: int) -> bool:
        """Take the exit of `pid` if it is a helper or an exec'd process; False otherwise."""
        if pid in self._helpers:
            self._helpers.discard(pid)  # its report (or its end of file) tells the outcome
            return True
        session = self._by_pid.pop(pid, None)
        if session is not None:
            self._exited(session, status)
            return True
        if any(not session.reported for session in self._sessions.values()):
            self._early_exits[pid] = status  # perhaps a process whose pid is not reported yet
            return True
        return False

    def forget_client(self, client: Connection) -> None:
        """The client left: its processes run on, their exit codes are dropped."""
        for session in self._sessions.values():
            if session.client is client:
                session.client = None

    def _read_report(self, session: ExecSession) -> None:
        try:
            data, ancillary, _, _ = session.report.recvmsg(
                _READ_SIZE, fd_space(1), _socket.MSG_CMSG_CLOEXEC
            )
        except BlockingIOError:
            return
        received = fds_in(ancillary)
        for line in session.report_lines.feed(data) if data else []:
            self._reported(session, decode_line(line), received)
            received = []
        for fd in received:
            os.close(fd)
        if not data:
            self._loop.unwatch(session.report.fileno())
            session.report.close()
            if not session.reported:
                self._failed(session, "the exec helper ended without a word")

    def _reported(self, session: ExecSession, report: dict[str, Any], fds: list[int]) -> None:
        if session.reported:
            return
        session.reported = True
        if "error" in report:
            self._failed(session, str(report["error"]))
            return
        session.pid = int(report["pid"])
        if session.client is not None:
            reply = {"ok": True, "exec_id": session.exec_id, "pid": session.pid}
            self._clients.send(session.client, encode_line(reply), fds)
        else:
            for fd in fds:
                os.close(fd)
        if session.pid in self._early_exits:
            self._exited(session, self._early_exits.pop(session.pid))
        else:
            self._by_pid[session.pid] = session
        if all(other.reported for other in self._sessions.values()):
            self._early_exits.clear()

    def _failed(self, session: ExecSession, reason: str) -> None:
        session.reported = True
        self._sessions.pop(session.exec_id, None)
        if session.client is not None:
            self._clients.reply(session.client, error=reason)

    def _exited(self, session: ExecSession, status: int) -> None:
        self._sessions.pop(session.exec_id, None)
        if session.client is not None:
            event = {"event": "exit", "exec_id": session.exec_id, "exit_code": exit_code(status)}
            self._clients.send(session.client, encode_line(event))
