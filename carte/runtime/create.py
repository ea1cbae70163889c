"""Create a container: fork its pid 1 with every namespace, cgroup and mount in place, parked
until `start`.

`spawn` runs in THE CALLING process, which must be single-threaded (the OCI CLI or the shim,
both freshly exec'd). The caller switches the pid namespace its children get (unshare or setns
of CLONE_NEWPID), forks the container's pid 1 straight into it, and switches back at once, so
its own later children stay in its pid namespace. Pid 1 enters the cgroup itself, joins
namespaces given by path, unshares the rest (mount, uts, ipc, net, cgroup),
builds the root filesystem, pivots, sets the hostname, says "ready", then blocks opening
exec.fifo until `start` opens it for reading; then it execs the user process (or, with the
run.carte.init annotation, stays as Carte's init and forks it).

With a user namespace the pid namespace must belong to it, so an intermediate stage A
unshares the user namespace (the caller writes its id maps), then the pid namespace and the
rest, forks pid 1 and exits; pid 1 is re-parented to the caller, a child subreaper.

Either way pid 1 is the caller's child and can be `waitpid`ed. Errors in the children come back
over the channel as one line; a failed create removes the cgroup and the state directory, and
the mounts, which only ever exist in the container's mount namespace, vanish with it.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, NoReturn

import msgspec

from carte.api.errors import Conflict, Internal, InvalidArgument
from carte.runtime import rootfs, state
from carte.runtime import syscalls as sc
from carte.runtime.cgroups.devices import default_devices
from carte.runtime.cgroups.resources import LinuxResources
from carte.runtime.channel import Message, channel_pair, receive, report_and_exit, send
from carte.runtime.hooks import HookFailed, run_hooks, run_hooks_warning
from carte.runtime.process import (
    PreparedSeccomp,
    exec_restricted,
    exec_user_process,
    prepare_seccomp,
    restrict_process,
)
from carte.runtime.proctitle import set_process_title
from carte.runtime.spec import INIT_ANNOTATION, Hooks, LinuxIDMapping, Spec, validate_spec
from carte.runtime.state import EXEC_FIFO, ContainerRecord, OCIState
from carte.runtime.terminal import connect_console, setup_terminal

__all__ = [
    "NAMESPACE_FLAGS",
    "PROC_NS_NAMES",
    "Spawned",
    "Stdio",
    "assert_single_threaded",
    "cgroups_path_of",
    "kill_and_reap",
    "redirect_stdio",
    "spawn",
    "with_standard_devices",
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
# /proc/PID/ns/<name> of each spec namespace type, in join order: user first, mount last.
PROC_NS_NAMES = {
    "user": "user",
    "ipc": "ipc",
    "uts": "uts",
    "network": "net",
    "pid": "pid",
    "cgroup": "cgroup",
    "mount": "mnt",
}
Stdio = tuple[int, int, int]
RunInit = Callable[[Callable[[], int]], NoReturn]


class Spawned(msgspec.Struct, kw_only=True):
    """A created container: `pid` is its pid 1 as the host sees it (a child of the caller)."""

    id: str
    pid: int
    state_dir: str
    cgroups_path: str


class _Setup(NamedTuple):
    """Everything the forked stages need, fixed before the first fork."""

    spec: Spec
    bundle: str
    container_id: str
    fifo: int
    stdio: Stdio | None
    console: socket.socket | None
    preserve_fds: int
    seccomp_filter: PreparedSeccomp | None
    cgroup_dirs: dict[str, str]
    namespace_fds: dict[str, int]


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


def cgroups_path_of(spec: Spec, container_id: str) -> str:
    """The container's cgroup path: the spec's, or /carte/<id> when it gives none."""
    return spec.linux.cgroups_path or f"/carte/{container_id}"


def with_standard_devices(resources: LinuxResources | None) -> LinuxResources:
    """The spec's resources with the standard devices (null, zero, tty, ptmx, pts, ...)
    allowed after its own device rules, as runc does: engines such as podman write only
    "deny all" and rely on the runtime for these."""
    resources = resources if resources is not None else LinuxResources()
    standard = [rule for rule in default_devices() if rule.allow]
    return msgspec.structs.replace(resources, devices=[*resources.devices, *standard])


class _HookAbort(InvalidArgument):
    """A prestart, createRuntime or createContainer hook failed: the lifecycle goes on at
    delete, so the poststop hooks still run."""


def hook_state(spec: Spec, bundle: str, container_id: str, status: str, pid: int) -> OCIState:
    """The state document a hook of `spec` gets on stdin."""
    return OCIState(
        oci_version=spec.oci_version,
        id=container_id,
        status=status,
        pid=pid,
        bundle=bundle,
        annotations=spec.annotations,
    )


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

    `stdio` (three fds) becomes the container's 0, 1, 2; None passes the caller's own. Raises
    `Conflict` if the id exists, `InvalidArgument` for a spec the kernel or this runtime
    refuses (one line naming the setting), `Internal` otherwise; after a failure nothing of the
    container is left (process, cgroup, state directory; its mounts died with its namespace).
    """
    from carte.runtime.cgroups import open_cgroup

    assert_single_threaded()
    validate_spec(spec)
    assert spec.process is not None
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
        setup = _Setup(
            spec=spec,
            bundle=str(bundle),
            container_id=container_id,
            # Opened as the host's root: a user-namespaced child could not reach the state dir.
            fifo=os.open(directory / EXEC_FIFO, os.O_PATH | os.O_CLOEXEC),
            stdio=stdio,
            console=connect_console(console_socket) if spec.process.terminal else None,
            preserve_fds=preserve_fds,
            seccomp_filter=prepare_seccomp(spec.linux.seccomp),
            cgroup_dirs={_hierarchy_name(path): str(path) for path in cgroup.paths().values()},
            namespace_fds=_open_namespace_paths(spec),
        )
        try:
            pid = _fork_container(setup, cgroup.add_process)
        finally:
            _close_parent_copies(setup)
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
                created=datetime.datetime.now(datetime.UTC).isoformat(),
                annotations=spec.annotations,
                init=spec.annotations.get(INIT_ANNOTATION) == "true",
                hooks=_later_hooks(spec.hooks),
            ),
        )
    except BaseException as error:
        if pid:
            kill_and_reap(pid)
        try:
            if cgroup is not None:
                cgroup.destroy()
        finally:
            state.remove_container_dir(state_dir, container_id)
        if isinstance(error, _HookAbort) and spec.hooks is not None:
            stopped = hook_state(spec, str(bundle), container_id, "stopped", 0)
            run_hooks_warning("poststop", spec.hooks.poststop, stopped)
        raise
    return Spawned(id=container_id, pid=pid, state_dir=str(directory), cgroups_path=cgroups_path)


