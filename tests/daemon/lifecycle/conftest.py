"""Fixtures: a real daemon subprocess per test module, with short restart backoff values in its
carte.yaml and the busybox image imported; every container removed after each test and
nothing left on the host (even when a test killed the daemon); see support/module_daemon.py.

`carte` is the module's daemon (started again if a test killed it)."""

from __future__ import annotations

from support.module_daemon import daemon_fixtures

# Restarts after 0.3 s, 0.6 s, 1.2 s, 2.4 s (cap); a run of 5 s resets the backoff.
CONFIG = "containers:\n  restart:\n    base: 0.3\n    cap: 2.4\n    reset: 5.0\n"

lifecycle_daemon, carte = daemon_fixtures("lifecycle_daemon", config=CONFIG)
