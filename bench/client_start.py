"""Client start-up against a bare interpreter, and the daemon's idle memory.

`carte version` (pip's entry-point script of a non-editable install, as install.sh makes it,
talking to a private daemon) and `python -I -S -c pass` (the interpreter with no site and no
environment: the floor), timed interleaved; then the daemon's RSS once it has been idle a
second (all built-in handlers on).
The PyInstaller build's client is timed by `frozen` (bench/frozen.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.peers import ENV, PYTHON, Peers, rss_mb, timed
from bench.results import Result, interleave, median
from carte.runtime.shim.client import interpreter_command

NAME = "client_start"
DEFAULT_RUNS = 30


def _timer(argv: list[str]) -> Callable[[], float]:
    return lambda: timed(argv, ENV)


def measure(peers: Peers, runs: int) -> list[Result]:
    client = peers.installed_carte()
    host = client[1:]
    commands = {
        "python -I -S -c pass": [PYTHON, "-I", "-S", "-c", "pass"],
        "carte version": [*client, "version"],
        # How the daemon starts shims: no site, no pip script (`import re`); a launcher
        # install.sh could write instead of pip's entry-point script.
        "launcher version": [*interpreter_command(), *host, "version"],
    }
    samples = interleave(
        {name: _timer(argv) for name, argv in commands.items()},
        runs,
        warm=2,
    )
    time.sleep(1.0)  # let the daemon go idle after serving the runs
    idle = rss_mb(peers.carte_pid)
    rows = [
        Result.of_medians(
            NAME,
            "`carte version` (pip install, as install.sh) vs `python -I -S -c pass`",
            samples,
            "carte version",
            "python -I -S -c pass",
            "python -I -S",
            limit=2.0,
            runs=runs,
        ),
        Result(
            NAME,
            "`carte version` through a `python -I -S -c` launcher vs the same floor",
            median(samples["launcher version"]),
            "s",
            other=median(samples["python -I -S -c pass"]),
            other_name="python -I -S",
            limit=2.0,
            runs=runs,
            note="the way the daemon starts shims; not what pip installs",
        ),
        Result(NAME, "daemon idle RSS, all built-in handlers", idle, "MB", limit=50.0),
    ]
    return rows