def _later_hooks(hooks: Hooks | None) -> Hooks | None:
    """The hooks `start` and `delete` run, kept in the record."""
    if hooks is None or not (hooks.poststart or hooks.poststop):
        return None
    return Hooks(poststart=hooks.poststart, poststop=hooks.poststop)


def _hierarchy_name(path: Path) -> str:
    """The directory under /sys/fs/cgroup a cgroup lives in ("" on a unified-only host)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return ""
    parts = path.parts
    return parts[4] if len(parts) > 4 and parts[1:4] == ("sys", "fs", "cgroup") else str(path)


def _close_parent_copies(setup: _Setup) -> None:
    os.close(setup.fifo)
    if setup.console is not None:
        setup.console.close()
    for fd in setup.namespace_fds.values():
        os.close(fd)


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


def kill_and_reap(pid: int) -> None:
    """SIGKILL a child of ours and reap it; gone already is fine."""
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _fork_container(setup: _Setup, add_to_cgroup: Callable[[int], None]) -> int:
    """Fork the container's pid 1 and drive the create handshake; return its pid (our child).

    Without a user namespace the caller itself switches the pid namespace its children get,
    forks pid 1 straight into it and switches back, so its own later children are unaffected.
    A user namespace must own the pid namespace, so then an intermediate stage A creates both
    and forks pid 1 (re-parented to us, a subreaper, when A exits).
    """
    sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
    parent_end, child_end = channel_pair()
    try:
        if any(ns.type == "user" for ns in setup.spec.linux.namespaces):
            stage_a = os.fork()
            if stage_a == 0:
                parent_end.close()
                _stage_a(setup, child_end)
            child_end.close()
            return _drive_handshake(setup, stage_a, parent_end, add_to_cgroup, direct=False)
        with _children_in_container_pid_namespace(setup):
            pid_one = os.fork()
            if pid_one == 0:
                parent_end.close()
                _direct_pid_one(setup, child_end, add_to_cgroup)
        child_end.close()
        return _drive_handshake(setup, pid_one, parent_end, add_to_cgroup, direct=True)
    finally:
        parent_end.close()
        child_end.close()


@contextmanager
def _children_in_container_pid_namespace(setup: _Setup) -> Iterator[None]:
    """While inside, our forks land in the container's (new or joined) pid namespace."""
    wanted = {ns.type for ns in setup.spec.linux.namespaces if not ns.path}
    if "pid" not in wanted and "pid" not in setup.namespace_fds:
        yield
        return
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if "pid" in setup.namespace_fds:
            sc.setns(setup.namespace_fds["pid"], sc.CLONE_NEWPID, path="pid namespace")
        else:
            sc.unshare(sc.CLONE_NEWPID)
        try:
            yield
        finally:
            sc.setns(own, sc.CLONE_NEWPID, path="/proc/self/ns/pid")
    finally:
        os.close(own)


