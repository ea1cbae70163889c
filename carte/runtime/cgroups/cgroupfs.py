"""Reading and writing cgroup control files, with errors a user can act on.

The kernel answers a bad value with EINVAL/ERANGE/EBUSY on ``write``; those become
`InvalidArgument` naming the file and the value. A control file that does not exist means the
controller is not available there, which becomes `Unavailable`.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from carte.api.errors import Internal, InvalidArgument, Unavailable

_REJECTED = (errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.EOVERFLOW, errno.EPERM)


def write_file(directory: Path, name: str, value: str | int) -> None:
    """Write one value to a control file in one ``write`` call, as the kernel expects.

    Raises `InvalidArgument` when the kernel rejects the value, `Unavailable` when the file does
    not exist (controller missing) and `Internal` for any other error.
    """
    path = directory / name
    text = str(value)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unavailable(
            f"cgroup file {path} does not exist; the controller is not enabled for this cgroup "
            "(check /proc/cgroups and the cgroup mounts)"
        ) from None
    except OSError as error:
        raise Internal(f"cannot open cgroup file {path}: {error.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as error:
        if error.errno in _REJECTED:
            raise InvalidArgument(
                f"cgroup file {path} rejected {text!r}: {error.strerror}; "
                "fix the value in linux.resources"
            ) from None
        raise Internal(f"cannot write {text!r} to cgroup file {path}: {error.strerror}") from None
    finally:
        os.close(fd)


def read_text(directory: Path, name: str) -> str:
    """The stripped contents of a control file; `Unavailable` when it does not exist."""
    path = directory / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise Unavailable(f"cgroup file {path} does not exist") from None
    except OSError as error:
        raise Internal(f"cannot read cgroup file {path}: {error.strerror}") from None


def read_optional_int(directory: Path, name: str) -> int | None:
    """An integer control file; None when the file is missing or says "max" (unlimited)."""
    try:
        text = read_text(directory, name)
    except Unavailable:
        return None
    if text == "max":
        return None
    return int(text)


def read_keyed(directory: Path, name: str) -> dict[str, int]:
    """A flat keyed file ("key value" per line) such as memory.events; empty when missing."""
    try:
        text = read_text(directory, name)
    except Unavailable:
        return {}
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def read_pids(directory: Path) -> list[int]:
    """The process ids in ``cgroup.procs`` of one cgroup (not its children); [] when gone."""
    try:
        text = (directory / "cgroup.procs").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(line) for line in text.split()]


def walk_bottom_up(directory: Path) -> Iterator[Path]:
    """Every cgroup directory under ``directory`` (included), children before their parent."""
    if not directory.is_dir():
        return
    for child in sorted(directory.iterdir()):
        if child.is_dir() and not child.is_symlink():
            yield from walk_bottom_up(child)
    yield directory


def make_directories(root: Path, relative: str) -> list[Path]:
    """Create each level of ``relative`` under ``root``; returns every level, outermost first."""
    levels: list[Path] = []
    current = root
    for part in relative.strip("/").split("/"):
        current = current / part
        try:
            current.mkdir(exist_ok=True)
        except OSError as error:
            raise Internal(f"cannot create cgroup {current}: {error.strerror}") from None
        levels.append(current)
    return levels


def remove_directory(directory: Path) -> None:
    """rmdir one cgroup, retrying briefly while exiting tasks leave it; gone already is fine.

    Raises `Internal` when the cgroup still holds tasks after a few seconds.
    """
    deadline = time.monotonic() + 5.0
    delay = 0.001
    while True:
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise Internal(
                    f"cannot remove cgroup {directory}: {error.strerror}; "
                    "some process in it did not exit"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def wait_until(condition: Callable[[], bool], *, what: str, seconds: float = 5.0) -> None:
    """Poll ``condition`` with a short back-off until it holds; else `Internal` naming ``what``."""
    deadline = time.monotonic() + seconds
    delay = 0.0005
    while not condition():
        if time.monotonic() > deadline:
            raise Internal(f"timed out after {seconds:g} s waiting until {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
