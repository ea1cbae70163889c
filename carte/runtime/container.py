"""The OCI lifecycle: spawn (create), start, state, kill, delete, and exec into a container.

`spawn` runs in THE CALLING process, which must be single-threaded (the OCI CLI or the shim,
both freshly exec'd). Process tree while creating:

    caller (becomes a child subreaper)
      └─ stage A: joins/creates the user namespace, joins namespaces by path, unshares the
         rest (pid, mount, uts, ipc, net, cgroup) after the caller put it in the cgroup,
         forks stage B, reports B's pid and exits
           └─ stage B = the container's pid 1: builds the root filesystem, pivots, sets the
              hostname, sends "ready", then blocks opening exec.fifo until `start`
              opens it for reading; then execs the user process (or stays as Carte's init
              and forks it, with the run.carte.init annotation).

Because the caller is a subreaper, B is re-parented to it when A exits, so the caller can
`waitpid` B; the pid namespace is created by A, so the caller's own later forks are NOT in the
container's pid namespace. Errors in A or B travel back over a socket as one line, and a failed
create removes the cgroup and state directory; mounts only ever exist in the container's mount
namespace, so they vanish with it.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import termios
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import msgspec

from carte.api.errors import Conflict, Internal, InvalidArgument, NotFound
from carte.runtime import rootfs, state
from carte.runtime import syscalls as sc
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.resources import LinuxResources
from carte.runtime.process import PreparedSeccomp, exec_user_process, prepare_seccomp
from carte.runtime.seccomp import LinuxSeccomp
from carte.runtime.spec import INIT_ANNOTATION, LinuxIDMapping, Process, Spec
from carte.runtime.state import EXEC_FIFO, ContainerRecord, OCIState

__all__ = [
    "NAMESPACE_FLAGS",
    "Spawned",
    "delete",
    "exec_process",
    "kill",
    "spawn",
    "start",
    "state_of",
    "wait_exit",
]

NAMESPACE_FLAGS = {
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
}
# /proc/PID/ns/<name> for each spec namespace type; user first, mnt last (runc's join order).
_PROC_NS_NAMES = {
    "user": "user",
    "ipc": "ipc",
    "uts": "uts",
    "network": "net",
    "pid": "pid",
    "cgroup": "cgroup",
    "mount": "mnt",
}
Stdio = tuple[int, int, int]


class Spawned(msgspec.Struct, kw_only=True):
    """A created container: `pid` is its pid 1 as the host sees it (a child of the caller)."""

    id: str
    pid: int
    state_dir: str
    cgroups_path: str


class _Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message on the create socket: from stage A ("userns", "pid") or B ("ready", "error")."""

    kind: str
    pid: int = 0
    text: str = ""


_message_encoder = msgspec.json.Encoder()
_message_decoder = msgspec.json.Decoder(_Message)


def _send(channel: socket.socket, message: _Message) -> None:
    channel.send(_message_encoder.encode(message))


def _receive(channel: socket.socket) -> _Message | None:
    raw = channel.recv(65536)
    return _message_decoder.decode(raw) if raw else None