def _drive_handshake(
    setup: _Setup,
    child: int,
    channel: socket.socket,
    add_to_cgroup: Callable[[int], None],
    *,
    direct: bool,
) -> int:
    """Serve the child's requests until it is ready. `direct`: the child is pid 1 itself (it
    enters the cgroup on its own); otherwise it is stage A, which we put in the cgroup and let
    go, and which reports pid 1 and exits."""
    container_pid = child if direct else 0
    failure = ""
    hook_failed = False
    try:
        if not direct:
            add_to_cgroup(child)
            send(channel, Message(kind="go"))
        while True:
            message = receive(channel)
            if message is None:
                failure = failure or "its first process exited during set-up"
                break
            if message.kind == "userns":
                _write_id_maps(setup.spec, child)
                send(channel, Message(kind="mapped"))
            elif message.kind == "pid":
                container_pid = message.pid
            elif message.kind == "hooks":
                try:
                    _run_runtime_hooks(setup, container_pid)
                except HookFailed as hook_failure:
                    failure, hook_failed = str(hook_failure), True
                    break
                send(channel, Message(kind="hooked"))
            elif message.kind in ("error", "hook-error"):
                failure = message.text
                hook_failed = message.kind == "hook-error"
                break
            elif message.kind == "ready":
                failure = ""
                break
    except BaseException:
        for pid in {child, container_pid} - {0}:
            kill_and_reap(pid)
        raise
    if not direct:
        os.waitpid(child, 0)
    if failure:
        if container_pid:
            kill_and_reap(container_pid)
        error = _HookAbort if hook_failed else InvalidArgument
        raise error(f'cannot create container "{setup.container_id}": {failure}')
    return container_pid


def _run_runtime_hooks(setup: _Setup, container_pid: int) -> None:
    """prestart then createRuntime hooks, in our (the runtime's) namespaces; pid as we see it.
    Raises `HookFailed`."""
    hooks = setup.spec.hooks
    assert hooks is not None
    creating = hook_state(setup.spec, setup.bundle, setup.container_id, "creating", container_pid)
    run_hooks("prestart", hooks.prestart, creating)
    run_hooks("createRuntime", hooks.create_runtime, creating)


def _write_id_maps(spec: Spec, pid: int) -> None:
    for name, mappings in (
        ("uid_map", spec.linux.uid_mappings),
        ("gid_map", spec.linux.gid_mappings),
    ):
        lines = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
        if lines:
            with open(f"/proc/{pid}/{name}", "w") as id_map:
                id_map.write(lines)


