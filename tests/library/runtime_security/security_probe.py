"""Confine a fresh interpreter the way a container child is confined, then try things.

Run as `python security_probe.py REQUEST_JSON`; prints one JSON object mapping each probe to
"ok", an errno name such as "EPERM", or the value it read. The test runner never filters itself:
everything happens in this separate process. REQUEST_JSON keys:
  uid            switch to this uid/gid (with prepare_for_setuid / apply_after_setuid)
  capabilities   a LinuxCapabilities object to apply
  reapply        another one to apply afterwards; its error goes to results["reapply_error"]
  no_new_privs   set PR_SET_NO_NEW_PRIVS (default true)
  seccomp        "default", a profile file path, or null for none
  probes         names from PROBES, run in order
  scratch        a directory the probes may write in
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from carte.runtime import capabilities, seccomp

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_SIGCHLD = 17
_SYS_CLONE = 56
_SYS_KEYCTL = 250
_SYS_CLONE3 = 435
_SYS_USERFAULTFD = 323
_SYS_LISTMOUNT = 458
_SYS_PERSONALITY = 135
_KEYCTL_GET_KEYRING_ID = 0
_KEY_SPEC_SESSION_KEYRING = -3


def _outcome(result: int) -> str:
    if result >= 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def _attempt(action: Callable[[], object]) -> str:
    try:
        action()
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error.errno))
    return "ok"


def probe_mount(scratch: Path) -> str:
    target = scratch / "mountpoint"
    target.mkdir(exist_ok=True)
    result = _libc.mount(b"carte-probe", str(target).encode(), b"tmpfs", 0, None)
    if result == 0:
        _libc.umount2(str(target).encode(), 0)
    return _outcome(result)


def probe_unshare_mount_ns(scratch: Path) -> str:
    return _outcome(_libc.unshare(_CLONE_NEWNS))


def probe_keyctl(scratch: Path) -> str:
    return _outcome(
        _libc.syscall(_SYS_KEYCTL, _KEYCTL_GET_KEYRING_ID, _KEY_SPEC_SESSION_KEYRING, 0)
    )


def probe_clone_new_uts(scratch: Path) -> str:
    result = _libc.syscall(_SYS_CLONE, _CLONE_NEWUTS | _SIGCHLD, 0, 0, 0, 0)
    if result == 0:
        os._exit(0)
    if result > 0:
        os.waitpid(result, 0)
    return _outcome(result)


def probe_userfaultfd(scratch: Path) -> str:
    result = _libc.syscall(_SYS_USERFAULTFD, 0)
    if result >= 0:
        os.close(result)
    return _outcome(result)


def probe_listmount(scratch: Path) -> str:
    """listmount(2) (Linux 6.8) is newer than every syscall the default profile names."""
    return _outcome(_libc.syscall(_SYS_LISTMOUNT, 0, 0, 0, 0))


def probe_clone3(scratch: Path) -> str:
    return _outcome(_libc.syscall(_SYS_CLONE3, 0, 0))


def probe_personality_query(scratch: Path) -> str:
    return _outcome(_libc.syscall(_SYS_PERSONALITY, ctypes.c_ulong(0xFFFFFFFF)))


def probe_personality_no_randomize(scratch: Path) -> str:
    return _outcome(_libc.syscall(_SYS_PERSONALITY, ctypes.c_ulong(0x0040000)))


def probe_file_io(scratch: Path) -> str:
    path = scratch / "data.txt"
    path.write_text("hello")
    return "ok" if path.read_text() == "hello" else "mismatch"


def probe_mkdir(scratch: Path) -> str:
    return _attempt(lambda: (scratch / "made").mkdir())


def probe_rmdir(scratch: Path) -> str:
    """Removes the directory "gone", which the test creates first."""
    return _attempt(lambda: (scratch / "gone").rmdir())


def probe_fork(scratch: Path) -> str:
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, status = os.waitpid(child, 0)
    return "ok" if os.waitstatus_to_exitcode(status) == 7 else f"status {status}"


def probe_exec_busybox(scratch: Path) -> str:
    done = subprocess.run(["/bin/busybox", "echo", "hi"], capture_output=True, check=False)
    return "ok" if done.stdout == b"hi\n" else f"exit {done.returncode}"


def probe_sockets(scratch: Path) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                return "ok" if accepted.recv(4) == b"ping" else "mismatch"


def probe_vsock(scratch: Path) -> str:
    return _attempt(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close())


def probe_status(scratch: Path) -> dict[str, str]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Seccomp", "NoNewPrivs"):
            fields[key] = value.strip()
    return fields


def probe_capabilities(scratch: Path) -> dict[str, list[str]]:
    return msgspec.to_builtins(capabilities.current_capabilities())  # type: ignore[no-any-return]


def probe_chown(scratch: Path) -> str:
    path = scratch / "owned.txt"
    path.touch()
    return _attempt(lambda: os.chown(path, 1234, 1234))


def probe_exec_capabilities(scratch: Path) -> dict[str, str]:
    """The capability masks of a program exec'd from here, as /proc/self/status shows them."""
    done = subprocess.run(
        ["/bin/busybox", "cat", "/proc/self/status"], capture_output=True, text=True, check=True
    )
    return {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in done.stdout.splitlines())
        if key.startswith("Cap")
    }


def probe_ids(scratch: Path) -> list[int]:
    return [os.getuid(), os.geteuid(), os.getgid()]


PROBES: dict[str, Callable[[Path], object]] = {
    name.removeprefix("probe_"): function
    for name, function in dict(globals()).items()
    if name.startswith("probe_")
}


def main() -> None:
    request = json.loads(sys.argv[1])
    scratch = Path(request.get("scratch") or "/tmp")
    caps = None
    if request.get("capabilities") is not None:
        caps = msgspec.convert(request["capabilities"], capabilities.LinuxCapabilities)
    uid = request.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        capabilities.prepare_for_setuid()
        os.setresuid(uid, uid, uid)
    if caps is not None:
        capabilities.apply_after_setuid(caps)
    reapply_error = ""
    if request.get("reapply") is not None:
        try:
            capabilities.apply(msgspec.convert(request["reapply"], capabilities.LinuxCapabilities))
        except OSError as error:
            reapply_error = str(error)
    if request.get("no_new_privs", True):
        _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    profile_source = request.get("seccomp")
    if profile_source == "default":
        held = caps.bounding if caps is not None else capabilities.DEFAULT_CAPABILITIES
        seccomp.install(seccomp.default_profile(held))
    elif profile_source is not None:
        seccomp.install(seccomp.load_profile(profile_source))
    results = {name: PROBES[name](scratch) for name in request["probes"]}
    if request.get("reapply") is not None:
        results["reapply_error"] = reapply_error
    print(json.dumps(results))


if __name__ == "__main__":
    main()
