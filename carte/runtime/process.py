"""Turn the calling process into the spec's user process and exec it.

Runs inside the container after its root is in place. Order (runc's): cwd, rlimits, oom score,
umask; groups, gid, uid (keeping capabilities across setuid); capabilities; no_new_privs;
seccomp last, so the filter does not have to allow the set-up syscalls; close every fd but stdio
and the preserved ones; exec. Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so
then (as runc does) seccomp goes in before the user switch and the capability drop, and the
profile must allow those syscalls (Docker's does). Never returns: a missing executable exits
127 with Docker's message, any other failure prints one line to stderr and exits 126 or 127.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from typing import NamedTuple, NoReturn

from carte.runtime import capabilities, seccomp
from carte.runtime import syscalls as sc
from carte.runtime.paths import opened_in_root
from carte.runtime.seccomp import SECCOMP_FLAGS, LinuxSeccomp, load_program
from carte.runtime.spec import Process

__all__ = [
    "environment",
    "exec_restricted",
    "exec_user_process",
    "find_executable",
    "prepare_process",
    "restrict_process",
]

EXIT_NOT_FOUND = 127
EXIT_CANNOT_RUN = 126
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


class PreparedSeccomp(NamedTuple):
    """A seccomp filter compiled to BPF while the host's libseccomp is still reachable."""

    program: bytes
    flags: int


def prepare_seccomp(profile: LinuxSeccomp | None) -> PreparedSeccomp | None:
    """Compile `profile` (or take it from the program cache) for loading later, after
    pivot_root or setns. Raises `InvalidArgument` for a bad profile, `Unavailable` without
    libseccomp."""
    if profile is None:
        return None
    seccomp.validate(profile)
    program = seccomp.cached_program(profile)
    return PreparedSeccomp(program, sum(SECCOMP_FLAGS[flag] for flag in set(profile.flags)))


def environment(process: Process) -> dict[str, str]:
    """The process's environment as a dict (the last definition of a name wins)."""
    env: dict[str, str] = {}
    for item in process.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def find_executable(name: str, env: dict[str, str]) -> str | None:
    """Resolve `name` like execvp would, with PATH taken from the container's environment."""
    if "/" in name:
        return name if os.path.exists(name) else None
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def prepare_process(process: Process) -> None:
    """The steps that still need root: cwd (created if missing), rlimits, oom score, umask.

    Raises `OSError` / `ValueError` naming the setting.
    """
    root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with opened_in_root(root_fd, process.cwd, create="dir"):
            pass
    finally:
        os.close(root_fd)
    os.chdir(process.cwd)  # after pivot_root, symlinks on the way resolve inside the root
    for limit in process.rlimits:
        if limit.type not in _RLIMITS:
            raise ValueError(f'process.rlimits: unknown type "{limit.type}"')
        resource.setrlimit(_RLIMITS[limit.type], (_rlim(limit.soft), _rlim(limit.hard)))
    if process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write(str(process.oom_score_adj))
    if process.user.umask is not None:
        os.umask(process.user.umask)
    else:
        os.umask(0o022)


def _rlim(value: int) -> int:
    """A uint64 spec limit as Python's setrlimit takes it: values past 2^63-1 (RLIM_INFINITY is
    2^64-1) are unlimited, which Python spells -1."""
    return resource.RLIM_INFINITY if value >= 2**63 else value


def _switch_user(process: Process) -> None:
    user = process.user
    os.setgroups(user.additional_gids)
    os.setresgid(user.gid, user.gid, user.gid)
    if user.uid != 0:
        capabilities.prepare_for_setuid()
    os.setresuid(user.uid, user.uid, user.uid)


