"""`carte shim --id ...`: create the container, report once, then become its lean monitor.

Process story (the daemon runs this command and reads one line from its stdout):

    carte shim (the launcher)  -- forks, relays the shim's one report line, exits 0 or 1
      └─ shim: setsid (it must outlive the daemon), stdio to /dev/null, stdout/stderr pipes
         (or the console socket for a terminal), runtime `spawn` (the container's pid 1 is
         its child, parked until start), cgroup OOM count, binds shim.sock, reports, then
         execs `carte shim monitor` in place: same pid, still the parent and subreaper; its
         configuration in $CARTE_SHIM_CONFIG, and it shows as `carte-shim -id ID`. A shim
         forked by the factory runs the monitor without exec, in the factory's shared pages.

A failure before the report is one line ``{"ok": false, "error": ..., "code": ...}``; what
the failed create had made is removed (the runtime's spawn cleans up after itself; after a
successful spawn the container is killed and deleted).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from carte.runtime.shim._options import (
    CONFIG_VARIABLE,
    ShimOptions,
    parse_options,
    self_command,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


def _report(fd: int, message: dict[str, Any]) -> None:
    from carte.runtime.shim.protocol import encode_line

    try:
        os.write(fd, encode_line(message))
    except OSError:
        pass  # the launcher is gone; nobody to tell


def _relay(read_end: int, shim_pid: int) -> NoReturn:
    """The launcher: copy the shim's one line to stdout; exit 0 if it says ok, else 1."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(read_end, 4096)
        if not chunk:
            break
        line += chunk
    from carte.runtime.shim.protocol import ProtocolError, decode_line, encode_line

    try:
        ok = bool(decode_line(line).get("ok"))
    except ProtocolError:
        line = encode_line({"ok": False, "error": "the shim died while creating the container"})
        ok = False
    os.write(1, line)
    try:
        os.waitpid(shim_pid, os.WNOHANG)  # reap it if it already failed
    except ChildProcessError:
        pass
    os._exit(0 if ok else 1)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)


def main(argv: list[str]) -> NoReturn:
    from carte.runtime.shim.protocol import encode_line

    try:
        options = parse_options(argv)
    except ValueError as error:
        os.write(1, encode_line({"ok": False, "error": str(error), "code": "invalid_argument"}))
        os._exit(2)
    sys.stdout.flush()
    read_end, write_end = os.pipe()
    shim_pid = os.fork()
    if shim_pid:
        os.close(write_end)
        _relay(read_end, shim_pid)
    os.close(read_end)
    become_shim(options, write_end)


def become_shim(options: ShimOptions, report_fd: int, *, in_place: bool = False) -> NoReturn:
    """In a fresh child: detach, create the container, report on `report_fd`, exec the monitor
    (or, `in_place`, run it in this process: see `_create_and_become_monitor`).

    Never returns: on failure it reports one line and exits 1.
    """
    os.setsid()
    _detach_stdio()
    try:
        _create_and_become_monitor(options, report_fd, in_place)
    except BaseException as error:
        from carte.api.errors import CarteError

        if isinstance(error, CarteError):
            code, reason = error.code, error.message
        else:
            code = "internal"
            reason = f'cannot create container "{options.id}": {type(error).__name__}: {error}'
        _report(report_fd, {"ok": False, "error": reason, "code": code})
        os._exit(1)


class _Stdio:
    """The container's ends and the shim's ends of its stdio."""

    def __init__(self, *, terminal: bool, keep_stdin: bool) -> None:
        self.container: tuple[int, int, int] | None = None
        self.shim_stdin = -1
        self.shim_stdout = -1
        self.shim_stderr = -1
        self._container_fds: list[int] = []
        if terminal:
            return
        if keep_stdin:
            stdin_read, self.shim_stdin = os.pipe()
        else:
            stdin_read = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.shim_stdout, stdout_write = os.pipe()
        self.shim_stderr, stderr_write = os.pipe()
        self.container = (stdin_read, stdout_write, stderr_write)
        self._container_fds = [stdin_read, stdout_write, stderr_write]

    def close_container_ends(self) -> None:
        for fd in self._container_fds:
            os.close(fd)
        self._container_fds = []


