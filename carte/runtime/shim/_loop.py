"""The shim monitor's event loop: epoll and a handler per file descriptor.

`select.epoll` directly rather than `selectors`, which costs about 0.7 MB of imports (enum,
collections) in a process whose whole budget is 10 MB. Single-threaded; handlers run one at a
time and must not block.
"""

from __future__ import annotations

import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

READABLE = select.EPOLLIN
WRITABLE = select.EPOLLOUT
CLOSED = select.EPOLLHUP | select.EPOLLERR


class EventLoop:
    """Calls `handler(events)` when its fd is ready for what it was watched for."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}

    def watch(self, fd: int, handler: Callable[[int], None], mask: int = READABLE) -> None:
        self._handlers[fd] = handler
        self._epoll.register(fd, mask)

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd` (fine if it was not watched); call before closing it."""
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def watching(self, fd: int) -> bool:
        return fd in self._handlers

    def set_mask(self, fd: int, mask: int) -> None:
        if fd in self._handlers:
            self._epoll.modify(fd, mask)

    def run_once(self, timeout: float) -> None:
        """Wait up to `timeout` seconds (-1: no limit) and run the handlers of ready fds.

        A handler that raises is a bug in the shim: the traceback goes to stderr (the shim.log
        file) and the loop goes on, because the container's parent must not die of it.
        """
        for fd, events in self._epoll.poll(timeout):
            handler = self._handlers.get(fd)
            if handler is None:
                continue
            try:
                handler(events)
            except Exception:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
