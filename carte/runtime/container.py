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

from carte.api.errors import Conflict, InvalidArgument, NotFound
from carte.runtime import state
from carte.runtime.create import Spawned, spawn
from carte.runtime.enter import exec_process
from carte.runtime.spec import OCI_VERSION
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
    """Let a created container exec its user process, then run the poststart hooks.

    The container runs its startContainer hooks between our opening the fifo and its answer:
    "0" (going) or "1" and the failed hook's line, after which it exits. Raises `NotFound` for
    an unknown id, `Conflict` unless the container is created, `InvalidArgument` when a
    startContainer hook failed (the container is then stopped). A failing poststart hook is
    only a warning on stderr.
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
        answer = b""
        while not answer:
            ready, _, _ = select.select([reader], [], [], 0.05)
            if ready:
                answer = os.read(reader, 1)
            if not answer and state.process_start_time(record.pid) != record.start_time:
                raise Conflict(f'cannot start container "{container_id}": it exited')
        if answer != b"0":
            raise InvalidArgument(
                f'cannot start container "{container_id}": {_rest_of(reader)}; '
                "the container is stopped"
            )
    finally:
        os.close(reader)
        fifo_path.unlink(missing_ok=True)
    if record.hooks is not None and record.hooks.poststart:
        from carte.runtime.hooks import run_hooks_warning

        run_hooks_warning("poststart", record.hooks.poststart, state.oci_state(state_dir, record))


def _rest_of(reader: int) -> str:
    """What the container wrote after its "1": up to end of file (it exits after writing)."""
    text = b""
    while True:
        select.select([reader], [], [], 5)
        chunk = os.read(reader, 4096)
        if not chunk:
            return text.decode(errors="replace").strip() or "a startContainer hook failed"
        text += chunk


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
    """Remove a stopped container: its cgroup and state directory; then run its poststop
    hooks (a failing one is only a warning on stderr).

    A created or running container needs `force`, which kills it first (as runc); without it
    the container is left exactly as it was. Raises `NotFound` for an unknown id (unless
    `force`: then there is nothing to do), `Conflict` for a container that is not stopped
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
    if status != "stopped" and not force:
        raise Conflict(
            f'cannot delete container "{container_id}": it is {status}, not stopped; stop it '
            "first (carte runtime kill) or use delete --force"
        )
    if status != "stopped":
        try:
            os.kill(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    open_cgroup(record.cgroups_path).destroy()
    state.remove_container_dir(state_dir, container_id)
    if record.hooks is not None and record.hooks.poststop:
        from carte.runtime.hooks import run_hooks_warning

        stopped = OCIState(
            oci_version=OCI_VERSION,
            id=record.id,
            status="stopped",
            pid=0,
            bundle=record.bundle,
            annotations=record.annotations,
            created=record.created,
        )
        run_hooks_warning("poststop", record.hooks.poststop, stopped)


def wait_exit(pid: int) -> int:
    """Wait for a container (our child after spawn) and return its shell-style exit status."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)
