"""Carte's minimal PID 1 (`docker run --init` semantics): forward signals, reap zombies.

`run_init(spawn_child)` runs in the container's pid-1 process after pivot_root, so every module
it needs is imported here, at import time; nothing is imported once it runs. It blocks the
signals it forwards, asks `spawn_child` for the user process (an `os.fork` inside it gets its
own process group, the terminal's foreground if stdin is one, and the original signal mask back,
through an at-fork hook), then waits for signals: each forwardable one is sent on to the child,
SIGCHLD reaps every exited process. When the child exits, init exits with its status:
the exit code, or 128+N when signal N killed it, as Docker's init does.

The hidden mode `carte init -- CMD ARGS` does the same for a plain exec'd command; outside a
container it makes itself a child subreaper so orphans of CMD are reaped by it too.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

# Signals the kernel raises for a fault of the thread itself, or that only make sense for the
# process they hit; tini leaves the same ones alone.
_NOT_FORWARDED = frozenset(
    {
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGABRT,
        signal.SIGTRAP,
        signal.SIGSYS,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGCHLD,
    }
)
FORWARDED_SIGNALS: frozenset[int] = frozenset(
    int(sig) for sig in signal.valid_signals() if sig not in _NOT_FORWARDED
)
_WAITED = FORWARDED_SIGNALS | {int(signal.SIGCHLD)}

_saved_mask: set[int] | None = None


def exit_status(wait_status: int) -> int:
    """The shell-style status of a `waitpid` status: the exit code, or 128+signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def _prepare_forked_child() -> None:
    """At-fork hook for the user process: own process group, terminal foreground, old mask."""
    if _saved_mask is None:
        return
    try:
        os.setpgid(0, 0)
        if os.isatty(0):
            # A background group taking the terminal gets SIGTTOU unless it is blocked.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
            os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, _saved_mask)


def _reap_all(child: int) -> int | None:
    """Reap every exited process; return the child's wait status if it was among them."""
    child_status = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return child_status
        if pid == 0:
            return child_status
        if pid == child:
            child_status = status


def run_init(spawn_child: Callable[[], int]) -> NoReturn:
    """Be PID 1 for the process `spawn_child` starts; exit with its status.

    `spawn_child` must start the user process and return its pid; it is called with every
    forwarded signal blocked. If it forks with `os.fork`, the child gets the caller's signal
    mask back automatically; a child made another way (raw clone) must restore it itself.
    If `spawn_child` raises, init prints one line to stderr and exits 127. Never returns.
    """
    global _saved_mask
    _saved_mask = set(signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED))
    os.register_at_fork(after_in_child=_prepare_forked_child)
    try:
        child = spawn_child()
    except Exception as exc:
        print(f"carte init: cannot start the process: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    while True:
        info = signal.sigwaitinfo(_WAITED)
        if info.si_signo == signal.SIGCHLD:
            status = _reap_all(child)
            if status is not None:
                # Orphans that already exited are reaped above; later ones die with the pid ns.
                _reap_all(child)
                os._exit(exit_status(status))
            continue
        try:
            os.kill(child, info.si_signo)
        except ProcessLookupError:
            pass


def _become_subreaper() -> None:
    """Adopt orphans of the command when not PID 1 (outside a container); best effort."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def main() -> None:
    """`carte init [--] CMD [ARGS...]`: run CMD under Carte's init; exit with its status."""
    argv = sys.argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("carte init: no command given; usage: carte init -- CMD [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    if os.getpid() != 1:
        _become_subreaper()

    def spawn_command() -> int:
        pid = os.fork()
        if pid:
            return pid
        try:
            os.execvp(argv[0], argv)
        except OSError as exc:
            print(f"carte init: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)

    sys.stdout.flush()
    run_init(spawn_command)