def assert_single_threaded() -> None:
    """Raise `Internal` if the calling process runs more than one thread (fork/unshare would be
    unsafe or fail)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:") and int(line.split()[1]) != 1:
                raise Internal(
                    "the container runtime must run in a single-threaded process; "
                    "start it through `carte runtime` or `carte shim`"
                )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def cgroups_path_of(spec: Spec, container_id: str) -> str:
    """The container's cgroup path: the spec's, or /carte/<id> when it gives none."""
    return spec.linux.cgroups_path or f"/carte/{container_id}"


def spawn(
    spec: Spec,
    bundle: Path,
    *,
    container_id: str,
    state_dir: Path,
    stdio: Stdio | None = None,
    console_socket: Path | None = None,
    preserve_fds: int = 0,
) -> Spawned:
    """Create the container: everything but the user process, which waits for `start`.

    Raises `Conflict` if the id exists, `InvalidArgument` for a spec the kernel or this runtime
    refuses (one line naming the setting), `Internal` otherwise; after a failure nothing of the
    container is left (cgroup, state directory; its mounts died with its namespace).
    """
    from carte.runtime.cgroups import open_cgroup

    assert_single_threaded()
    if spec.process is None:
        raise InvalidArgument("config.json: process is missing; give process.args")
    if not any(ns.type == "mount" for ns in spec.linux.namespaces):
        raise InvalidArgument(
            'config.json: linux.namespaces has no "mount" namespace; Carte needs one to build '
            "the root filesystem"
        )
    for namespace in spec.linux.namespaces:
        if namespace.type not in NAMESPACE_FLAGS:
            raise InvalidArgument(
                f'config.json: linux.namespaces: unknown type "{namespace.type}"; use one of '
                + ", ".join(NAMESPACE_FLAGS)
            )
    bundle = bundle.resolve()
    directory = state.container_dir(state_dir, container_id)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        directory.mkdir(mode=0o711)
    except FileExistsError:
        raise Conflict(
            f'container "{container_id}" already exists; delete it first '
            f"(carte runtime delete {container_id}) or pick another id"
        ) from None
    cgroups_path = cgroups_path_of(spec, container_id)
    cgroup = None
    pid = 0
    try:
        _make_exec_fifo(spec, directory / EXEC_FIFO)
        cgroup = open_cgroup(cgroups_path)
        cgroup.create()
        cgroup.apply(with_standard_devices(spec.linux.resources))
        seccomp_filter = prepare_seccomp(spec.linux.seccomp)
        console = _connect_console(console_socket) if spec.process.terminal else None
        pid = _fork_container(
            spec,
            seccomp_filter,
            bundle,
            container_id,
            directory,
            stdio,
            console,
            preserve_fds,
            cgroup.add_process,
        )
        start_time = state.process_start_time(pid)
        if start_time is None:
            raise Internal(f'container "{container_id}" exited while being created')
        state.write_record(
            directory,
            ContainerRecord(
                id=container_id,
                pid=pid,
                start_time=start_time,
                bundle=str(bundle),
                rootfs=rootfs.root_path(spec, str(bundle)),
                cgroups_path=cgroups_path,
                created=_now(),
                annotations=spec.annotations,
                init=spec.annotations.get(INIT_ANNOTATION) == "true",
            ),
        )
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        if cgroup is not None:
            cgroup.destroy()
        state.remove_container_dir(state_dir, container_id)
        raise
    return Spawned(id=container_id, pid=pid, state_dir=str(directory), cgroups_path=cgroups_path)


def with_standard_devices(resources: LinuxResources | None) -> LinuxResources:
    """The spec's resources with the standard devices (null, zero, tty, ptmx, pts, ...)
    allowed after its own device rules, as runc does: engines such as podman write only
    "deny all" and rely on the runtime for these."""
    resources = resources if resources is not None else LinuxResources()
    standard = [rule for rule in default_devices() if rule.allow]
    return msgspec.structs.replace(resources, devices=[*resources.devices, *standard])


def _make_exec_fifo(spec: Spec, path: Path) -> None:
    """The fifo `start` releases the container with; owned by the container's root so a
    user-namespaced container can open it for writing."""
    os.mkfifo(path, 0o600)
    uid = _host_id_of_root(spec.linux.uid_mappings)
    gid = _host_id_of_root(spec.linux.gid_mappings)
    if uid or gid:
        os.chown(path, uid, gid)


def _host_id_of_root(mappings: list[LinuxIDMapping]) -> int:
    for mapping in mappings:
        if mapping.container_id <= 0 < mapping.container_id + mapping.size:
            return mapping.host_id - mapping.container_id
    return 0


def _connect_console(console_socket: Path | None) -> socket.socket:
    if console_socket is None:
        raise InvalidArgument(
            "process.terminal is true but no console socket was given; pass --console-socket "
            "or set terminal to false"
        )
    console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        console.connect(str(console_socket))
    except OSError as error:
        console.close()
        raise InvalidArgument(
            f"console socket {console_socket}: cannot connect ({error.strerror}); check the path"
        ) from None
    return console


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _fork_container(
    spec: Spec,
    seccomp_filter: PreparedSeccomp | None,
    bundle: Path,
    container_id: str,
    directory: Path,
    stdio: Stdio | None,
    console: socket.socket | None,
    preserve_fds: int,
    add_to_cgroup: Callable[[int], None],
) -> int:
    """Fork stage A and drive the create handshake; return stage B's pid (re-parented to us)."""
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    namespace_fds = _open_namespace_paths(spec)
    # Opened here, as the host's root: a user-namespaced child could not reach the state dir.
    fifo = os.open(directory / EXEC_FIFO, os.O_PATH | os.O_CLOEXEC)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        stage_a = os.fork()
        if stage_a == 0:
            parent_end.close()
            _stage_a(
                spec,
                seccomp_filter,
                bundle,
                container_id,
                fifo,
                stdio,
                console,
                preserve_fds,
                namespace_fds,
                child_end,
            )
        os.close(fifo)
        child_end.close()
        if console is not None:
            console.close()
        for fd in namespace_fds.values():
            os.close(fd)
        return _drive_handshake(spec, container_id, stage_a, parent_end, add_to_cgroup)
    finally:
        parent_end.close()
        child_end.close()


