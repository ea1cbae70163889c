"""The OCI lifecycle of a container: create (`spawn`), start, state, kill, delete, exec.

`spawn` (carte.runtime.create) and `exec_process` (carte.runtime.enter) fork and must run in
a single-threaded caller; the rest only read state and send signals. Status follows the
runtime spec: created (pid 1 parked on exec.fifo), running, stopped (pid 1 gone or a zombie).
"""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from carte.api.errors import Conflict, NotFound
from carte.runtime import state
from carte.runtime.create import Spawned, spawn
from carte.runtime.enter import exec_process
from carte.runtime.state import EXEC_FIFO, OCIState

__all__ = [
    "Spawned",
    "delete",
    "exec_process",
    "kill",
    "spawn",
    "start",
    "state_of",
    "wait_exit",
]


def start(state_dir: Path, container_id: str) -> None:
    """Let a created container exec its user process.

    Raises `NotFound` for an unknown id and `Conflict` unless the container is created.
    """
    record = state.load_record(state_dir, container_id)
    status = state.status_of(state_dir, record)
    if status != "created":
        raise Conflict(
            f'cannot start container "{container_id}": it is {status}, not created; '
            "only a created container can be started"
        )
    fifo_path = state_dir / container_id / EXEC_FIFO
    reader = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], 0.05)
            if ready and os.read(reader, 1):
                break
            if state.process_start_time(record.pid) != record.start_time:
                raise Conflict(f'cannot start container "{container_id}": it exited')
    finally:
        os.close(reader)
        fifo_path.unlink(missing_ok=True)


def state_of(state_dir: Path, container_id: str) -> OCIState:
    """The spec's state of `container_id`. Raises `NotFound` for an unknown id."""
    return state.oci_state(state_dir, state.load_record(state_dir, container_id))


def kill(state_dir: Path, container_id: str, sig: int, *, all_processes: bool = False) -> None:
    """Send `sig` to the container's pid 1 (or every process in its cgroup).

    Raises `NotFound` for an unknown id and `Conflict` if it is stopped.
    """
    record = state.load_record(state_dir, container_id)
    status = state.status_of(state_dir, record)
    if status == "stopped":
        raise Conflict(f'cannot kill container "{container_id}": it is not running')
    if all_processes:
        from carte.runtime.cgroups import open_cgroup

        open_cgroup(record.cgroups_path).kill(sig)
        return
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        pass


def delete(state_dir: Path, container_id: str, *, force: bool = False) -> None:
    """Remove a stopped (or created) container: its cgroup and state directory.

    A running container needs `force`, which kills it first. Raises `NotFound` for an unknown
    id (unless `force`: then there is nothing to do), `Conflict` for a running container
    without `force`.
    """
    from carte.runtime.cgroups import open_cgroup

    try:
        record = state.load_record(state_dir, container_id)
    except NotFound:
        if not force:
            raise
        state.remove_container_dir(state_dir, container_id)
        return
    status = state.status_of(state_dir, record)
    if status == "running" and not force:
        raise Conflict(
            f'cannot delete container "{container_id}": it is running; stop it first '
            "(carte runtime kill) or use delete --force"
        )
    if status != "stopped":
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    open_cgroup(record.cgroups_path).destroy()
    state.remove_container_dir(state_dir, container_id)


def wait_exit(pid: int) -> int:
    """Wait for a container (our child after spawn) and return its shell-style exit status."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)