def redirect_stdio(stdio: Stdio | None) -> None:
    """Make `stdio` fds 0, 1 and 2 (safe when they overlap); None leaves them alone."""
    if stdio is None:
        return
    high = [os.dup(fd) for fd in stdio]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
        os.close(fd)


def _stage_a(setup: _Setup, channel: socket.socket) -> NoReturn:
    spec = setup.spec
    namespace_fds = dict(setup.namespace_fds)
    try:
        message = receive(channel)
        if message is None or message.kind != "go":
            os._exit(1)
        redirect_stdio(setup.stdio)
        wanted = {ns.type for ns in spec.linux.namespaces if not ns.path}
        if "user" in namespace_fds:
            sc.setns(namespace_fds.pop("user"), sc.CLONE_NEWUSER, path="user namespace")
        elif "user" in wanted:
            sc.unshare(sc.CLONE_NEWUSER)
            send(channel, Message(kind="userns"))
            reply = receive(channel)
            if reply is None or reply.kind != "mapped":
                os._exit(1)
        if any(ns.type == "user" for ns in spec.linux.namespaces):
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        for kind in PROC_NS_NAMES:
            if kind in namespace_fds:
                sc.setns(namespace_fds.pop(kind), NAMESPACE_FLAGS[kind], path=f"{kind} namespace")
        flags = 0
        for kind in wanted - {"user"}:
            flags |= NAMESPACE_FLAGS[kind]
        sc.unshare(flags)
        container_pid = os.fork()
        if container_pid == 0:
            _stage_b(setup, channel, new_uts="uts" in wanted)
        send(channel, Message(kind="pid", pid=container_pid))
        os._exit(0)
    except BaseException as error:
        report_and_exit(channel, error)


def _direct_pid_one(
    setup: _Setup, channel: socket.socket, add_to_cgroup: Callable[[int], None]
) -> NoReturn:
    """The container's pid 1 forked straight into its pid namespace: enter the cgroup (before
    the cgroup namespace, whose root it becomes), join and create the other namespaces, then
    set up. No round trip to the caller: we are still root in its namespaces."""
    spec = setup.spec
    try:
        add_to_cgroup(os.getpid())
        redirect_stdio(setup.stdio)
        for kind in PROC_NS_NAMES:
            if kind in setup.namespace_fds and kind != "pid":
                sc.setns(setup.namespace_fds[kind], NAMESPACE_FLAGS[kind], path=f"{kind} namespace")
        wanted = {ns.type for ns in spec.linux.namespaces if not ns.path}
        flags = 0
        for kind in wanted - {"pid", "user"}:
            flags |= NAMESPACE_FLAGS[kind]
        sc.unshare(flags)
    except BaseException as error:
        report_and_exit(channel, error)
    _stage_b(setup, channel, new_uts="uts" in wanted)


def _stage_b(setup: _Setup, channel: socket.socket, *, new_uts: bool) -> NoReturn:
    spec = setup.spec
    process = spec.process
    assert process is not None
    try:
        try:
            sc.join_session_keyring(f"_ses.{setup.container_id}"[:64])
        except OSError:
            pass  # keyrings may be unavailable (EPERM under some seccomp/ns setups); not fatal
        run_init = _load_init() if spec.annotations.get(INIT_ANNOTATION) == "true" else None
        in_user_namespace = any(ns.type == "user" for ns in spec.linux.namespaces)
        own_mounts = any(ns.type == "mount" for ns in spec.linux.namespaces)
        root_fd = fd_dir = -1
        if own_mounts:
            root_fd = rootfs.prepare_rootfs(
                spec,
                setup.bundle,
                in_user_namespace=in_user_namespace,
                cgroup_dirs=setup.cgroup_dirs,
            )
        _creation_hooks(setup, channel)
        if own_mounts:
            rootfs.pivot_into(root_fd)
            os.close(root_fd)
        else:
            # Sharing the host's mount table: pivot_root would move every process's root. Our
            # fd directory stays reachable for reopening exec.fifo (no /proc inside).
            fd_dir = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            os.chroot(rootfs.root_path(spec, setup.bundle))
            os.chdir("/")
        if new_uts:
            if spec.hostname:
                sc.sethostname(spec.hostname)
            if spec.domainname:
                sc.setdomainname(spec.domainname)
        if own_mounts:
            rootfs.finish_rootfs(spec)
        if setup.console is not None:
            setup_terminal(setup.console, process.console_size)
        send(channel, Message(kind="ready"))
        channel.close()
    except BaseException as error:
        report_and_exit(channel, error)
    try:
        _wait_for_start(setup, fd_dir)
        if run_init is not None:
            _run_as_init(run_init, setup)
        exec_user_process(process, setup.seccomp_filter, preserve_fds=setup.preserve_fds)
    except BaseException as error:
        # Never let an exception unwind into the caller's code in this forked child.
        print(f"carte: cannot start the container process: {error}", file=sys.stderr, flush=True)
        os._exit(1)


