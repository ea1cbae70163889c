"""Bring up the loopback interface inside a container's network namespace (Docker's
`--network none` still has a working 127.0.0.1).

The calling thread joins the namespace with setns(2) (which moves only that thread), raises
`lo` with two ioctls and returns to the daemon's namespace. Blocking: run it in a worker thread.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from carte.runtime.syscalls import CLONE_NEWNET, setns

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def loopback_up(netns_path: str) -> None:
    """Set `lo` up in the network namespace at `netns_path`.

    Raises OSError when the namespace is gone or the ioctl is refused; if the thread cannot
    return to its own namespace it raises RuntimeError (the thread must not be reused)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(target, CLONE_NEWNET)
        finally:
            os.close(target)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                request = struct.pack("16sH", b"lo", 0)
                flags = struct.unpack("16sH", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
                fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))
        finally:
            try:
                setns(own, CLONE_NEWNET)
            except OSError as error:
                message = f"cannot return to the daemon's network namespace: {error}"
                raise RuntimeError(message) from error
    finally:
        os.close(own)
