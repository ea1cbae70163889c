"""Work in another network namespace without moving the caller's thread.

unshare(CLONE_NEWNET) and setns(CLONE_NEWNET) change only the calling thread, so such work runs
on a short-lived thread of its own: the namespace move ends with that thread, while what the work
made (a namespace fd, a socket bound in the namespace) stays usable from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def on_own_thread(work: Callable[[], _T], *, name: str) -> _T:
    """Call `work` on a new thread named `name`, wait for it, and return its result.

    An `OSError` raised by `work` is raised again here, in the caller's thread.
    """
    made: list[_T] = []
    failed: list[OSError] = []

    def run() -> None:
        try:
            made.append(work())
        except OSError as error:
            failed.append(error)

    worker = threading.Thread(target=run, name=name)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]