def _open_namespace_paths(spec: Spec) -> dict[str, int]:
    fds: dict[str, int] = {}
    try:
        for namespace in spec.linux.namespaces:
            if namespace.path:
                fds[namespace.type] = os.open(namespace.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        for fd in fds.values():
            os.close(fd)
        raise InvalidArgument(
            f"linux.namespaces: cannot open {error.filename}: {error.strerror}; "
            "check the namespace path"
        ) from None
    return fds


def _drive_handshake(
    spec: Spec,
    container_id: str,
    stage_a: int,
    channel: socket.socket,
    add_to_cgroup: Callable[[int], None],
) -> int:
    container_pid = 0
    failure = ""
    try:
        add_to_cgroup(stage_a)
        _send(channel, _Message(kind="go"))
        while True:
            message = _receive(channel)
            if message is None:
                break
            if message.kind == "userns":
                _write_id_maps(spec, stage_a)
                _send(channel, _Message(kind="mapped"))
            elif message.kind == "pid":
                container_pid = message.pid
            elif message.kind == "error":
                failure = message.text
                break
            elif message.kind == "ready":
                break
    finally:
        _, status = os.waitpid(stage_a, 0)
    if not failure and not container_pid:
        failure = f"setting up namespaces failed (exit status {os.waitstatus_to_exitcode(status)})"
    if failure:
        if container_pid:
            _kill_and_reap(container_pid)
        raise InvalidArgument(f'cannot create container "{container_id}": {failure}')
    return container_pid


def _write_id_maps(spec: Spec, pid: int) -> None:
    for name, mappings in (
        ("uid_map", spec.linux.uid_mappings),
        ("gid_map", spec.linux.gid_mappings),
    ):
        lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
        if lines:
            with open(f"/proc/{pid}/{name}", "w") as id_map:
                id_map.write(lines)


def _report_and_exit(channel: socket.socket, error: BaseException) -> NoReturn:
    if isinstance(error, OSError):
        text = error.strerror or str(error)
    else:
        text = str(error) or type(error).__name__
    try:
        _send(channel, _Message(kind="error", text=text))
    finally:
        os._exit(1)


def _redirect_stdio(stdio: Stdio | None) -> None:
    if stdio is None:
        return
    high = [os.dup(fd) for fd in stdio]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)


