"""Start another process inside a running container (`carte exec`, `runtime exec`).

The caller forks stage A, puts it in the container's cgroup, and A joins every namespace of the
container's pid 1 through /proc/PID/ns/* (user first, mount last; setns of a mount namespace
also moves to its root), then forks the process itself so that it lands in the container's pid
namespace. The caller is a subreaper, so the process becomes its child when A exits.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import NoReturn

from carte.api.errors import Conflict, InvalidArgument
from carte.runtime import state
from carte.runtime import syscalls as sc
from carte.runtime.channel import Message, channel_pair, receive, report_and_exit, send
from carte.runtime.create import (
    NAMESPACE_FLAGS,
    PROC_NS_NAMES,
    Stdio,
    assert_single_threaded,
    kill_and_reap,
    redirect_stdio,
)
from carte.runtime.process import (
    EXIT_CANNOT_RUN,
    PreparedSeccomp,
    exec_user_process,
    prepare_seccomp,
)
from carte.runtime.seccomp import LinuxSeccomp
from carte.runtime.spec import Process
from carte.runtime.terminal import connect_console, setup_terminal

__all__ = ["exec_process"]


def exec_process(
    state_dir: Path,
    container_id: str,
    process: Process,
    *,
    stdio: Stdio | None = None,
    console_socket: Path | None = None,
    preserve_fds: int = 0,
    seccomp_profile: LinuxSeccomp | None = None,
) -> int:
    """Start `process` inside the running container and return its pid (a child of the caller).

    The process runs with its own user, capabilities, no_new_privs and `seccomp_profile`
    (normally the container's). The calling process must be single-threaded. Raises
    `NotFound` for an unknown id, `Conflict` when the container is not running, and
    `InvalidArgument` naming what failed; nothing is left running after a failure.
    """
    from carte.runtime.cgroups import open_cgroup

    assert_single_threaded()
    record = state.load_record(state_dir, container_id)
    if state.status_of(state_dir, record) != "running":
        raise Conflict(f'cannot exec in container "{container_id}": it is not running')
    seccomp_filter = prepare_seccomp(seccomp_profile)
    namespace_fds = _open_namespaces(record.pid)
    console = connect_console(console_socket) if process.terminal else None
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    parent_end, child_end = channel_pair()
    stage_a = os.fork()
    if stage_a == 0:
        parent_end.close()
        _stage_a(namespace_fds, stdio, console, process, seccomp_filter, preserve_fds, child_end)
    child_end.close()
    if console is not None:
        console.close()
    for fd in namespace_fds.values():
        os.close(fd)
    pid = 0
    failure = ""
    try:
        open_cgroup(record.cgroups_path).add_process(stage_a)
        send(parent_end, Message(kind="go"))
        while (message := receive(parent_end)) is not None:
            if message.kind == "pid":
                pid = message.pid
            elif message.kind == "error":
                failure = message.text
    finally:
        parent_end.close()
        os.waitpid(stage_a, 0)
    if failure or not pid:
        if pid:
            kill_and_reap(pid)
        raise InvalidArgument(
            f'cannot exec in container "{container_id}": {failure or "joining it failed"}'
        )
    return pid


def _open_namespaces(pid: int) -> dict[str, int]:
    """fds of the container's namespaces that differ from ours, by spec type."""
    fds: dict[str, int] = {}
    for kind, name in PROC_NS_NAMES.items():
        target = f"/proc/{pid}/ns/{name}"
        try:
            if os.readlink(target) != os.readlink(f"/proc/self/ns/{name}"):
                fds[kind] = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    return fds


def _stage_a(
    namespace_fds: dict[str, int],
    stdio: Stdio | None,
    console: socket.socket | None,
    process: Process,
    seccomp_filter: PreparedSeccomp | None,
    preserve_fds: int,
    channel: socket.socket,
) -> NoReturn:
    try:
        message = receive(channel)
        if message is None or message.kind != "go":
            os._exit(1)
        redirect_stdio(stdio)
        for kind in PROC_NS_NAMES:
            if kind in namespace_fds:
                sc.setns(namespace_fds.pop(kind), NAMESPACE_FLAGS[kind], path=f"{kind} namespace")
        pid = os.fork()
        if pid == 0:
            try:
                if console is not None:
                    setup_terminal(console, process.console_size)
                channel.close()
            except BaseException as error:
                report_and_exit(channel, error)
            # As Docker's exec: one that cannot start exits 126, a missing command included.
            exec_user_process(
                process, seccomp_filter, preserve_fds=preserve_fds, failed=EXIT_CANNOT_RUN
            )
        send(channel, Message(kind="pid", pid=pid))
        os._exit(0)
    except BaseException as error:
        report_and_exit(channel, error)
