"""Clean-up that runs once per daemon process, however often a handler restarts inside it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def once_per_daemon(owner: Path, clean: Callable[[], None]) -> None:
    """Run `clean` unless this daemon process already did. `owner` holds the pid of the last
    daemon that ran it, written once `clean` returned: if it raises, the next start runs it."""
    pid = str(os.getpid())
    try:
        if owner.read_text() == pid:
            return
    except FileNotFoundError:
        pass
    clean()
    owner.parent.mkdir(parents=True, exist_ok=True)
    owner.write_text(pid)
