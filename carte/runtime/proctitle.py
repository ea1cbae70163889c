"""Give a running Python process the name `ps`, `top` and /proc/PID/cmdline show.

Carte's long-lived helpers (the container's init, the shim) are Python processes started with
the interpreter's path, host paths and options on their command line. `set_process_title`
overwrites the process's original argv area in place through /proc/self/mem, as
setproctitle(3) does: the title and a NUL, then filler whose last byte is not a NUL. Seeing
that last byte, the kernel reads /proc/PID/cmdline as the string up to the first NUL, so
cmdline is exactly the title; nothing of the old text stays. /proc/PID/comm is set too.

Only `os` is used (no ctypes: the shim's monitor must stay small), and nothing is imported
when it runs, so init can call it after pivot_root. It needs no privilege and works in a user
namespace. Python keeps its own copy of argv, so nothing in the process reads the area again.
"""

from __future__ import annotations

import os

__all__ = ["set_process_title"]


def set_process_title(title: str) -> None:
    """Make /proc/self/cmdline read `title` followed by one NUL (a title with spaces is one
    argument, as with setproctitle), and /proc/self/comm its first word (up to 15 bytes).

    A title longer than the original command line is cut to fit. Raises `OSError` if /proc is
    not reachable; the process then keeps its old command line.
    """
    with open("/proc/self/stat", "rb") as stat:
        raw = stat.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
    size = end - start
    if size < 2:
        return
    text = title.encode()[: size - 2] + b"\0"
    memory = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
    try:
        os.pwrite(memory, text.ljust(size, b" "), start)
    finally:
        os.close(memory)
    with open("/proc/self/comm", "wb") as comm:
        comm.write(title.split(" ", 1)[0].encode()[:15])
