"""Container directories without a record, left by a daemon killed in the middle of a create.

`create` writes ROOT/containers/<id> (the bundle) before it records the container, so that a
record never names a container that has no bundle; a SIGKILL between the two leaves a
directory that no record names. The containers handler removes those when it starts.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

from carte.handlers.containers._ipc import unmount_shm

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
PROCESS_STARTED = time.time()
"""When this daemon process started (the module is imported once per process)."""


def reap_orphans(containers_dir: Path, known: set[str], log: logging.Logger) -> list[str]:
    """Remove the container directories of `containers_dir` that no record names (`known`
    holds the recorded ids); the ids removed. Only directories last changed before this
    process started: a create of this daemon (while the handler restarts after a crash) has
    written its directory and not yet its record, and keeps it."""
    removed = []
    for entry in sorted(containers_dir.iterdir()):
        if entry.name in known or not _CONTAINER_ID.fullmatch(entry.name):
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        if max(info.st_mtime, info.st_ctime) >= PROCESS_STARTED:
            continue
        unmount_shm(entry)
        shutil.rmtree(entry, ignore_errors=True)
        log.warning("removed container directory %s: no container record names it", entry.name)
        removed.append(entry.name)
    return removed