def _load_init() -> RunInit:
    """Import Carte's init now: after pivot_root the host's Python files are out of reach."""
    from carte.runtime.init import run_init

    return run_init


def _run_as_init(run_init: RunInit, setup: _Setup) -> NoReturn:
    """Stay pid 1 as Carte's init: show as `carte-init` (not the shim's interpreter and host
    paths), take the workload's user, capabilities, no_new_privs and seccomp filter (as
    Docker's init does, being exec'd as the container process), then fork the workload."""
    process = setup.spec.process
    assert process is not None
    # Our /proc/self/mem is ours to write only while we are dumpable (in a user namespace).
    sc.prctl(sc.PR_SET_DUMPABLE, 1)
    try:
        set_process_title("carte-init")
    except OSError:
        pass  # no /proc in the root (no mount namespace): only the name is at stake
    finally:
        # The workload holds the same capabilities as we will: undumpable, our /proc/1/exe
        # (the host's interpreter), mem and environ stay out of its reach.
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
    restrict_process(process, setup.seccomp_filter)

    def spawn_user_process() -> int:
        child = os.fork()
        if child == 0:
            exec_restricted(process, preserve_fds=setup.preserve_fds)
        return child

    run_init(spawn_user_process)


def _creation_hooks(setup: _Setup, channel: socket.socket) -> None:
    """Before pivot_root, mounts in place: the parent runs prestart and createRuntime hooks,
    then we run createContainer hooks here, in the container's namespaces (pid as we see it).
    A failing hook ends this process after telling the parent (a "hook-error")."""
    hooks = setup.spec.hooks
    if hooks is None:
        return
    if hooks.prestart or hooks.create_runtime:
        send(channel, Message(kind="hooks"))
        reply = receive(channel)
        if reply is None or reply.kind != "hooked":
            os._exit(1)
    if hooks.create_container:
        creating = hook_state(setup.spec, setup.bundle, setup.container_id, "creating", os.getpid())
        try:
            run_hooks("createContainer", hooks.create_container, creating)
        except HookFailed as failure:
            try:
                send(channel, Message(kind="hook-error", text=str(failure)))
            finally:
                os._exit(1)


def _wait_for_start(setup: _Setup, fd_dir: int) -> None:
    """Block until `start` opens the exec fifo for reading, run the startContainer hooks, then
    tell `start` we are going ("0"), or why not ("1" and one line; we then exit).

    `fd_dir`: an fd of our /proc/self/fd when the root has no /proc of ours, else -1. Raises
    `OSError` if the fifo cannot be opened (the caller exits).
    """
    if fd_dir >= 0:
        writer = os.open(str(setup.fifo), os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd_dir)
        os.close(fd_dir)
    else:
        writer = os.open(f"/proc/self/fd/{setup.fifo}", os.O_WRONLY | os.O_CLOEXEC)
    os.close(setup.fifo)
    hooks = setup.spec.hooks
    if hooks is not None and hooks.start_container:
        created = hook_state(setup.spec, setup.bundle, setup.container_id, "created", os.getpid())
        try:
            run_hooks("startContainer", hooks.start_container, created)
        except HookFailed as failure:
            os.write(writer, b"1" + str(failure).encode()[:500])
            os._exit(1)
    os.write(writer, b"0")
    os.close(writer)
