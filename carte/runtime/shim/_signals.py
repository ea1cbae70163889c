"""The signal dispositions a process the shim spawns starts with."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def default_dispositions_for_children() -> Iterator[None]:
    """SIGPIPE and SIGXFSZ at their defaults while the block spawns a process, ignored again
    after it: a child inherits our dispositions, and Python ignores those two."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