def _stage_a(
    spec: Spec,
    seccomp_filter: PreparedSeccomp | None,
    bundle: Path,
    container_id: str,
    fifo: int,
    stdio: Stdio | None,
    console: socket.socket | None,
    preserve_fds: int,
    namespace_fds: dict[str, int],
    channel: socket.socket,
) -> NoReturn:
    try:
        message = _receive(channel)
        if message is None or message.kind != "go":
            os._exit(1)
        _redirect_stdio(stdio)
        wanted = {ns.type for ns in spec.linux.namespaces if not ns.path}
        in_user_namespace = any(ns.type == "user" for ns in spec.linux.namespaces)
        if "user" in namespace_fds:
            sc.setns(namespace_fds.pop("user"), sc.CLONE_NEWUSER, path="user namespace")
        elif "user" in wanted:
            sc.unshare(sc.CLONE_NEWUSER)
            _send(channel, _Message(kind="userns"))
            reply = _receive(channel)
            if reply is None or reply.kind != "mapped":
                os._exit(1)
        if in_user_namespace:
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        for kind in _PROC_NS_NAMES:
            if kind in namespace_fds:
                sc.setns(namespace_fds.pop(kind), NAMESPACE_FLAGS[kind], path=f"{kind} namespace")
        flags = 0
        for kind in wanted - {"user"}:
            flags |= NAMESPACE_FLAGS[kind]
        sc.unshare(flags)
        container_pid = os.fork()
        if container_pid == 0:
            _stage_b(
                spec,
                seccomp_filter,
                bundle,
                container_id,
                fifo,
                console,
                preserve_fds,
                channel,
                new_uts="uts" in wanted,
                in_user_namespace=in_user_namespace,
            )
        _send(channel, _Message(kind="pid", pid=container_pid))
        os._exit(0)
    except BaseException as error:
        _report_and_exit(channel, error)


def _stage_b(
    spec: Spec,
    seccomp_filter: PreparedSeccomp | None,
    bundle: Path,
    container_id: str,
    fifo: int,
    console: socket.socket | None,
    preserve_fds: int,
    channel: socket.socket,
    *,
    new_uts: bool,
    in_user_namespace: bool,
) -> NoReturn:
    process = spec.process
    assert process is not None
    try:
        try:
            sc.join_session_keyring(f"_ses.{container_id}"[:64])
        except OSError:
            pass  # keyrings may be unavailable (EPERM under some seccomp/ns setups); not fatal
        run_init = _load_init() if spec.annotations.get(INIT_ANNOTATION) == "true" else None
        root_fd = rootfs.prepare_rootfs(spec, str(bundle), in_user_namespace=in_user_namespace)
        rootfs.pivot_into(root_fd)
        os.close(root_fd)
        if new_uts:
            if spec.hostname:
                sc.sethostname(spec.hostname)
            if spec.domainname:
                sc.setdomainname(spec.domainname)
        rootfs.finish_rootfs(spec)
        if console is not None:
            _setup_terminal(console, process)
        _send(channel, _Message(kind="ready"))
        channel.close()
    except BaseException as error:
        _report_and_exit(channel, error)
    try:
        _wait_for_start(fifo)
        if run_init is not None:
            _run_as_init(run_init, process, seccomp_filter, preserve_fds)
        exec_user_process(process, seccomp_filter, preserve_fds=preserve_fds)
    except BaseException as error:
        # Never let an exception unwind into the caller's code in this forked child.
        print(f"carte: cannot start the container process: {error}", file=sys.stderr, flush=True)
        os._exit(1)


RunInit = Callable[[Callable[[], int]], NoReturn]


def _load_init() -> RunInit:
    """Import Carte's init now: after pivot_root the host's Python files are out of reach."""
    from carte.runtime.init import run_init

    return run_init


def _run_as_init(
    run_init: RunInit, process: Process, seccomp_filter: PreparedSeccomp | None, preserve_fds: int
) -> NoReturn:
    def spawn_user_process() -> int:
        child = os.fork()
        if child == 0:
            exec_user_process(process, seccomp_filter, preserve_fds=preserve_fds)
        return child

    run_init(spawn_user_process)


