"""Carte's default seccomp profile: Docker's default allow-list, grouped by what the calls do.

Everything not listed fails with EPERM. The architecture is checked (x86_64, x86 and x32 on an
amd64 host; any other architecture is killed by libseccomp). Two things are stricter than
Docker: io_uring is not allowed (as in Docker 25+ and containerd), and name_to_handle_at and
process_vm_readv/writev need the capability their sibling calls need (CAP_DAC_READ_SEARCH,
CAP_SYS_PTRACE). Syscall names the running libseccomp does not know are skipped when the profile
is installed, so the newest calls listed here only take effect with a newer libseccomp.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable

from carte.runtime.capabilities import normalize_capability
from carte.runtime.seccomp._profile import (
    LinuxSeccomp,
    LinuxSeccompArg,
    LinuxSyscall,
    native_architectures,
)

__all__ = ["build_default_profile"]

# Allowed for every container, whatever its capabilities.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "processes and threads": (
        "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid",
        "getpid", "getppid", "gettid", "getpgid", "getpgrp", "setpgid", "getsid", "setsid",
        "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "futex", "futex_time64",
        "futex_waitv", "futex_wait", "futex_wake", "futex_requeue", "restart_syscall",
        "get_thread_area", "set_thread_area", "membarrier", "pidfd_open", "pidfd_send_signal",
        "process_mrelease", "prctl", "seccomp", "capget", "capset", "uname", "sysinfo",
        "getcpu", "getrandom",
    ),
    "signals": (
        "kill", "tkill", "tgkill", "pause", "alarm", "sigaltstack", "sigprocmask", "sigreturn",
        "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
        "rt_sigsuspend", "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
        "signalfd", "signalfd4",
    ),
    "files and directories": (
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
        "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek",
        "_llseek", "readahead", "fadvise64", "fadvise64_64", "fallocate", "truncate",
        "truncate64", "ftruncate", "ftruncate64", "fsync", "fdatasync", "sync", "syncfs",
        "sync_file_range", "flock", "copy_file_range", "sendfile", "sendfile64", "splice", "tee",
        "vmsplice", "stat", "stat64", "lstat", "lstat64", "fstat", "fstat64", "fstatat64",
        "newfstatat", "statx", "statfs", "statfs64", "fstatfs", "fstatfs64", "access",
        "faccessat", "faccessat2", "chdir", "fchdir", "getcwd", "getdents", "getdents64",
        "mkdir", "mkdirat", "rmdir", "mknod", "mknodat", "link", "linkat", "symlink",
        "symlinkat", "readlink", "readlinkat", "unlink", "unlinkat", "rename", "renameat",
        "renameat2", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "chown32", "fchown",
        "fchown32", "fchownat", "lchown", "lchown32", "umask", "utime", "utimes", "utimensat",
        "utimensat_time64", "futimesat", "inotify_init", "inotify_init1", "inotify_add_watch",
        "inotify_rm_watch", "fanotify_mark", "cachestat",
    ),
    "extended attributes": (
        "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr",
        "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    ),
    "file descriptors and waiting": (
        "dup", "dup2", "dup3", "fcntl", "fcntl64", "ioctl", "pipe", "pipe2", "eventfd",
        "eventfd2", "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6",
        "pselect6_time64", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
        "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2",
    ),
    "memory": (
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync",
        "mlock", "mlock2", "mlockall", "munlock", "munlockall", "remap_file_pages",
        "memfd_create", "memfd_secret", "pkey_alloc", "pkey_free", "pkey_mprotect",
        "map_shadow_stack", "mseal",
    ),
    "time and timers": (
        "time", "gettimeofday", "clock_gettime", "clock_gettime64", "clock_getres",
        "clock_getres_time64", "clock_nanosleep", "clock_nanosleep_time64", "nanosleep",
        "adjtimex", "clock_adjtime", "clock_adjtime64", "times", "getitimer", "setitimer",
        "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
        "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
        "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
    ),
    "users and groups": (
        "getuid", "getuid32", "geteuid", "geteuid32", "getgid", "getgid32", "getegid",
        "getegid32", "getresuid", "getresuid32", "getresgid", "getresgid32", "getgroups",
        "getgroups32", "setuid", "setuid32", "setgid", "setgid32", "setreuid", "setreuid32",
        "setregid", "setregid32", "setresuid", "setresuid32", "setresgid", "setresgid32",
        "setfsuid", "setfsuid32", "setfsgid", "setfsgid32", "setgroups", "setgroups32",
    ),
    "scheduling and limits": (
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr",
        "sched_setattr", "sched_getparam", "sched_setparam", "sched_getscheduler",
        "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "getpriority", "setpriority",
        "ioprio_get", "ioprio_set", "getrlimit", "ugetrlimit", "setrlimit", "prlimit64",
        "getrusage",
    ),
    "sockets": (
        "socketpair", "socketcall", "bind", "connect", "listen", "accept", "accept4",
        "getsockname", "getpeername", "getsockopt", "setsockopt", "shutdown", "send", "sendto",
        "sendmsg", "sendmmsg", "recv", "recvfrom", "recvmsg", "recvmmsg", "recvmmsg_time64",
    ),
    "System V and POSIX IPC": (
        "ipc", "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl", "semop", "semtimedop",
        "semtimedop_time64", "shmget", "shmctl", "shmat", "shmdt", "mq_open", "mq_unlink",
        "mq_getsetattr", "mq_notify", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
        "mq_timedreceive_time64",
    ),
    "asynchronous I/O": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64",
    ),
    "unprivileged sandboxing": (
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    ),
}  # fmt: skip

# Allowed only while the container's bounding set holds the capability that guards them anyway.
_ALLOWED_WITH_CAPABILITY: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen",
        "fsconfig", "fsmount", "fspick", "unshare", "setns", "clone", "clone3", "sethostname",
        "setdomainname", "quotactl", "quotactl_fd", "fanotify_init", "lookup_dcookie", "syslog",
        "bpf", "perf_event_open",
    ),
    "CAP_SYS_PTRACE": (
        "ptrace", "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
        "process_vm_writev",
    ),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at", "name_to_handle_at"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}  # fmt: skip

# Allowed on one machine architecture only (os.uname().machine).
_ALLOWED_ON_MACHINE: dict[str, tuple[str, ...]] = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "i686": ("modify_ldt",),
    "aarch64": (
        "arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
        "cacheflush", "set_tls",
    ),
    "ppc64le": ("sync_file_range2", "swapcontext"),
    "s390x": ("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"),
    "riscv64": ("riscv_flush_icache",),
}  # fmt: skip

# Since Linux 4.8 ptrace can no longer be used to get around seccomp, so Docker allows it.
_PTRACE_SAFE_SINCE = (4, 8)

# Namespace flags clone(2) may not carry without CAP_SYS_ADMIN.
_CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
# personality(2) personas a container may pick: Linux, Linux32, UNAME26 (alone or with
# Linux32) and 0xffffffff, which only queries the current persona.
_ALLOWED_PERSONAS = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
_AF_VSOCK = 40


def build_default_profile(capabilities: Iterable[str]) -> LinuxSeccomp:
    """The default profile for a container whose bounding set is `capabilities`.

    Raises `InvalidArgument` for an unknown capability name.
    """
    held = {normalize_capability(cap) for cap in capabilities}
    machine = os.uname().machine
    allowed = [name for group in _ALLOWED.values() for name in group]
    allowed += _ALLOWED_ON_MACHINE.get(machine, ())
    for capability, names in _ALLOWED_WITH_CAPABILITY.items():
        if capability in held:
            allowed += names
    if _kernel_version() >= _PTRACE_SAFE_SINCE:
        allowed.append("ptrace")

    rules = [LinuxSyscall(names=sorted(set(allowed)), action="SCMP_ACT_ALLOW")]
    rules.append(_allow_when("socket", index=0, op="SCMP_CMP_NE", value=_AF_VSOCK))
    rules += [
        _allow_when("personality", index=0, op="SCMP_CMP_EQ", value=persona)
        for persona in _ALLOWED_PERSONAS
    ]
    if "CAP_SYS_ADMIN" not in held:
        # clone's flags are argument 0, except on s390 where the stack pointer comes first.
        flags_index = 1 if machine == "s390x" else 0
        rules.append(
            LinuxSyscall(
                names=["clone"],
                action="SCMP_ACT_ALLOW",
                args=[
                    LinuxSeccompArg(
                        index=flags_index,
                        value=_CLONE_NAMESPACE_FLAGS,
                        value_two=0,
                        op="SCMP_CMP_MASKED_EQ",
                    )
                ],
            )
        )
        # clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc use clone.
        rules.append(
            LinuxSyscall(names=["clone3"], action="SCMP_ACT_ERRNO", errno_ret=errno.ENOSYS)
        )
    return LinuxSeccomp(
        default_action="SCMP_ACT_ERRNO",
        default_errno_ret=errno.EPERM,
        architectures=native_architectures(),
        syscalls=rules,
    )


def _allow_when(name: str, *, index: int, op: str, value: int) -> LinuxSyscall:
    return LinuxSyscall(
        names=[name],
        action="SCMP_ACT_ALLOW",
        args=[LinuxSeccompArg(index=index, value=value, op=op)],
    )


def _kernel_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)
