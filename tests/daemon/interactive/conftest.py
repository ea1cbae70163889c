"""Fixtures: a real daemon subprocess per test module with the busybox image imported; every
container a test made is removed afterwards and nothing of it may be left on the host (see
support/module_daemon.py)."""

from __future__ import annotations

from support.module_daemon import daemon_fixtures

module_daemon, carte = daemon_fixtures("module_daemon")