def _wait_for_start(fifo: int) -> None:
    """Block until `start` opens the exec fifo for reading, then tell it we are going."""
    try:
        writer = os.open(f"/proc/self/fd/{fifo}", os.O_WRONLY | os.O_CLOEXEC)
        os.write(writer, b"0")
        os.close(writer)
        os.close(fifo)
    except OSError as error:
        print(f"carte: waiting for start failed: {error.strerror}", flush=True)
        os._exit(1)


_TIOCSCTTY = 0x540E
_TIOCSWINSZ = 0x5414


def _setup_terminal(console: socket.socket, process: Process) -> None:
    """Open a pty in the container's devpts, send the master to the console socket over
    SCM_RIGHTS, and make the slave our controlling terminal and stdio."""
    master, replica = os.openpty()
    if process.console_size is not None:
        size = struct.pack("HHHH", process.console_size.height, process.console_size.width, 0, 0)
        fcntl.ioctl(replica, _TIOCSWINSZ, size)
    socket.send_fds(console, [b"/dev/ptmx"], [master])
    console.close()
    os.close(master)
    os.setsid()
    fcntl.ioctl(replica, _TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(replica, target)
    if replica > 2:
        os.close(replica)
    termios.tcgetattr(0)


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

    The process joins every namespace of the container's pid 1 and its cgroup, then runs with
    its own user, capabilities, no_new_privs and seccomp (`seccomp_profile`, usually the
    container's). Raises `NotFound`, `Conflict` (not running) or `InvalidArgument` naming the
    failure.
    """
    from carte.runtime.cgroups import open_cgroup

    assert_single_threaded()
    record = state.load_record(state_dir, container_id)
    if state.status_of(state_dir, record) != "running":
        raise Conflict(f'cannot exec in container "{container_id}": it is not running')
    namespace_fds: dict[str, int] = {}
    for kind, name in _PROC_NS_NAMES.items():
        target = f"/proc/{record.pid}/ns/{name}"
        try:
            if os.readlink(target) != os.readlink(f"/proc/self/ns/{name}"):
                namespace_fds[kind] = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
    seccomp_filter = prepare_seccomp(seccomp_profile)
    console = _connect_console(console_socket) if process.terminal else None
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stage_a = os.fork()
    if stage_a == 0:
        parent_end.close()
        _exec_stage_a(
            namespace_fds, stdio, console, process, seccomp_filter, preserve_fds, child_end
        )
    child_end.close()
    if console is not None:
        console.close()
    for fd in namespace_fds.values():
        os.close(fd)
    try:
        open_cgroup(record.cgroups_path).add_process(stage_a)
        _send(parent_end, _Message(kind="go"))
        pid = 0
        failure = ""
        while True:
            message = _receive(parent_end)
            if message is None:
                break
            if message.kind == "pid":
                pid = message.pid
            elif message.kind == "error":
                failure = message.text
    finally:
        parent_end.close()
        os.waitpid(stage_a, 0)
    if failure or not pid:
        if pid:
            _kill_and_reap(pid)
        raise InvalidArgument(
            f'cannot exec in container "{container_id}": {failure or "joining it failed"}'
        )
    return pid


def _exec_stage_a(
    namespace_fds: dict[str, int],
    stdio: Stdio | None,
    console: socket.socket | None,
    process: Process,
    seccomp_filter: PreparedSeccomp | None,
    preserve_fds: int,
    channel: socket.socket,
) -> NoReturn:
    try:
        message = _receive(channel)
        if message is None or message.kind != "go":
            os._exit(1)
        _redirect_stdio(stdio)
        for kind in _PROC_NS_NAMES:
            if kind in namespace_fds:
                sc.setns(namespace_fds.pop(kind), NAMESPACE_FLAGS[kind], path=f"{kind} namespace")
        pid = os.fork()
        if pid == 0:
            try:
                if console is not None:
                    _setup_terminal(console, process)
                channel.close()
            except BaseException as error:
                _report_and_exit(channel, error)
            exec_user_process(process, seccomp_filter, preserve_fds=preserve_fds)
        _send(channel, _Message(kind="pid", pid=pid))
        os._exit(0)
    except BaseException as error:
        _report_and_exit(channel, error)