def _create_and_become_monitor(options: ShimOptions, ready_fd: int, in_place: bool) -> NoReturn:
    from carte.runtime import syscalls
    from carte.runtime.container import spawn
    from carte.runtime.shim._console import ContainerConsole
    from carte.runtime.shim._signals import default_dispositions_for_children
    from carte.runtime.shim.protocol import SOCKET_NAME, UnixAddress, encode_line
    from carte.runtime.spec import load_spec
    from carte.runtime.state import EXEC_FIFO

    state_dir = Path(options.state_dir)
    bundle = Path(options.bundle)
    spec = load_spec(bundle / "config.json")
    terminal = spec.process is not None and spec.process.terminal
    _check_log_path(options.log_path)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    stdio = _Stdio(terminal=terminal, keep_stdin=options.stdin)
    console = ContainerConsole(state_dir, options.id) if terminal else None
    # Orphans of exec'd processes (and of a container without a pid namespace) come to us.
    syscalls.prctl(syscalls.PR_SET_CHILD_SUBREAPER, 1)
    try:
        with default_dispositions_for_children():
            spawned = spawn(
                spec,
                bundle,
                container_id=options.id,
                state_dir=state_dir,
                stdio=stdio.container,
                console_socket=Path(console.address) if console is not None else None,
            )
    finally:
        stdio.close_container_ends()
    try:
        pty_master = console.receive_master() if console is not None else -1
        oom_file, oom_base, cgroup_procs = _cgroup_watch(spawned.cgroups_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        socket_path = os.path.join(spawned.state_dir, SOCKET_NAME)
        with UnixAddress(socket_path) as address:
            listener.bind(address)
        listener.listen(64)
    except BaseException:
        _discard(spawned.pid, state_dir, options.id)
        raise
    finally:
        if console is not None:
            console.close()
    monitor_command = self_command()
    config: dict[str, Any] = {
        "id": options.id,
        "directory": spawned.state_dir,
        "state_dir": str(state_dir),
        "container_pid": spawned.pid,
        "exec_fifo": EXEC_FIFO,
        "listen_fd": listener.fileno(),
        "stdin_fd": stdio.shim_stdin,
        "stdout_fd": stdio.shim_stdout,
        "stderr_fd": stdio.shim_stderr,
        "pty_fd": pty_master,
        "log_path": options.log_path,
        "log_max_size": options.log_max_size,
        "log_max_file": options.log_max_file,
        "oom_file": oom_file,
        "oom_base": oom_base,
        "cgroup_procs": cgroup_procs,
        "linger": options.linger,
        "self_command": monitor_command,
    }
    _report(
        ready_fd,
        {
            "ok": True,
            "id": options.id,
            "pid": spawned.pid,
            "shim_pid": os.getpid(),
            "socket": socket_path,
        },
    )
    _end_report(ready_fd)
    _log_stderr_to(os.path.join(spawned.state_dir, "shim.log"))
    if in_place:
        _serve_in_place(config, listener)
    for fd in (listener.fileno(), stdio.shim_stdin, stdio.shim_stdout, stdio.shim_stderr):
        if fd >= 0:
            os.set_inheritable(fd, True)
    if pty_master >= 0:
        os.set_inheritable(pty_master, True)
    command = [*monitor_command, "shim", "monitor"]
    environment = dict(os.environ)
    environment[CONFIG_VARIABLE] = encode_line(config).decode().strip()
    os.execve(command[0], command, environment)


def _serve_in_place(config: dict[str, Any], listener: socket.socket) -> NoReturn:
    """Run the monitor in this process, forked from the shim factory: its imports are the
    factory's pages, shared copy-on-write, so an exec forks a helper that is already warm
    instead of one that imports the runtime (about 40 ms of CPU per exec or health probe).

    `gc.freeze` keeps the collector from writing to those objects, which would copy the pages.
    """
    import gc

    from carte.runtime.shim._monitor import serve

    listener.detach()  # the monitor owns the fd
    gc.freeze()
    serve(config)


def _end_report(fd: int) -> None:
    """Close the report channel so its reader sees the end even while the parked container
    still holds a copy of it (a socket from the factory is shut down for everyone)."""
    try:
        channel = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)  # a pipe from the launcher, which reads one line only
        return
    try:
        channel.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    channel.close()


def _log_stderr_to(path: str) -> None:
    """Send the monitor's stderr (tracebacks of its own bugs) to a file; /dev/null if that fails."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    os.dup2(fd, 2)
    os.close(fd)


def _check_log_path(log_path: str) -> None:
    from carte.api.errors import InvalidArgument

    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as error:
        raise InvalidArgument(
            f"log file {log_path}: cannot open it ({error.strerror}); check that its directory "
            "exists and is writable"
        ) from None
    os.close(fd)


def _cgroup_watch(cgroups_path: str) -> tuple[str, int, str]:
    """The file holding the cgroup's oom_kill counter, its value now, and a cgroup.procs file."""
    from carte.runtime.cgroups import open_cgroup

    cgroup = open_cgroup(cgroups_path)
    paths = cgroup.paths()
    oom_file = ""
    if "memory" in paths:
        oom_file = str(paths["memory"] / "memory.oom_control")
    elif "unified" in paths:
        oom_file = str(paths["unified"] / "memory.events")
    procs_dir = paths.get("pids") or paths.get("memory") or next(iter(paths.values()), None)
    procs = str(procs_dir / "cgroup.procs") if procs_dir is not None else ""
    return oom_file, cgroup.oom_kill_count(), procs


def _discard(pid: int, state_dir: Path, container_id: str) -> None:
    """Undo a spawn whose shim could not be set up: kill, reap, delete."""
    from carte.runtime.container import delete

    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    try:
        delete(state_dir, container_id, force=True)
    except Exception:
        pass  # best effort: the original error is what the caller needs to see