def _reset_signals() -> None:
    """Default dispositions and an empty mask for every signal: an ignored signal stays
    ignored across exec, and our own caller may ignore some (Python ignores SIGPIPE and
    SIGXFSZ, a shell's background job SIGINT and SIGQUIT)."""
    for number in signal.valid_signals():
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):
            continue  # signals the C library reserves for itself
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _restrict(process: Process, seccomp_filter: PreparedSeccomp | None) -> PreparedSeccomp | None:
    """cwd, rlimits, oom score, umask, user, capabilities, no_new_privs; a seccomp filter that
    needs no_new_privs unset is loaded first. Returns the filter still to load (last)."""
    prepare_process(process)
    if seccomp_filter is not None and not process.no_new_privileges:
        load_program(seccomp_filter.program, seccomp_filter.flags)
        seccomp_filter = None
    _switch_user(process)
    if process.capabilities is not None:
        capabilities.apply_after_setuid(process.capabilities)
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    return seccomp_filter


def restrict_process(process: Process, seccomp_filter: PreparedSeccomp | None) -> None:
    """Give the calling process every restriction of `process` short of the exec: what
    `exec_user_process` does before it execs, seccomp included. Carte's init calls it before
    forking the workload, so init holds no more than the workload does. Raises `OSError` /
    `ValueError` naming the setting; the process is then partly restricted and must exit."""
    pending = _restrict(process, seccomp_filter)
    caps = process.capabilities
    if process.user.uid != 0 and caps is not None:
        # What execve leaves a non-root process without file capabilities: its ambient set.
        kept = [n for n in caps.ambient if n in caps.permitted and n in caps.inheritable]
        capabilities.apply_after_setuid(
            capabilities.LinuxCapabilities(
                bounding=caps.bounding,
                effective=kept,
                permitted=kept,
                inheritable=caps.inheritable,
                ambient=kept,
            )
        )
    if pending is not None:
        load_program(pending.program, pending.flags)


def exec_restricted(process: Process, *, preserve_fds: int) -> NoReturn:
    """In a child of a process `restrict_process` restricted: exec `process.args` (exit 127
    with Docker's message when the executable is missing, 126/127 on other failures)."""
    try:
        env = environment(process)
        path = _executable_or_exit(process, env)
        _exec(path, process, env, preserve_fds)
    except Exception as error:
        _fail_with(error)


def _executable_or_exit(
    process: Process, env: dict[str, str], not_found: int = EXIT_NOT_FOUND
) -> str:
    name = process.args[0]
    path = find_executable(name, env)
    if path is None:
        print(f'exec: "{name}": executable file not found in $PATH', file=sys.stderr)
        os._exit(not_found)
    return path


def _exec(path: str, process: Process, env: dict[str, str], preserve_fds: int) -> NoReturn:
    os.closerange(3 + preserve_fds, os.sysconf("SC_OPEN_MAX"))
    _reset_signals()
    os.execve(path, process.args, env)


def exec_user_process(
    process: Process,
    seccomp_filter: PreparedSeccomp | None,
    *,
    preserve_fds: int,
    failed: int | None = None,
) -> NoReturn:
    """Become `process` and exec it; see the module docstring for the order and exit codes.
    `failed`, when given, is the exit code of every failure before the exec instead (Docker
    exits an exec that could not start 126, a missing command included)."""
    try:
        env = environment(process)
        if not process.args:
            raise ValueError("process.args is empty; give the command to run")
        pending = _restrict(process, seccomp_filter)
        path = _executable_or_exit(process, env, failed or EXIT_NOT_FOUND)
        if pending is not None:
            load_program(pending.program, pending.flags)
        _exec(path, process, env, preserve_fds)
    except Exception as error:
        _fail_with(error, failed)


def _fail_with(error: Exception, failed: int | None = None) -> NoReturn:
    """Exit as Docker does for `error` before the exec: 127 for a missing file, else 126
    (`failed` for either when given)."""
    if isinstance(error, OSError):
        code = EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_CANNOT_RUN
        _fail(f"{error.strerror or error}", failed or code)
    _fail(str(error), failed or EXIT_CANNOT_RUN)


def _fail(message: str, code: int) -> NoReturn:
    try:
        print(f"carte: cannot start the container process: {message}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)
