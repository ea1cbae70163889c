"""`carte top`: Docker's process table (UID PID PPID C STIME TTY TIME CMD) for a set of pids,
read from the host's /proc (pids are the host's, as `docker top` shows them).

Blocking file reads: call it in a worker thread. A process that exits while it is read is
left out, not an error.
"""

from __future__ import annotations

import os
import pwd
import time

TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
_TICKS = os.sysconf("SC_CLK_TCK")


def process_table(pids: list[int]) -> list[list[str]]:
    """One row per pid still alive, in pid order."""
    boot = _boot_time()
    rows = []
    for pid in sorted(pids):
        try:
            rows.append(_row(pid, boot))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return rows


def _row(pid: int, boot: float) -> list[str]:
    with open(f"/proc/{pid}/stat", "rb") as stat_file:
        stat = stat_file.read().decode(errors="replace")
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ppid, tty_nr = int(fields[1]), int(fields[4])
    cpu_ticks = int(fields[11]) + int(fields[12])
    started = boot + int(fields[19]) / _TICKS
    uid = os.stat(f"/proc/{pid}").st_uid
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline_file:
        argv = [part.decode(errors="replace") for part in cmdline_file.read().split(b"\0") if part]
    elapsed = max(time.time() - started, 1e-6)
    cpu_seconds = cpu_ticks / _TICKS
    return [
        _user_name(uid),
        str(pid),
        str(ppid),
        str(int(cpu_seconds * 100 / elapsed)),
        _start_time(started),
        _tty_name(tty_nr),
        _cpu_time(cpu_seconds),
        " ".join(argv) if argv else f"[{comm}]",
    ]


def _boot_time() -> float:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _start_time(started: float) -> str:
    moment = time.localtime(started)
    if time.time() - started < 24 * 3600:
        return time.strftime("%H:%M", moment)
    return time.strftime("%b%d", moment)


def _tty_name(tty_nr: int) -> str:
    if tty_nr == 0:
        return "?"
    major, minor = os.major(tty_nr), os.minor(tty_nr)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    return f"tty{minor}" if major == 4 else "?"


def _cpu_time(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
